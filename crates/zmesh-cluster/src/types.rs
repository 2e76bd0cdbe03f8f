//! The types every Raft group of a zmesh cluster shares: one type config, so
//! one transport carries all groups' RPCs (tagged with their group).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// zmesh's Raft type config: node ids are numbers, a node's address is its
    /// cluster endpoint (`tcp://host:port`).
    pub Types:
        D = Command,
        R = Outcome,
);

/// Which Raft group a message belongs to. Group 0 is the metadata group (the
/// catalog); queue shards come after it.
pub type GroupId = u32;

/// The metadata group.
pub const METADATA_GROUP: GroupId = 0;

/// A node's id in the cluster, as configured (`--node-id`).
pub type NodeId = u64;

/// A change to replicated state, proposed by a leader and applied on every
/// node in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Declare a queue. `options` is the broker's canonical encoding of the
    /// queue's options: the catalog compares it and keeps it, never reads it.
    /// Without `exact`, a queue that exists is fine whatever its options (a
    /// client that named none); `options` are used only to create it.
    DeclareQueue {
        name: String,
        options: Vec<u8>,
        exact: bool,
    },
    /// Delete a queue, if it exists.
    DeleteQueue { name: String },
    /// A batch of a shard's records, in the application's encoding: the
    /// cluster orders and replicates it, never reads it.
    Batch { payload: Bytes },
    /// Where clients reach `node` (its broker's endpoint, not its cluster
    /// endpoint): a node that does not serve a request names the one that
    /// does.
    AdvertiseNode {
        node: NodeId,
        client_endpoint: String,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::DeclareQueue { name, .. } => write!(f, "declare queue {name:?}"),
            Command::DeleteQueue { name } => write!(f, "delete queue {name:?}"),
            Command::Batch { payload } => write!(f, "a batch of {} bytes", payload.len()),
            Command::AdvertiseNode {
                node,
                client_endpoint,
            } => write!(f, "node {node} serves clients on {client_endpoint:?}"),
        }
    }
}

/// What applying a [`Command`] did; the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The queue is new, with these options.
    Created { options: Vec<u8> },
    /// The queue existed, with these options (the same, unless the command
    /// was not `exact`).
    AlreadyDeclared { options: Vec<u8> },
    /// The queue exists with other options; nothing changed.
    Conflict,
    /// The catalog holds as many queues as it may; nothing changed.
    CatalogFull,
    /// The queue was deleted.
    Deleted,
    /// There was no such queue.
    NotFound,
    /// An entry that is not a command (a membership change) was applied.
    Noted,
    /// A shard's batch was handed to the application.
    Batched,
    /// The command belongs to another kind of group; nothing changed.
    WrongGroup,
    /// The node's client endpoint is recorded.
    Advertised,
    /// The command was refused as it stands (a limit); nothing changed.
    Refused { reason: String },
}
