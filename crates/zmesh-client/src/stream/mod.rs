//! Async stream client: publish, subscribe with credit and gap detection,
//! snapshots.
//!
//! Every delivery carries the stream's sequence number and the
//! subscription's own delivery count (`dseq`: 1, 2, 3…). A jump in `dseq`
//! means something was lost between broker and client (a reconnect, a
//! dropped message): the client then subscribes again from the last sequence
//! it delivered plus one, under a new subscription id so that stragglers of
//! the old one are ignored. The same happens when the broker falls silent.
//! Messages at or below the last delivered sequence are dropped, so the
//! application sees every matching message once, in order.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zmesh_client::stream::StreamError> {
//! use zmesh_client::stream::{StreamClient, StreamClientConfig};
//! use zmesh_wire::stream::proto::Start;
//! let c = StreamClient::connect("tcp://127.0.0.1:5555", StreamClientConfig::default()).await?;
//! c.create("orders", None).await?;
//! c.publish("orders", "orders.eu", "{\"id\": 7}").await?;
//! let mut sub = c.subscribe("orders", "orders.>", Start::First, None).await?;
//! let m = sub.next().await.expect("a message");
//! assert_eq!(m.subject, "orders.eu");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use tokio::sync::{mpsc, oneshot, watch};
use zmesh::{Message, Socket, SocketOptions, SocketType};

use crate::request::{Retry, unless_refused};
use crate::util::{MsgIds, Tasks, link_restored, lock};

/// Why a stream operation failed: the error of every queue and stream request.
pub use crate::request::RequestError as StreamError;
use zmesh_wire::stream::options::{StreamOptions, StreamSpec};
use zmesh_wire::stream::proto::{PROTOCOL, Start};

fn frames(parts: impl IntoIterator<Item = Bytes>) -> Message {
    crate::util::framed(PROTOCOL, parts)
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct StreamClientConfig {
    /// How long one attempt waits for its reply.
    pub attempt_timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// First wait between attempts (doubles, with full jitter).
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Messages the broker may send ahead of the application.
    pub credit: u32,
    /// How often a subscribing client says it is alive.
    pub heartbeat: Duration,
    /// Broker silence after which subscriptions are made again.
    pub broker_timeout: Duration,
}

impl Default for StreamClientConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            retries: 3,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            credit: 1000,
            heartbeat: Duration::from_secs(1),
            broker_timeout: Duration::from_secs(3),
        }
    }
}

/// A message of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMsg {
    /// Sequence number in the stream.
    pub seq: u64,
    /// When the broker stored it (ms since the epoch).
    pub time_ms: u64,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: Bytes,
}

/// The last message of each subject, and the sequence to follow from.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Where to follow from: the sequence after the newest one when the
    /// snapshot was taken (0 for an empty stream).
    pub next_seq: u64,
    /// One message per subject, oldest first.
    pub messages: Vec<StreamMsg>,
}

type Reply = Result<Vec<Bytes>, (u16, String)>;

struct SubState {
    stream: String,
    filter: String,
    start: Start,
    durable: Option<String>,
    generation: u64,
    expected_dseq: u64,
    last_seq: Option<u64>,
    tx: mpsc::UnboundedSender<StreamMsg>,
}

impl SubState {
    fn wire_id(&self, name: &str) -> String {
        format!("{name}#{}", self.generation)
    }

    fn start_text(&self) -> String {
        match (self.last_seq, self.start) {
            (Some(s), _) => format!("seq:{}", s + 1),
            (None, Start::First) => "first".into(),
            (None, Start::New) => "new".into(),
            (None, Start::Seq(n)) => format!("seq:{n}"),
            (None, Start::Time(t)) => format!("time:{t}"),
        }
    }
}

struct Inner {
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    subs: Mutex<HashMap<String, SubState>>,
    next_corr: AtomicU64,
    next_sub: AtomicU64,
    last_heard: Mutex<Instant>,
    credit: u32,
    /// Counters: gaps seen, duplicates dropped.
    gaps: AtomicU64,
    duplicates: AtomicU64,
    msg_ids: MsgIds,
}

fn subscribe_frames(name: &str, s: &SubState, credit: u32) -> Message {
    frames([
        Bytes::from("SUBSCRIBE"),
        Bytes::from("0"),
        Bytes::from(s.stream.clone()),
        Bytes::from(s.wire_id(name)),
        Bytes::from(s.filter.clone()),
        Bytes::from(s.start_text()),
        Bytes::from(credit.to_string()),
        Bytes::from(s.durable.clone().unwrap_or_default()),
    ])
}

