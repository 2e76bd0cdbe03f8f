//! The one module that touches the ZMTP engine (`omq-tokio`).
//!
//! Everything else in zmesh speaks in its own types: [`crate::Message`],
//! [`crate::SocketType`], [`crate::SocketOptions`], [`crate::registry::LinkEvent`]
//! and [`crate::Error`]. An engine upgrade, or a second engine, changes this file
//! and nothing else. What the engine lacks and how we work around it is written
//! down in `docs/engine.md`.

use std::time::Duration;

use bytes::Bytes;
use omq_tokio as omq;

use crate::error::Error;
use crate::options::{Reconnect, SocketOptions};
use crate::registry::{CloseReason, LinkEvent};
use crate::security::{
    AuthPolicy, Decision, Mechanism, PeerAuth, PeerCredentials, PublicKey, Security,
};
use crate::socket_type::SocketType;

/// The engine's message type; [`crate::Message`] wraps it without copying.
pub(crate) type RawMessage = omq::Message;

/// A socket of the engine. Cheap to clone (shared handle).
pub(crate) type RawSocket = omq::Socket;

/// The engine's stream of connection-lifecycle events for one socket.
pub(crate) struct RawMonitor(omq::MonitorStream);

/// What reading the monitor stream produced.
pub(crate) enum MonitorItem {
    /// A translated event (engine events zmesh does not track are skipped).
    Event(LinkEvent),
    /// The stream fell behind and skipped events: re-read the connection set.
    Lagged,
    /// The socket has shut down.
    Closed,
}

fn engine_socket_type(t: SocketType) -> omq::SocketType {
    match t {
        SocketType::Req => omq::SocketType::Req,
        SocketType::Rep => omq::SocketType::Rep,
        SocketType::Dealer => omq::SocketType::Dealer,
        SocketType::Router => omq::SocketType::Router,
        SocketType::Pub => omq::SocketType::Pub,
        SocketType::Sub => omq::SocketType::Sub,
        SocketType::XPub => omq::SocketType::XPub,
        SocketType::XSub => omq::SocketType::XSub,
        SocketType::Push => omq::SocketType::Push,
        SocketType::Pull => omq::SocketType::Pull,
        SocketType::Pair => omq::SocketType::Pair,
    }
}

/// Translate zmesh's options into the engine's.
fn engine_options(o: &SocketOptions) -> omq::Options {
    let mut e = omq::Options::default()
        .send_hwm(o.send_hwm)
        .recv_hwm(o.recv_hwm)
        .linger(o.linger)
        .handshake_timeout(o.handshake_timeout)
        .max_pending_handshakes(o.max_pending_handshakes)
        .reconnect(match o.reconnect {
            Reconnect::Disabled => omq::ReconnectPolicy::Disabled,
            // The engine adds ±10 % jitter to every interval (omq-proto backoff.rs).
            Reconnect::Exponential { initial, max } => {
                omq::ReconnectPolicy::Exponential { min: initial, max }
            }
        });
    if let Some(max) = o.max_message_size {
        e = e.max_message_size(max);
    }
    if let Some(hb) = &o.heartbeat {
        e = e
            .heartbeat_interval(hb.interval)
            .heartbeat_timeout(hb.timeout)
            .heartbeat_ttl(hb.ttl);
    }
    if let Some(id) = &o.identity {
        e = e.identity(id.clone());
    }
    if o.conflate {
        e = e.conflate(true);
    }
    if o.router_mandatory {
        e = e.router_mandatory(true);
    }
    e.mechanism = mechanism(&o.security);
    e
}

