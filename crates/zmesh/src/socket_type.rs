//! The ZeroMQ socket types zmesh speaks (ZMTP 3.x, RFC 23/37).

use std::fmt;
use std::str::FromStr;

/// A ZeroMQ socket type. Peers must be a valid pair (RFC 23 §"Socket types"):
/// REQ↔REP/ROUTER, DEALER↔REP/DEALER/ROUTER, PUB↔SUB/XSUB, PUSH↔PULL, PAIR↔PAIR.
///
/// ```
/// let t: zmesh::SocketType = "dealer".parse().unwrap();
/// assert_eq!(t, zmesh::SocketType::Dealer);
/// assert_eq!(t.to_string(), "DEALER");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketType {
    /// Synchronous request: send, then receive, in lockstep.
    Req,
    /// Synchronous reply: receive, then send.
    Rep,
    /// Asynchronous request: round-robin out, fair-queued in.
    Dealer,
    /// Asynchronous reply: every message carries its peer's routing identity first.
    Router,
    /// Publish to all matching subscribers; drops at the high-water mark, never blocks.
    Pub,
    /// Subscribe by prefix.
    Sub,
    /// PUB that also passes subscriptions up to the application.
    XPub,
    /// SUB whose subscriptions are sent as messages.
    XSub,
    /// Pipeline sender: round-robin to connected PULLs; blocks at the high-water mark.
    Push,
    /// Pipeline receiver: fair-queued.
    Pull,
    /// Exclusive pair: exactly one peer.
    Pair,
}

impl SocketType {
    /// Every socket type, in the order the CLI lists them.
    pub const ALL: [SocketType; 11] = [
        Self::Req,
        Self::Rep,
        Self::Dealer,
        Self::Router,
        Self::Pub,
        Self::Sub,
        Self::XPub,
        Self::XSub,
        Self::Push,
        Self::Pull,
        Self::Pair,
    ];

    /// The name used on the wire (the `Socket-Type` READY property).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Req => "REQ",
            Self::Rep => "REP",
            Self::Dealer => "DEALER",
            Self::Router => "ROUTER",
            Self::Pub => "PUB",
            Self::Sub => "SUB",
            Self::XPub => "XPUB",
            Self::XSub => "XSUB",
            Self::Push => "PUSH",
            Self::Pull => "PULL",
            Self::Pair => "PAIR",
        }
    }

    /// Whether the socket type can send application messages.
    pub fn can_send(self) -> bool {
        !matches!(self, Self::Sub | Self::Pull)
    }

    /// Whether the socket type can receive application messages.
    pub fn can_recv(self) -> bool {
        !matches!(self, Self::Pub | Self::Push)
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string named no ZeroMQ socket type.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown socket type {0:?} (expected one of req, rep, dealer, router, pub, sub, xpub, xsub, push, pull, pair)"
)]
pub struct UnknownSocketType(pub String);

impl FromStr for SocketType {
    type Err = UnknownSocketType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSocketType(s.to_owned()))
    }
}
