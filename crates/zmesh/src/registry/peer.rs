//! What the table says about one peer: its key, its snapshot, a change of
//! its state.

use serde::Serialize;

use super::event::{Direction, PeerState, Traffic};

/// Key of a peer within one socket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// A dialed endpoint.
    Dialed(String),
    /// An accepted connection.
    Accepted(u64),
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dialed(ep) => write!(f, "out:{ep}"),
            Self::Accepted(id) => write!(f, "in:#{id}"),
        }
    }
}

/// What the registry knows about one peer. Returned by snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerSnapshot {
    /// Key within the socket (`out:<endpoint>` or `in:#<connection id>`).
    pub key: String,
    /// Who dialed.
    pub direction: Direction,
    /// Endpoint of the link (dialed, or our bound one).
    pub endpoint: String,
    /// The peer's transport address.
    pub remote_addr: Option<String>,
    /// Routing identity the peer declared (UTF-8 if printable, else hex).
    pub identity: Option<String>,
    /// Security mechanism of the current link.
    pub mechanism: Option<String>,
    /// Authenticated user of the current link.
    pub user: Option<String>,
    /// Negotiated ZMTP version, e.g. "3.1".
    pub zmtp_version: Option<String>,
    /// Current state.
    pub state: PeerState,
    /// When the current state began (ms since the Unix epoch).
    pub since_ms: u64,
    /// Engine id of the current or last connection.
    pub connection_id: Option<u64>,
    /// Times a dialed peer became active again after its first time.
    pub reconnects: u64,
    /// Current reconnect attempt (0 when connected).
    pub attempt: u32,
    /// Wait before the next attempt, while backing off.
    pub retry_in_ms: Option<u64>,
    /// Handshakes that failed.
    pub handshake_failures: u64,
    /// Links closed because heartbeats stopped.
    pub heartbeat_timeouts: u64,
    /// Last error or refusal, in words.
    pub last_error: Option<String>,
    /// Last time the link was known alive: while active, each registry tick
    /// confirms it (the engine closes a link whose heartbeats stop).
    pub last_seen_ms: Option<u64>,
    /// Messages and bytes this peer sent and received (see `traffic_exact`).
    pub traffic: Traffic,
    /// Whether `traffic` is complete: true while this peer has been the
    /// socket's only active link; false once links shared the socket.
    pub traffic_exact: bool,
}

/// A state change to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// Which peer.
    pub peer: PeerKey,
    /// Its endpoint.
    pub endpoint: String,
    /// Previous state (None for a new entry).
    pub from: Option<PeerState>,
    /// New state.
    pub to: PeerState,
    /// Why, when it matters.
    pub reason: Option<String>,
}