/// zmesh's security settings as the engine's mechanism, with the policy as its admission callback.
fn mechanism(s: &Security) -> omq::MechanismSetup {
    match s {
        Security::Null => omq::MechanismSetup::Null,
        Security::NullServer { policy } => omq::MechanismSetup::NullServer {
            authenticator: authenticator(policy.clone()),
        },
        Security::CurveServer { keys, policy } => {
            let mut options = omq::CurveServerOptions::default();
            options.authenticator = Some(authenticator(policy.clone()));
            omq::MechanismSetup::CurveServer {
                our_keypair: curve_keypair(&keys.public.0, &keys.secret.0),
                options,
            }
        }
        Security::CurveClient { keys, server } => omq::MechanismSetup::CurveClient {
            our_keypair: curve_keypair(&keys.public.0, &keys.secret.0),
            server_public: omq::CurvePublicKey::from_bytes(server.0),
        },
        Security::PlainServer { policy } => omq::MechanismSetup::PlainServer {
            authenticator: authenticator(policy.clone()),
        },
        Security::PlainClient { username, password } => omq::MechanismSetup::PlainClient {
            username: username.clone(),
            password: password.clone(),
        },
    }
}

fn curve_keypair(public: &[u8; 32], secret: &[u8; 32]) -> omq::CurveKeypair {
    omq::CurveKeypair {
        public: omq::CurvePublicKey::from_bytes(*public),
        secret: omq::CurveSecretKey::from_bytes(*secret),
    }
}

/// The engine calls this once per handshake (on its blocking pool), after the
/// mechanism verified the credentials.
fn authenticator(policy: AuthPolicy) -> omq::Authenticator {
    omq::Authenticator::new_with_result(move |peer: &omq::MechanismPeerInfo| {
        let mechanism = if peer.mechanism == omq::proto::MechanismName::CURVE {
            Mechanism::Curve
        } else if peer.mechanism == omq::proto::MechanismName::PLAIN {
            Mechanism::Plain
        } else {
            Mechanism::Null
        };
        let creds = PeerCredentials {
            mechanism,
            address: peer.peer_address.as_deref(),
            public_key: (mechanism == Mechanism::Curve).then_some(PublicKey(peer.public_key)),
            username: peer.username.as_deref(),
            password: peer.password.as_deref(),
        };
        match policy.decide(&creds) {
            Decision::Allow { user_id } if user_id.is_empty() => omq::AuthenticationResult::allow(),
            Decision::Allow { user_id } => omq::AuthenticationResult::allow().with_user_id(user_id),
            Decision::Deny { .. } => omq::AuthenticationResult::deny(),
        }
    })
}

fn mechanism_name(m: &omq::proto::MechanismName) -> String {
    m.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|_| format!("{m:?}"))
}

/// A fresh CURVE key pair `(public, secret)`.
pub(crate) fn generate_curve_keypair() -> ([u8; 32], [u8; 32]) {
    let kp = omq::CurveKeypair::generate();
    (*kp.public.as_bytes(), *kp.secret.as_bytes())
}

/// The public key of a CURVE secret key.
pub(crate) fn derive_curve_public(secret: &[u8; 32]) -> [u8; 32] {
    *omq::CurveSecretKey::from_bytes(*secret)
        .derive_public()
        .as_bytes()
}

/// What a ROUTER message says about its sender's authentication.
pub(crate) fn sender_auth(m: &RawMessage) -> Option<PeerAuth> {
    let info = m.sender_identity()?.peer_info();
    let auth = &info.authentication;
    Some(PeerAuth {
        mechanism: auth.mechanism.as_ref().map(mechanism_name),
        user_id: auth
            .user_id
            .as_ref()
            .map(|u| String::from_utf8_lossy(u).into_owned()),
        public_key: auth.public_key.as_ref().and_then(|k| match k {
            omq::PeerPublicKey::Curve(b) => Some(PublicKey(*b)),
            _ => None,
        }),
        address: info.peer_address.map(|a| a.to_string()),
    })
}

/// The connection a ROUTER message came in on (the engine's `connection_id`,
/// as monitor events name it).
pub(crate) fn sender_connection(m: &RawMessage) -> Option<u64> {
    Some(m.sender_identity()?.peer_info().connection_id)
}

/// Create an engine socket on the current tokio runtime.
pub(crate) fn new_socket(t: SocketType, options: &SocketOptions) -> Result<RawSocket, Error> {
    omq::Socket::try_new(engine_socket_type(t), engine_options(options)).map_err(Error::from)
}

