//! Proposing a command: on the leader, and forwarded to it from a follower.

use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardReason, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};

use crate::types::{Command, NodeId, Outcome, Types};

/// How long a write may take to apply on the leader before its proposer
/// hears that its fate is unknown.
pub(crate) const PROPOSE_LIMIT: Duration = Duration::from_secs(5);

/// A proposal applied: what it did, and the index of its entry (a node's
/// catalog that has applied this index includes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub outcome: Outcome,
    pub index: u64,
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// No node could take it: `leader` is the leader this node knows of
    /// (id and cluster endpoint), if any.
    #[error("no leader took the proposal; the leader is {leader:?}")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The proposal went out and its fate is not known (the leader changed or
    /// stopped answering while it was in flight): it may have been applied.
    #[error("the proposal's fate is unknown; it may have been applied: {reason}")]
    Unknown { reason: String },
    /// The leader could not be reached; nothing was proposed.
    #[error("the leader, node {leader}, cannot be reached: {reason}")]
    LeaderUnreachable { leader: NodeId, reason: String },
    /// The node has stopped.
    #[error("the node has stopped: {0}")]
    Stopped(String),
}

/// Proposes `command` to the group `raft` leads; answers once it is applied
/// here (a quorum has it durable).
///
/// A leader takes writes only while a quorum has acknowledged it within its
/// lease; one just elected has not yet, so a refusal for that reason waits
/// for the next acknowledgement and tries again, within one election timeout.
/// A leader cut off from its quorum keeps refusing, and the caller hears
/// `NotLeader` without a leader.
pub(crate) async fn propose_here<SM>(
    raft: &Raft<Types, SM>,
    command: Command,
) -> Result<Applied, ProposeError>
where
    SM: RaftStateMachine<Types>,
{
    let lease_wait = Duration::from_millis(raft.config().election_timeout_max);
    let deadline = tokio::time::Instant::now() + lease_wait;
    loop {
        let refused_at = <openraft::TokioInstant as openraft::Instant>::now();
        let written = tokio::time::timeout(PROPOSE_LIMIT, raft.client_write(command.clone()));
        let Ok(written) = written.await else {
            // A leader cut off from its quorum holds a write until it steps
            // down, if it ever does: the caller hears, in bounded time.
            return Err(ProposeError::Unknown {
                reason: format!("not applied within {PROPOSE_LIMIT:?}"),
            });
        };
        let forward = match written {
            Ok(response) => {
                return Ok(Applied {
                    outcome: response.data,
                    index: response.log_id.index,
                });
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f,
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => {
                return Err(ProposeError::Unknown {
                    reason: f.to_string(),
                });
            }
            Err(e) => return Err(ProposeError::Stopped(e.to_string())),
        };
        let not_leader = ProposeError::NotLeader {
            leader: forward.leader_id.zip(forward.leader_node.map(|n| n.addr)),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if forward.reason != ForwardReason::LeaseExpired || left.is_zero() {
            return Err(not_leader);
        }
        let acknowledged = raft
            .wait(Some(left))
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.last_quorum_acked
                            .as_ref()
                            .is_some_and(|t| **t > refused_at)
                },
                "a quorum acknowledges the leader",
            )
            .await;
        if acknowledged.is_err() {
            return Err(not_leader);
        }
    }
}
