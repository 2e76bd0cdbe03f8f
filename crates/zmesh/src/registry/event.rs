//! The registry's vocabulary: what happens to a link, and the states a peer goes through.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// Something that happened to one socket's connections, in engine-neutral terms.
/// The engine module translates its monitor events into these; the registry's
/// state machine consumes them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A `bind` is listening.
    Listening {
        /// The bound endpoint (with the real port when `:0` or `*` was asked).
        endpoint: String,
    },
    /// The application asked to `connect` (emitted by zmesh, not the engine).
    Dialing {
        /// The endpoint being dialed.
        endpoint: String,
    },
    /// A peer connected to one of our bound endpoints.
    Accepted {
        /// Our bound endpoint.
        endpoint: String,
        /// The peer's transport address.
        remote: Option<String>,
        /// Engine connection id, unique within the socket.
        connection_id: u64,
    },
    /// An outgoing connection reached the peer; the handshake starts.
    Connected {
        /// The dialed endpoint.
        endpoint: String,
        /// The peer's transport address.
        remote: Option<String>,
        /// Engine connection id, unique within the socket.
        connection_id: u64,
    },
    /// The ZMTP handshake completed: the peer is ready for messages.
    HandshakeSucceeded {
        /// Endpoint of the connection.
        endpoint: String,
        /// Engine connection id.
        connection_id: u64,
        /// The peer's transport address.
        remote: Option<String>,
        /// Routing identity the peer declared, if any.
        identity: Option<Bytes>,
        /// Negotiated ZMTP version.
        zmtp_version: (u8, u8),
        /// Security mechanism (NULL, PLAIN, CURVE).
        mechanism: Option<String>,
        /// The authenticated user: PLAIN user name or CURVE public key.
        user: Option<String>,
    },
    /// The handshake failed (bad greeting, wrong mechanism, refused credentials, timeout).
    HandshakeFailed {
        /// Endpoint of the connection.
        endpoint: String,
        /// The peer's transport address.
        remote: Option<String>,
        /// Why, in the engine's words.
        reason: String,
    },
    /// A dial failed or a link dropped; the next attempt is scheduled.
    RetryScheduled {
        /// The dialed endpoint.
        endpoint: String,
        /// Wait before the next attempt.
        retry_in: Duration,
        /// One-based attempt count since the last success.
        attempt: u32,
    },
    /// Automatic reconnection stopped for good (the peer refused us fatally).
    GaveUp {
        /// The dialed endpoint.
        endpoint: String,
        /// Why.
        reason: CloseReason,
    },
    /// A connection closed.
    Disconnected {
        /// Endpoint of the connection.
        endpoint: String,
        /// Engine connection id.
        connection_id: u64,
        /// Why.
        reason: CloseReason,
    },
    /// The peer sent a ZMTP ERROR command.
    PeerError {
        /// Endpoint of the connection.
        endpoint: String,
        /// Engine connection id.
        connection_id: u64,
        /// The peer's reason text.
        reason: String,
    },
    /// The socket shut down.
    SocketClosed,
}

/// Why a connection closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the stream.
    PeerClosed,
    /// We closed it (socket close, disconnect).
    LocalClose,
    /// No traffic (not even a PONG) within the heartbeat timeout.
    HeartbeatTimeout,
    /// The peer refused our handshake (bad credentials, wrong mechanism).
    Refused(String),
    /// Another connection took over this routing identity.
    Handover,
    /// A protocol violation, an oversize message, or an I/O error.
    Error(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("peer closed the connection"),
            Self::LocalClose => f.write_str("closed locally"),
            Self::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            Self::Refused(r) => write!(f, "handshake refused: {r}"),
            Self::Handover => f.write_str("identity taken over by a new connection"),
            Self::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// The state of one peer link.
///
/// ```text
///  dial ──► Connecting ──► Handshaking ──► Active ──► Closed
///              ▲                │                       │
///              │                ▼ (failure)             │ (dialed peers only)
///              └─────────── BackingOff ◄────────────────┘
/// ```
/// Accepted (inbound) peers start at `Handshaking` and end at `Closed`; a dialed
/// peer is one long-lived entry that cycles until its socket closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Dialing the endpoint.
    Connecting,
    /// Transport up, ZMTP handshake (and authentication) in progress.
    Handshaking,
    /// Ready: messages flow, heartbeats supervise the link.
    Active,
    /// Waiting before the next reconnect attempt.
    BackingOff,
    /// Gone (for an accepted peer, for good).
    Closed,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connecting => "connecting",
            Self::Handshaking => "handshaking",
            Self::Active => "active",
            Self::BackingOff => "backing-off",
            Self::Closed => "closed",
        })
    }
}

/// Which way a link was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// We dialed it (`connect`).
    Outbound,
    /// It dialed us (`bind`).
    Inbound,
}

/// Message and byte counts, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Messages received.
    pub msgs_in: u64,
    /// Bytes received (frame payloads).
    pub bytes_in: u64,
    /// Messages sent.
    pub msgs_out: u64,
    /// Bytes sent (frame payloads).
    pub bytes_out: u64,
}

impl Traffic {
    /// `self - earlier`, saturating (counters only grow).
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            msgs_in: self.msgs_in.saturating_sub(earlier.msgs_in),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            msgs_out: self.msgs_out.saturating_sub(earlier.msgs_out),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
        }
    }
}

/// A peer's state changed: what the registry streams to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionEvent {
    /// Wall-clock time in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The socket's registry id.
    pub socket_id: u64,
    /// The socket's name.
    pub socket_name: String,
    /// The peer's key within the socket.
    pub peer: String,
    /// Endpoint of the link.
    pub endpoint: String,
    /// State before (None for a new peer).
    pub from: Option<PeerState>,
    /// State now.
    pub to: PeerState,
    /// Why, when there is a reason to give (errors, refusals, backoff delay).
    pub reason: Option<String>,
}