pub(crate) fn monitor(socket: &RawSocket) -> RawMonitor {
    RawMonitor(socket.monitor())
}

impl RawMonitor {
    pub(crate) async fn next(&mut self) -> MonitorItem {
        loop {
            match self.0.recv().await {
                Ok(ev) => {
                    if let Some(ev) = translate(ev) {
                        return MonitorItem::Event(ev);
                    }
                }
                Err(omq::MonitorRecvError::Lagged(_)) => return MonitorItem::Lagged,
                Err(_) => return MonitorItem::Closed,
            }
        }
    }
}

fn close_reason(r: &omq::DisconnectReason) -> CloseReason {
    match r {
        omq::DisconnectReason::PeerClosed => CloseReason::PeerClosed,
        omq::DisconnectReason::LocalClose => CloseReason::LocalClose,
        omq::DisconnectReason::Error(e) => {
            // The engine reports a heartbeat expiry of an established link as
            // its Timeout error ("operation timed out"): after the handshake no
            // other deadline applies. Name it so the registry counts heartbeat failures.
            if *e == omq::Error::Timeout.to_string() || e.to_ascii_lowercase().contains("heartbeat")
            {
                CloseReason::HeartbeatTimeout
            } else {
                CloseReason::Error(e.clone())
            }
        }
        omq::DisconnectReason::HandshakeRefused(r) => CloseReason::Refused(r.to_string()),
        omq::DisconnectReason::Handover => CloseReason::Handover,
        other => CloseReason::Error(format!("{other:?}")),
    }
}

/// Map an engine monitor event to zmesh's engine-neutral [`LinkEvent`].
fn translate(ev: omq::MonitorEvent) -> Option<LinkEvent> {
    use omq::MonitorEvent as M;
    Some(match ev {
        M::Listening { endpoint } => LinkEvent::Listening {
            endpoint: endpoint.to_string(),
        },
        M::Accepted {
            endpoint,
            peer_ident,
            connection_id,
        } => LinkEvent::Accepted {
            endpoint: endpoint.to_string(),
            remote: peer_ident_string(&peer_ident),
            connection_id,
        },
        M::Connected {
            endpoint,
            peer_ident,
            connection_id,
        } => LinkEvent::Connected {
            endpoint: endpoint.to_string(),
            remote: peer_ident_string(&peer_ident),
            connection_id,
        },
        M::HandshakeSucceeded { endpoint, peer } => LinkEvent::HandshakeSucceeded {
            endpoint: endpoint.to_string(),
            connection_id: peer.connection_id,
            remote: peer.peer_address.map(|a| a.to_string()),
            identity: peer.peer_identity.clone(),
            zmtp_version: peer.zmtp_version,
            mechanism: peer.authentication.mechanism.as_ref().map(mechanism_name),
            user: authenticated_user(&peer),
        },
        M::HandshakeFailed {
            endpoint,
            peer_ident,
            reason,
        } => LinkEvent::HandshakeFailed {
            endpoint: endpoint.to_string(),
            remote: peer_ident_string(&peer_ident),
            reason,
        },
        M::ConnectDelayed {
            endpoint,
            retry_in,
            attempt,
        } => LinkEvent::RetryScheduled {
            endpoint: endpoint.to_string(),
            retry_in,
            attempt,
        },
        M::ConnectStopped { endpoint, reason } => LinkEvent::GaveUp {
            endpoint: endpoint.to_string(),
            reason: close_reason(&reason),
        },
        M::Disconnected {
            endpoint,
            peer,
            reason,
        } => LinkEvent::Disconnected {
            endpoint: endpoint.to_string(),
            connection_id: peer.connection_id,
            reason: close_reason(&reason),
        },
        M::PeerCommand {
            endpoint,
            peer,
            command: omq::PeerCommandKind::Error { reason },
        } => LinkEvent::PeerError {
            endpoint: endpoint.to_string(),
            connection_id: peer.connection_id,
            reason,
        },
        M::Closed => LinkEvent::SocketClosed,
        _ => return None,
    })
}

fn peer_ident_string(p: &omq::PeerIdent) -> Option<String> {
    Some(p.to_string())
}

