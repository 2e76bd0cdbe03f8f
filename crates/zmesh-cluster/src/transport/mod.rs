//! openraft's RPCs over ZMTP: a DEALER per peer node, shared by every group,
//! to that node's ROUTER on its cluster endpoint.
//!
//! Each request and each reply is one frame of MessagePack. A request names
//! its group and carries an id the reply repeats, so replies may come in any
//! order and a reply to a request whose caller gave up is dropped.

mod link;
mod server;
mod wire;

use std::time::Duration;

use zmesh::SocketOptions;

pub(crate) use link::{CallError, Links};
pub(crate) use server::{Groups, Me, Server, ServesRpc};
pub use wire::{Answer, Reply, Request, Rpc, WireError};

/// Requests a link holds before its task takes them: a caller past this
/// hears `Unreachable` at once rather than queueing behind a dead peer.
const LINK_QUEUE_MAX: usize = 256;
/// The largest RPC a node takes (a snapshot travels whole).
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Socket settings for cluster traffic: heartbeats find a frozen peer, and
/// reconnects are quick, since a node restarting is what failover waits for.
fn cluster_socket_options() -> SocketOptions {
    SocketOptions::default()
        .heartbeat_interval(Duration::from_millis(250))
        .heartbeat_timeout(Duration::from_secs(1))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .max_message_size(Some(MESSAGE_BYTES_MAX))
        .send_hwm(LINK_QUEUE_MAX as u32)
}
