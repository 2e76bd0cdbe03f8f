//! What travels between nodes: one MessagePack frame per request and reply.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use serde::{Deserialize, Serialize};

use crate::propose::{Applied, ProposeError};
use crate::types::{Command, GroupId, NodeId, Types};

/// An RPC as it travels.
#[derive(Serialize, Deserialize)]
pub struct Request {
    /// The cluster the sender belongs to, and the node it means: a node
    /// refuses requests for another cluster or another node (a stale
    /// address, a misconfigured peer list), so no state crosses them.
    pub(crate) cluster: String,
    pub(crate) to: NodeId,
    pub(crate) id: u64,
    pub(crate) group: GroupId,
    pub(crate) rpc: Rpc,
}

#[derive(Serialize, Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<Types>),
    Vote(VoteRequest<Types>),
    PreVote(VoteRequest<Types>),
    Snapshot {
        vote: VoteOf<Types>,
        meta: SnapshotMetaOf<Types>,
        data: Vec<u8>,
    },
    TransferLeader(TransferLeaderRequest<Types>),
    /// A follower forwards a proposal to the leader.
    Propose(Command),
}

/// A reply as it travels.
#[derive(Serialize, Deserialize)]
pub struct Reply {
    pub(crate) id: u64,
    pub(crate) answer: Answer,
}

#[derive(Serialize, Deserialize)]
pub enum Answer {
    Append(AppendEntriesResponse<Types>),
    Vote(VoteResponse<Types>),
    Snapshot(SnapshotResponse<Types>),
    TransferLeader(TransferLeaderResponse<Types>),
    Proposed(Result<Applied, ProposeError>),
    /// The node could not serve the RPC: no such group here, or its Raft
    /// has stopped. The sender treats the node as unreachable.
    Refused {
        reason: String,
    },
}

/// A frame from a peer that does not decode: the peer is at fault (another
/// version, another program, or damage on the way).
#[derive(Debug, thiserror::Error)]
#[error("an undecodable cluster frame: {0}")]
pub struct WireError(String);

impl Request {
    pub fn new(cluster: &str, to: NodeId, id: u64, group: GroupId, rpc: Rpc) -> Request {
        Request {
            cluster: cluster.to_owned(),
            to,
            id,
            group,
            rpc,
        }
    }

    pub fn decode(frame: &[u8]) -> Result<Request, WireError> {
        rmp_serde::from_slice(frame).map_err(|e| WireError(e.to_string()))
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        rmp_serde::to_vec(self).map_err(|e| WireError(e.to_string()))
    }
}

impl Reply {
    pub fn new(id: u64, answer: Answer) -> Reply {
        Reply { id, answer }
    }

    /// The id of the request this answers.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn answer(&self) -> &Answer {
        &self.answer
    }

    pub fn decode(frame: &[u8]) -> Result<Reply, WireError> {
        rmp_serde::from_slice(frame).map_err(|e| WireError(e.to_string()))
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        rmp_serde::to_vec(self).map_err(|e| WireError(e.to_string()))
    }
}