/// The authenticated user (PLAIN username, CURVE public key in Z85) if any.
fn authenticated_user(peer: &omq::PeerInfo) -> Option<String> {
    let auth = &peer.authentication;
    if let Some(u) = &auth.username {
        return Some(u.clone());
    }
    if let Some(id) = &auth.user_id {
        return Some(String::from_utf8_lossy(id).into_owned());
    }
    auth.public_key.as_ref().map(|k| format!("{k:?}"))
}

/// The currently connected peers, as `(connection_id, endpoint, ready)`.
/// Used to resynchronise the registry after the monitor stream lagged.
pub(crate) async fn connections(socket: &RawSocket) -> Result<Vec<(u64, String, bool)>, Error> {
    let list = socket.connections().await?;
    Ok(list
        .into_iter()
        .map(|c| {
            (
                c.connection_id,
                c.endpoint.to_string(),
                c.peer_info.is_some(),
            )
        })
        .collect())
}

/// Close one connection; its queued messages are dropped. `Unroutable` if it is gone.
pub(crate) async fn disconnect_peer(socket: &RawSocket, connection_id: u64) -> Result<(), Error> {
    socket
        .disconnect_peer(connection_id)
        .await
        .map_err(Error::from)
}

pub(crate) async fn bind(socket: &RawSocket, endpoint: &str) -> Result<String, Error> {
    let ep = parse_endpoint(endpoint)?;
    Ok(socket.bind(ep).await?.to_string())
}

pub(crate) async fn connect(socket: &RawSocket, endpoint: &str) -> Result<(), Error> {
    let ep = parse_endpoint(endpoint)?;
    socket.connect(ep).await.map_err(Error::from)
}

pub(crate) async fn disconnect(socket: &RawSocket, endpoint: &str) -> Result<(), Error> {
    let ep = parse_endpoint(endpoint)?;
    socket.disconnect(ep).await.map_err(Error::from)
}

fn parse_endpoint(endpoint: &str) -> Result<omq::Endpoint, Error> {
    endpoint
        .parse::<omq::Endpoint>()
        .map_err(|e| Error::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })
}

pub(crate) async fn subscribe(socket: &RawSocket, prefix: Bytes) -> Result<(), Error> {
    socket.subscribe(prefix).await.map_err(Error::from)
}

pub(crate) async fn unsubscribe(socket: &RawSocket, prefix: Bytes) -> Result<(), Error> {
    socket.unsubscribe(prefix).await.map_err(Error::from)
}

/// Outcome of a send that must not wait.
pub(crate) enum TrySend {
    Sent,
    /// At the high-water mark; the message is handed back.
    Full(RawMessage),
}

pub(crate) fn try_send(socket: &RawSocket, msg: RawMessage) -> Result<TrySend, Error> {
    match socket.try_send(msg) {
        Ok(()) => Ok(TrySend::Sent),
        Err(omq::TrySendError::Full(m)) => Ok(TrySend::Full(m)),
        Err(omq::TrySendError::Closed) => Err(Error::Closed),
        Err(omq::TrySendError::Error(e)) => Err(e.into()),
    }
}

pub(crate) async fn send(socket: &RawSocket, msg: RawMessage) -> Result<(), Error> {
    socket.send(msg).await.map_err(Error::from)
}

pub(crate) async fn recv(socket: &RawSocket) -> Result<RawMessage, Error> {
    socket.recv().await.map_err(Error::from)
}

