//! Errors, each saying who is at fault: the caller, the peer, or the environment.

use std::time::Duration;

/// Everything a zmesh socket operation can fail with.
///
/// Variants are grouped by who must act: the **caller** (bad arguments, misuse),
/// the **peer** (it broke the protocol, refused us, sent too much), or the
/// **environment** (the network or the OS).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Caller: an endpoint string could not be parsed (`tcp://host:port`, `ipc://path`, `inproc://name`).
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Caller: an option value is out of range or options contradict each other.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// Caller: the operation is not allowed in the socket's current state
    /// (e.g. two sends in a row on REQ).
    #[error("not allowed now: {0}")]
    InvalidState(String),
    /// Caller: a message is larger than the socket's `max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Size of the message.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Environment or peer: the operation did not finish within its deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Environment: the send queue is at its high-water mark and the socket was asked not to wait.
    #[error("send queue full (high-water mark reached)")]
    QueueFull,
    /// Caller: the socket was closed.
    #[error("socket closed")]
    Closed,
    /// Peer: it broke the ZMTP protocol or refused our handshake.
    #[error("peer protocol error: {0}")]
    Peer(String),
    /// Caller: a ROUTER send named a peer that is not connected.
    #[error("no connected peer with that routing identity")]
    Unroutable,
    /// Environment: a socket-level I/O error (address in use, connection refused, ...).
    #[error("network error: {0}")]
    Network(String),
    /// Caller or peer: a payload could not be encoded or decoded by a codec.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
}

/// Shorthand for `Result<T, zmesh::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