/// A connection to the broker's streams. Cheap to clone.
#[derive(Clone)]
pub struct StreamClient {
    sock: Socket,
    cfg: StreamClientConfig,
    inner: Arc<Inner>,
    /// Set once the engine gives up on the broker (a refused handshake).
    gave_up: watch::Receiver<Option<String>>,
    _tasks: Arc<Tasks>,
}

impl StreamClient {
    /// Connect to a broker.
    pub async fn connect(endpoint: &str, cfg: StreamClientConfig) -> Result<Self, StreamError> {
        Self::connect_with(
            endpoint,
            cfg,
            SocketOptions::default().name("stream-client"),
        )
        .await
    }

    /// Connect with explicit socket options.
    pub async fn connect_with(
        endpoint: &str,
        cfg: StreamClientConfig,
        options: SocketOptions,
    ) -> Result<Self, StreamError> {
        let sock = Socket::new(SocketType::Dealer, options)?;
        sock.connect(endpoint).await?;
        let inner = Arc::new(Inner {
            pending: Mutex::new(HashMap::default()),
            subs: Mutex::new(HashMap::default()),
            next_corr: AtomicU64::new(1),
            next_sub: AtomicU64::new(1),
            last_heard: Mutex::new(Instant::now()),
            credit: cfg.credit.clamp(2, zmesh_wire::stream::proto::CREDIT_MAX),
            gaps: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            msg_ids: MsgIds::new(),
        });
        let reader = tokio::spawn(read(sock.clone(), inner.clone()));
        let keeper = tokio::spawn(keep(sock.clone(), inner.clone(), cfg.clone()));
        Ok(Self {
            gave_up: sock.gave_up(),
            sock,
            cfg,
            inner,
            _tasks: Arc::new(Tasks(vec![reader, keeper])),
        })
    }

    /// Gaps detected and repaired, duplicates dropped (for tests and metrics).
    pub fn repairs(&self) -> (u64, u64) {
        (
            self.inner.gaps.load(Ordering::Relaxed),
            self.inner.duplicates.load(Ordering::Relaxed),
        )
    }

    async fn request(&self, parts: Vec<Bytes>) -> Result<Vec<Bytes>, StreamError> {
        let mut retry = Retry::new(
            self.cfg.retries,
            self.cfg.backoff_initial,
            self.cfg.backoff_max,
        );
        while retry.next().await {
            let corr = self.inner.next_corr.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            lock(&self.inner.pending).insert(corr, tx);
            let msg = frames(
                std::iter::once(parts[0].clone())
                    .chain(std::iter::once(Bytes::from(corr.to_string())))
                    .chain(parts[1..].iter().cloned()),
            );
            let outcome = match self.sock.send(msg).await {
                Ok(()) => {
                    self.unless_refused(tokio::time::timeout(self.cfg.attempt_timeout, rx))
                        .await
                }
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(Ok(Ok(Ok(f)))) => return Ok(f),
                Ok(Ok(Ok(Err((code, reason))))) => {
                    return Err(StreamError::Refused { code, reason });
                }
                // Silence: try again under a new correlation id.
                Ok(_) => {
                    lock(&self.inner.pending).remove(&corr);
                }
                Err(e) => {
                    lock(&self.inner.pending).remove(&corr);
                    return Err(e);
                }
            }
        }
        Err(StreamError::Timeout(retry.attempts()))
    }

    /// `attempt`, unless the broker refuses the handshake first.
    async fn unless_refused<T>(&self, attempt: impl Future<Output = T>) -> Result<T, StreamError> {
        unless_refused(&self.gave_up, attempt)
            .await
            .map_err(|reason| StreamError::HandshakeRefused { reason })
    }

    /// Create `stream` (or accept it as it is when `options` is `None`).
    pub async fn create(
        &self,
        stream: &str,
        options: Option<&StreamOptions>,
    ) -> Result<StreamSpec, StreamError> {
        let opts = options.map_or_else(Bytes::new, |o| {
            serde_json::to_vec(o).expect("options").into()
        });
        let f = self
            .request(vec!["CREATE".into(), stream.to_owned().into(), opts])
            .await?;
        serde_json::from_slice(f.first().map_or(&b""[..], |b| &b[..]))
            .map_err(|e| StreamError::Protocol(format!("stream spec: {e}")))
    }

    /// Delete `stream` and its messages.
    pub async fn delete(&self, stream: &str) -> Result<(), StreamError> {
        self.request(vec!["DELETE".into(), stream.to_owned().into()])
            .await
            .map(|_| ())
    }

    /// Counters of one stream or all.
    pub async fn info(&self, stream: Option<&str>) -> Result<Vec<serde_json::Value>, StreamError> {
        let s = stream.map_or_else(Bytes::new, |s| s.to_owned().into());
        let f = self.request(vec!["INFO".into(), s]).await?;
        serde_json::from_slice(f.first().map_or(&b""[..], |b| &b[..]))
            .map_err(|e| StreamError::Protocol(format!("info: {e}")))
    }