pub(crate) fn try_recv(socket: &RawSocket) -> Result<Option<RawMessage>, Error> {
    match socket.try_recv() {
        Ok(m) => Ok(Some(m)),
        Err(omq::Error::WouldBlock) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn close(socket: RawSocket, linger: Duration) -> Result<(), Error> {
    socket
        .close_with_linger(Some(linger))
        .await
        .map_err(Error::from)
}

// ---- messages -------------------------------------------------------------

pub(crate) fn message_from_frames<I, B>(frames: I) -> RawMessage
where
    I: IntoIterator<Item = B>,
    B: Into<Bytes>,
{
    RawMessage::multipart(frames.into_iter().map(Into::into))
}

pub(crate) fn message_single(frame: Bytes) -> RawMessage {
    RawMessage::single(frame)
}

/// A message of `envelope` then `body`, keeping `original`'s sender (its
/// identity snapshot: connection id, authentication) when it has one.
pub(crate) fn with_sender_of(
    original: &RawMessage,
    envelope: &[Bytes],
    body: Vec<Bytes>,
) -> RawMessage {
    match (original.sender_identity(), envelope.split_first()) {
        (Some(sender), Some((_, rest))) => RawMessage::with_identity(
            sender.clone(),
            RawMessage::multipart(rest.iter().cloned().chain(body)),
        ),
        _ => RawMessage::multipart(envelope.iter().cloned().chain(body)),
    }
}

pub(crate) fn frame_count(m: &RawMessage) -> usize {
    m.len()
}

pub(crate) fn byte_len(m: &RawMessage) -> usize {
    m.byte_len()
}

pub(crate) fn frame(m: &RawMessage, i: usize) -> Option<Bytes> {
    m.part_bytes(i)
}

pub(crate) fn frame_slice(m: &RawMessage, i: usize) -> Option<&[u8]> {
    m.part_slice(i)
}

// ---- errors ---------------------------------------------------------------

impl From<omq::Error> for Error {
    fn from(e: omq::Error) -> Self {
        use omq::Error as E;
        match e {
            E::InvalidEndpoint(s) | E::UnsupportedScheme(s) => Error::InvalidEndpoint {
                endpoint: s,
                reason: "not a valid ZeroMQ endpoint".into(),
            },
            E::Closed => Error::Closed,
            E::Timeout => Error::Timeout(Duration::ZERO),
            E::MessageTooLarge { size, max } => Error::MessageTooLarge { size, max },
            E::Unroutable => Error::Unroutable,
            E::WouldBlock => Error::QueueFull,
            E::Protocol(s) if s.contains("REQ") || s.contains("REP") => Error::InvalidState(s),
            E::Protocol(s) | E::HandshakeFailed(s) => Error::Peer(s),
            E::HandshakeRefused(r) => Error::Peer(r.to_string()),
            E::UnsupportedZmtpVersion { major, minor } => {
                Error::Peer(format!("unsupported ZMTP version {major}.{minor}"))
            }
            E::Io(io) => Error::Network(io.to_string()),
            E::Config(s) => Error::InvalidOption(s),
            other => Error::Network(other.to_string()),
        }
    }
}

/// The endpoint as the engine prints it, which is how its events name it.
pub(crate) fn canonical_endpoint(endpoint: &str) -> Result<String, Error> {
    Ok(parse_endpoint(endpoint)?.to_string())
}

/// The raw engine with its own defaults, for benchmarks that compare zmesh
/// against it. Not part of the API.
#[doc(hidden)]
pub mod raw_bench {
    use super::*;

    /// A bare engine socket.
    pub struct RawBenchSocket(omq::Socket);

    impl RawBenchSocket {
        /// A socket on the current runtime with the engine's defaults.
        pub fn new(t: SocketType) -> Result<Self, Error> {
            Ok(Self(omq::Socket::try_new(
                engine_socket_type(t),
                omq::Options::default(),
            )?))
        }
        /// Bind; returns the bound endpoint.
        pub async fn bind(&self, ep: &str) -> Result<String, Error> {
            bind(&self.0, ep).await
        }
        /// Connect.
        pub async fn connect(&self, ep: &str) -> Result<(), Error> {
            connect(&self.0, ep).await
        }
        /// Send one frame.
        pub async fn send(&self, b: Bytes) -> Result<(), Error> {
            self.0
                .send(omq::Message::single(b))
                .await
                .map_err(Error::from)
        }
        /// Receive; returns the byte length.
        pub async fn recv(&self) -> Result<usize, Error> {
            Ok(self.0.recv().await?.byte_len())
        }
        /// Close with a linger.
        pub async fn close(self, linger: Duration) -> Result<(), Error> {
            close(self.0, linger).await
        }
    }
}
