//! [`Socket`]: a ZeroMQ socket with safe defaults, counted traffic and a live registry entry.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::closes::{ClosedConnections, Watchers};
use crate::codec::{Codec, Decode, Encode};
use crate::engine::{self, MonitorItem, RawSocket, TrySend};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::options::SocketOptions;
use crate::registry::{Counters, LinkEvent, PeerSnapshot, Registry, SocketSnapshot, Traffic};
use crate::socket_type::SocketType;

/// How often the registry confirms active links as alive.
const REGISTRY_TICK: Duration = Duration::from_secs(1);

/// A send that could not go out at once.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The queue is at its high-water mark; the message is handed back, not lost.
    #[error("send queue full (high-water mark reached)")]
    Full(Message),
    /// The send failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

/// A ZeroMQ socket: the engine's socket plus zmesh's defaults, counters and
/// registry entry. Speaks ZMTP 3.1 with any libzmq peer.
///
/// Sockets are created on the current tokio runtime. Cloning shares the socket.
///
/// ```no_run
/// # async fn demo() -> zmesh::Result<()> {
/// use zmesh::{Socket, SocketType, SocketOptions};
/// let rep = Socket::new(SocketType::Rep, SocketOptions::default())?;
/// let ep = rep.bind("tcp://127.0.0.1:0").await?;
/// let req = Socket::new(SocketType::Req, SocketOptions::default())?;
/// req.connect(&ep).await?;
/// req.send("ping").await?;
/// let ping = rep.recv().await?;
/// rep.send(ping).await?;
/// assert_eq!(req.recv().await?.frame(0).unwrap(), "ping");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Socket {
    raw: RawSocket,
    socket_type: SocketType,
    options: Arc<SocketOptions>,
    counters: Arc<Counters>,
    registry: Registry,
    id: u64,
    /// Who follows this socket's connection closes.
    close_watchers: Arc<Watchers>,
    /// Why the engine stopped dialing an endpoint, once it has.
    gave_up: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// Whether a synchronous try_send matches the engine's async send for this type.
    fast_send: bool,
    /// Whether a synchronous try_recv matches the engine's async recv for this type.
    fast_recv: bool,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("type", &self.socket_type)
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// A socket of type `t`, registered in [`Registry::global`].
    /// Must be called inside a tokio runtime.
    pub fn new(t: SocketType, options: SocketOptions) -> Result<Self> {
        Self::with_registry(t, options, Registry::global())
    }

    /// A socket registered in `registry`.
    pub fn with_registry(
        t: SocketType,
        options: SocketOptions,
        registry: &Registry,
    ) -> Result<Self> {
        options.validate()?;
        let counters = Arc::new(Counters::default());
        let id = registry.register(t, &options, counters.clone());
        let options = with_refusals_reported(options, registry, id);
        let raw = match engine::new_socket(t, &options) {
            Ok(raw) => raw,
            Err(e) => {
                registry.apply(id, LinkEvent::SocketClosed);
                return Err(e);
            }
        };
        // Subscribe before any bind/connect so no event is missed.
        let monitor = engine::monitor(&raw);
        let close_watchers = Arc::new(Watchers::default());
        let gave_up = Arc::new(tokio::sync::watch::Sender::new(None));
        // A handshake still open after its deadline plus a tick has ended unseen.
        let stale_ms =
            options.handshake_timeout.as_millis() as u64 + REGISTRY_TICK.as_millis() as u64;
        tokio::spawn(feed_registry(
            raw.clone(),
            monitor,
            registry.clone(),
            id,
            stale_ms,
            close_watchers.clone(),
            gave_up.clone(),
        ));
        let plain_path = options.signer.is_none() && options.verifier.is_none();
        Ok(Self {
            raw,
            socket_type: t,
            options: Arc::new(options),
            counters,
            registry: registry.clone(),
            id,
            close_watchers,
            gave_up,
            // REQ keeps the engine's send: its send retries a lockstep check
            // that try_send fails at once. Everything else behaves the same.
            fast_send: plain_path
                && matches!(
                    t,
                    SocketType::Push
                        | SocketType::Dealer
                        | SocketType::Router
                        | SocketType::Pair
                        | SocketType::Rep
                ),
            fast_recv: plain_path
                && matches!(
                    t,
                    SocketType::Pull
                        | SocketType::Dealer
                        | SocketType::Router
                        | SocketType::Pair
                        | SocketType::Req
                        | SocketType::Rep
                        | SocketType::Sub
                ),
        })
    }

    /// The socket's type.
    pub fn socket_type(&self) -> SocketType {
        self.socket_type
    }

    /// The options it was made with.
    pub fn options(&self) -> &SocketOptions {
        &self.options
    }

    /// Its registry id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The registry it reports to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Its registry entry, now.
    pub fn snapshot(&self) -> Option<SocketSnapshot> {
        self.registry.socket(self.id)
    }

    /// Its peers, now.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        self.snapshot().map(|s| s.peers).unwrap_or_default()
    }

    /// Messages and bytes each way, over all peers.
    pub fn traffic(&self) -> Traffic {
        self.counters.traffic()
    }

    /// Listen on `endpoint`; returns the endpoint actually bound (port filled in for `:0`).
    pub async fn bind(&self, endpoint: &str) -> Result<String> {
        engine::bind(&self.raw, endpoint).await
    }

    /// Dial `endpoint`. Returns at once; the link comes up (and comes back) in the
    /// background under the reconnect policy. Watch it in the registry.
    pub async fn connect(&self, endpoint: &str) -> Result<()> {
        let canonical = engine::canonical_endpoint(endpoint)?;
        self.registry.apply(
            self.id,
            LinkEvent::Dialing {
                endpoint: canonical,
            },
        );
        engine::connect(&self.raw, endpoint).await
    }

    /// Stop dialing `endpoint` and drop its link.
    pub async fn disconnect(&self, endpoint: &str) -> Result<()> {
        engine::disconnect(&self.raw, endpoint).await
    }

    /// SUB: receive messages whose first frame starts with `prefix` (empty = everything).
    pub async fn subscribe(&self, prefix: impl Into<Bytes>) -> Result<()> {
        engine::subscribe(&self.raw, prefix.into()).await
    }

    /// Why the engine stopped dialing one of this socket's endpoints, once it
    /// has: a refused handshake (a wrong CURVE key, a policy's denial), after
    /// which it does not retry. `None` while every endpoint is still pursued.
    pub fn gave_up(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.gave_up.subscribe()
    }

    /// Follow this socket's connections as they close, from now on. Each
    /// watcher sees every close (or is told it lagged); see [`crate::closes`].
    pub fn closed_connections(&self) -> ClosedConnections {
        self.close_watchers.watch()
    }

    /// The ids of the connections open now (ready or still handshaking), as
    /// [`Message::connection_id`] and [`crate::closes::ConnectionClosed`] name them.
    pub async fn connection_ids(&self) -> Result<Vec<u64>> {
        Ok(engine::connections(&self.raw)
            .await?
            .into_iter()
            .map(|(id, _, _)| id)
            .collect())
    }

    /// Close one connection, dropping what is queued for it. A dialed peer
    /// redials with backoff; an accepted one may reconnect from its side.
    /// [`Error::Unroutable`] if that connection is already gone.
    pub async fn disconnect_peer(&self, connection_id: u64) -> Result<()> {
        engine::disconnect_peer(&self.raw, connection_id).await
    }

    /// SUB: stop receiving `prefix`.
    pub async fn unsubscribe(&self, prefix: impl Into<Bytes>) -> Result<()> {
        engine::unsubscribe(&self.raw, prefix.into()).await
    }

    /// Send a message, waiting at the high-water mark as the socket type does
    /// (PUB never waits: it drops for slow subscribers). With a `send_timeout`,
    /// gives up after it with [`Error::Timeout`] and counts a drop.
    pub async fn send(&self, msg: impl Into<Message>) -> Result<()> {
        let mut msg = self.seal(msg.into());
        let len = msg.byte_len();
        // Fast path: a synchronous attempt builds no engine future. Moving the
        // engine's (large) send future through each async layer costs more than
        // the send itself for small messages. Fan-out and lockstep types keep
        // the engine's own path (their send and try_send differ in policy).
        if self.fast_send {
            match engine::try_send(&self.raw, msg.0)? {
                TrySend::Sent => {
                    self.counters.sent(len);
                    // Stay cooperative: a sender that never waits must still yield.
                    tokio::task::consume_budget().await;
                    return Ok(());
                }
                TrySend::Full(m) => msg = Message(m),
            }
        }
        match self.options.send_timeout {
            None => engine::send(&self.raw, msg.0).await?,
            // Boxed so the timer stays out of the common path's future.
            Some(limit) => Box::pin(self.send_within(msg, limit)).await?,
        }
        self.counters.sent(len);
        Ok(())
    }

    /// Fast path first: only a full queue pays for a timer.
    async fn send_within(&self, msg: Message, limit: Duration) -> Result<()> {
        match engine::try_send(&self.raw, msg.0)? {
            TrySend::Sent => Ok(()),
            TrySend::Full(m) => match tokio::time::timeout(limit, engine::send(&self.raw, m)).await
            {
                Ok(r) => r,
                Err(_) => {
                    self.counters.dropped();
                    Err(Error::Timeout(limit))
                }
            },
        }
    }

    /// Send without waiting; a full queue hands the message back as it was
    /// given (unsigned: sending it again signs it once, afresh).
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), TrySendError> {
        let msg = msg.into();
        // Signing makes a new message; keep the caller's to hand back.
        let (sealed, original) = if self.options.signer.is_some() {
            (self.seal(msg.clone()), Some(msg))
        } else {
            (msg, None)
        };
        let len = sealed.byte_len();
        match engine::try_send(&self.raw, sealed.0)? {
            TrySend::Sent => {
                self.counters.sent(len);
                Ok(())
            }
            TrySend::Full(m) => Err(TrySendError::Full(original.unwrap_or(Message(m)))),
        }
    }

    /// Receive the next message. With a verifier, only messages whose
    /// signature verifies are returned (without the signature frame); the
    /// others are counted, reported and dropped.
    pub async fn recv(&self) -> Result<Message> {
        // Fast path: a waiting message needs no engine future (only without a
        // verifier: `fast_recv` is off then).
        if self.fast_recv
            && let Some(m) = engine::try_recv(&self.raw)?
        {
            self.counters.received(engine::byte_len(&m));
            tokio::task::consume_budget().await;
            return Ok(Message(m));
        }
        if self.options.verifier.is_none() {
            let m = engine::recv(&self.raw).await?;
            self.counters.received(engine::byte_len(&m));
            return Ok(Message(m));
        }
        loop {
            let m = Message(engine::recv(&self.raw).await?);
            self.counters.received(m.byte_len());
            if let Some(m) = self.open(m) {
                return Ok(m);
            }
        }
    }

    /// Frames of the routing envelope that the signature does not cover.
    fn envelope_len(&self) -> usize {
        usize::from(self.socket_type == SocketType::Router)
    }

    /// Append the signature frame, when signing.
    fn seal(&self, msg: Message) -> Message {
        let Some(signer) = &self.options.signer else {
            return msg;
        };
        let frames = msg.frames();
        let env = self.envelope_len().min(frames.len());
        let mut nonce = [0u8; crate::security::signing::NONCE_LEN];
        // A signer without randomness would repeat nonces; that is not survivable.
        getrandom::fill(&mut nonce).expect("OS random number generator unavailable");
        let sig = signer.sign(crate::registry::now_ms(), nonce, &frames[env..]);
        Message::from_frames(frames.into_iter().chain(std::iter::once(sig)))
    }

    /// Verify and strip the signature frame, when verifying; `None` drops the message.
    fn open(&self, msg: Message) -> Option<Message> {
        let Some(verifier) = &self.options.verifier else {
            return Some(msg);
        };
        let frames = msg.frames();
        let env = self.envelope_len().min(frames.len());
        let result = verifier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .verify(crate::registry::now_ms(), &frames[env..]);
        match result {
            // The envelope stays the engine's: a ROUTER message keeps its
            // sender (connection id, authentication) through verification.
            Ok(v) => Some(Message(engine::with_sender_of(
                &msg.0,
                &frames[..env],
                v.frames,
            ))),
            Err(e) => {
                self.registry
                    .note_signature_failure(self.id, &e.to_string());
                None
            }
        }
    }

    /// Receive the next message, or [`Error::Timeout`] after `limit`.
    pub async fn recv_timeout(&self, limit: Duration) -> Result<Message> {
        match tokio::time::timeout(limit, self.recv()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(limit)),
        }
    }

    /// Receive a message if one is waiting (and, with a verifier, verifies).
    pub fn try_recv(&self) -> Result<Option<Message>> {
        while let Some(m) = engine::try_recv(&self.raw)?.map(Message) {
            self.counters.received(m.byte_len());
            if let Some(m) = self.open(m) {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Send one value encoded with codec `C`, as a single frame.
    pub async fn send_as<C: Codec, T: Encode<C> + ?Sized>(&self, value: &T) -> Result<()> {
        self.send(Message::single(value.encode()?)).await
    }

    /// Receive a message and decode its last frame with codec `C`.
    pub async fn recv_as<C: Codec, T: Decode<C>>(&self) -> Result<T> {
        let m = self.recv().await?;
        let body = m.body().unwrap_or_default();
        Ok(T::decode(&body)?)
    }

    /// Close: queued messages get up to the linger time to go out.
    pub async fn close(self) -> Result<()> {
        engine::close(self.raw, self.options.linger).await
    }
}

/// Give the socket's auth policy a sink that reports refusals to the registry.
fn with_refusals_reported(
    mut options: SocketOptions,
    registry: &Registry,
    id: u64,
) -> SocketOptions {
    use crate::security::Security;
    if let Security::NullServer { policy }
    | Security::CurveServer { policy, .. }
    | Security::PlainServer { policy } = &mut options.security
    {
        let registry = registry.clone();
        *policy = policy
            .clone()
            .on_refusal(move |r| registry.note_refusal(id, r.address.as_deref(), &r.reason));
    }
    options
}

/// Feed the engine's monitor events into the registry until the socket closes.
async fn feed_registry(
    raw: RawSocket,
    mut monitor: engine::RawMonitor,
    registry: Registry,
    id: u64,
    stale_handshake_ms: u64,
    close_watchers: Arc<Watchers>,
    gave_up: Arc<tokio::sync::watch::Sender<Option<String>>>,
) {
    let mut tick = tokio::time::interval(REGISTRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = monitor.next() => match item {
                MonitorItem::Event(ev) => {
                    if let LinkEvent::Disconnected { connection_id, .. } = &ev {
                        close_watchers.closed(*connection_id);
                    }
                    if let LinkEvent::GaveUp { endpoint, reason } = &ev {
                        gave_up.send_replace(Some(format!("{endpoint}: {reason}")));
                    }
                    let closing = matches!(ev, LinkEvent::SocketClosed);
                    registry.apply(id, ev);
                    if closing {
                        close_watchers.socket_closed();
                        return;
                    }
                }
                MonitorItem::Lagged => {
                    close_watchers.lagged();
                    if let Ok(live) = engine::connections(&raw).await {
                        registry.resync(id, &live, "closed (events lagged)");
                    }
                }
                MonitorItem::Closed => {
                    close_watchers.socket_closed();
                    registry.apply(id, LinkEvent::SocketClosed);
                    return;
                }
            },
            _ = tick.tick() => {
                if registry.tick(id, stale_handshake_ms)
                    && let Ok(live) = engine::connections(&raw).await
                {
                    registry.resync(id, &live, "peer hung up during the handshake");
                }
            }
        }
    }
}