    /// Append a message; returns its sequence number once durable. It goes
    /// with an id of this client's making, so a retry after a lost reply is
    /// recognised by the broker and answered with the first sequence number.
    pub async fn publish(
        &self,
        stream: &str,
        subject: &str,
        body: impl Into<Bytes>,
    ) -> Result<u64, StreamError> {
        self.publish_with_id(stream, subject, self.inner.msg_ids.next(), body)
            .await
    }

    /// Append a message with the caller's id (at most 255 bytes; empty: no
    /// deduplication). Within the stream's `dedup_window` a repeat of the id,
    /// from any client and across broker restarts, is not stored again: it is
    /// answered with the first message's sequence number.
    pub async fn publish_with_id(
        &self,
        stream: &str,
        subject: &str,
        msg_id: impl Into<Bytes>,
        body: impl Into<Bytes>,
    ) -> Result<u64, StreamError> {
        let f = self
            .request(vec![
                "PUBLISH".into(),
                stream.to_owned().into(),
                subject.to_owned().into(),
                body.into(),
                msg_id.into(),
            ])
            .await?;
        std::str::from_utf8(f.first().map_or(&b""[..], |b| &b[..]))
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StreamError::Protocol("STORED without a sequence".into()))
    }

    /// Subscribe to `filter` in `stream` from `start`; with `durable`, the
    /// broker keeps the acknowledged position under that name.
    pub async fn subscribe(
        &self,
        stream: &str,
        filter: &str,
        start: Start,
        durable: Option<&str>,
    ) -> Result<Subscription, StreamError> {
        let name = format!("s{}", self.inner.next_sub.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        let state = SubState {
            stream: stream.to_owned(),
            filter: filter.to_owned(),
            start,
            durable: durable.map(str::to_owned),
            generation: 0,
            expected_dseq: 1,
            last_seq: None,
            tx,
        };
        let parts = vec![
            "SUBSCRIBE".into(),
            stream.to_owned().into(),
            state.wire_id(&name).into(),
            filter.to_owned().into(),
            state.start_text().into(),
            self.inner.credit.to_string().into(),
            durable.unwrap_or_default().to_owned().into(),
        ];
        lock(&self.inner.subs).insert(name.clone(), state);
        if let Err(e) = self.request(parts).await {
            lock(&self.inner.subs).remove(&name);
            return Err(e);
        }
        Ok(Subscription {
            client: self.clone(),
            name,
            rx,
            consumed: 0,
        })
    }

    /// The last message of every subject matching `filter`, and the sequence
    /// to follow from (`next_seq`) without a gap.
    pub async fn snapshot(&self, stream: &str, filter: &str) -> Result<Snapshot, StreamError> {
        let f = self
            .request(vec![
                "SNAPSHOT".into(),
                stream.to_owned().into(),
                filter.to_owned().into(),
            ])
            .await?;
        let num = |b: &Bytes| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        let bad = || StreamError::Protocol("malformed SNAPSHOT".into());
        let next_seq = f.first().and_then(num).ok_or_else(bad)?;
        let messages = f
            .get(2..)
            .unwrap_or_default()
            .chunks(4)
            .map(|c| {
                Some(StreamMsg {
                    subject: String::from_utf8(c.first()?.to_vec()).ok()?,
                    seq: num(c.get(1)?)?,
                    time_ms: num(c.get(2)?)?,
                    body: c.get(3)?.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        Ok(Snapshot { next_seq, messages })
    }
}

/// Messages of one subscription, in order, each once.
pub struct Subscription {
    client: StreamClient,
    name: String,
    rx: mpsc::UnboundedReceiver<StreamMsg>,
    consumed: u32,
}

impl Subscription {
    /// The next message (`None` once the client is gone).
    pub async fn next(&mut self) -> Option<StreamMsg> {
        let m = self.rx.recv().await?;
        // Credit goes back as the application takes messages: the broker is
        // never more than one window ahead of it.
        self.consumed += 1;
        let half = self.client.inner.credit / 2;
        if self.consumed >= half {
            let wire = lock(&self.client.inner.subs)
                .get(&self.name)
                .map(|s| s.wire_id(&self.name));
            if let Some(id) = wire {
                let _ = self.client.sock.try_send(frames([
                    Bytes::from("CREDIT"),
                    Bytes::from(id),
                    Bytes::from(self.consumed.to_string()),
                ]));
            }
            self.consumed = 0;
        }
        Some(m)
    }

    /// Durable subscriptions: everything up to `seq` is processed.
    pub fn ack(&self, seq: u64) {
        let wire = lock(&self.client.inner.subs)
            .get(&self.name)
            .map(|s| s.wire_id(&self.name));
        if let Some(id) = wire {
            let _ = self.client.sock.try_send(frames([
                Bytes::from("ACK"),
                Bytes::from(id),
                Bytes::from(seq.to_string()),
            ]));
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.client.inner.subs).remove(&self.name) {
            let _ = self.client.sock.try_send(frames([
                Bytes::from("UNSUBSCRIBE"),
                Bytes::from("0"),
                Bytes::from(s.wire_id(&self.name)),
            ]));
        }
    }
}

/// Start the subscription again from after its last delivered message,
/// under a new id; the old one is ended.
fn resubscribe(sock: &Socket, name: &str, s: &mut SubState, credit: u32) {
    let old = s.wire_id(name);
    s.generation += 1;
    s.expected_dseq = 1;
    let _ = sock.try_send(frames([
        Bytes::from("UNSUBSCRIBE"),
        Bytes::from("0"),
        Bytes::from(old),
    ]));
    let _ = sock.try_send(subscribe_frames(name, s, credit));
}

async fn read(sock: Socket, inner: Arc<Inner>) {
    let num = |b: Option<&Bytes>| b.and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok());
    while let Ok(m) = sock.recv().await {
        let f = m.frames();
        if f.len() < 3 || f[1] != PROTOCOL {
            continue;
        }
        *lock(&inner.last_heard) = Instant::now();
        match &f[2][..] {
            b"MSG" => {
                let Some(wire) = f.get(3).and_then(|b| std::str::from_utf8(b).ok()) else {
                    continue;
                };
                let Some((name, generation)) = wire.rsplit_once('#') else {
                    continue;
                };
                let (Some(seq), Some(dseq), Some(time_ms)) =
                    (num(f.get(4)), num(f.get(5)), num(f.get(6)))
                else {
                    continue;
                };
                let mut subs = lock(&inner.subs);
                let Some(s) = subs.get_mut(name) else {
                    continue;
                };
                if generation.parse::<u64>().ok() != Some(s.generation) {
                    continue; // a straggler of an ended subscription
                }
                if dseq != s.expected_dseq {
                    inner.gaps.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        sub = name,
                        expected = s.expected_dseq,
                        got = dseq,
                        "gap in a stream subscription; subscribing again"
                    );
                    resubscribe(&sock, name, s, inner.credit);
                    continue;
                }
                s.expected_dseq += 1;
                if s.last_seq.is_some_and(|l| seq <= l) {
                    inner.duplicates.fetch_add(1, Ordering::Relaxed);
                    // The application never sees it, so give its credit back here.
                    let _ = sock.try_send(frames([
                        Bytes::from("CREDIT"),
                        Bytes::from(wire.to_owned()),
                        Bytes::from("1"),
                    ]));
                    continue;
                }
                s.last_seq = Some(seq);
                let msg = StreamMsg {
                    seq,
                    time_ms,
                    subject: String::from_utf8_lossy(f.get(7).map_or(&b""[..], |b| &b[..]))
                        .into_owned(),
                    body: f.get(8).cloned().unwrap_or_default(),
                };
                let _ = s.tx.send(msg);
            }
            b"HEARTBEAT" => {}
            b"OK" | b"STORED" | b"SNAPSHOT" | b"ERROR" => {
                let Some(corr) = num(f.get(3)) else { continue };
                let reply = if &f[2][..] == b"ERROR" {
                    Err((
                        num(f.get(4)).unwrap_or(0) as u16,
                        String::from_utf8_lossy(f.get(5).map_or(&b""[..], |b| &b[..])).into_owned(),
                    ))
                } else {
                    Ok(f[4..].to_vec())
                };
                if let Some(tx) = lock(&inner.pending).remove(&corr) {
                    let _ = tx.send(reply);
                }
            }
            _ => {}
        }
    }
}

/// Heartbeats while subscribed; subscribe again when the link to the broker
/// comes back, or when the broker falls silent.
async fn keep(sock: Socket, inner: Arc<Inner>, cfg: StreamClientConfig) {
    let mut tick = tokio::time::interval(cfg.heartbeat);
    let mut events = sock.registry().subscribe();
    loop {
        let relinked = tokio::select! {
            _ = tick.tick() => false,
            _ = link_restored(&mut events, sock.id()) => true,
        };
        let mut subs = lock(&inner.subs);
        if subs.is_empty() {
            continue;
        }
        let _ = sock.try_send(frames([Bytes::from("HEARTBEAT")]));
        if relinked || lock(&inner.last_heard).elapsed() > cfg.broker_timeout {
            *lock(&inner.last_heard) = Instant::now();
            tracing::info!(relinked, "subscribing again");
            for (name, s) in subs.iter_mut() {
                resubscribe(&sock, name, s, inner.credit);
            }
        }
    }
}
