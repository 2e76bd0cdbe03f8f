//! A shard group's state machine: committed batches handed to the
//! application (the broker) in log order.
//!
//! A shard replicates batches of queue records the cluster never reads. The
//! state they build lives in the application, which applies each batch as
//! it arrives; this machine only remembers how far it got. It is in memory:
//! a restarted node applies its shards' logs again from the start, into an
//! application that starts empty. Shard snapshots are not built yet, so a
//! shard's log is never purged (`docs/cluster.md`, known gaps).

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::mpsc;

use crate::types::{Command, GroupId, NodeId, Outcome, Types};

/// Committed batches waiting for the application, over all shards: past it,
/// applying waits (and so do confirms), while replication goes on.
pub const COMMITTED_QUEUE_MAX: usize = 64;

/// One committed batch of a shard, in log order within its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub group: GroupId,
    /// The Raft index of its entry: the same on every node.
    pub index: u64,
    /// What the proposer put in [`Command::Batch`] (empty with
    /// `leader_from_here`).
    pub payload: Bytes,
    /// On the first entry of a leader's term (openraft's blank entry, which
    /// holds no batch): that leader. Every entry before it has been handed
    /// over by then, so a leader that gets its own knows it has everything
    /// committed before its term.
    pub leader_from_here: Option<NodeId>,
}

/// A shard group's state machine (openraft's `RaftStateMachine`).
#[derive(Clone)]
pub struct ShardMachine {
    group: GroupId,
    applied: Arc<Mutex<Applied>>,
    to_application: mpsc::Sender<Committed>,
}

#[derive(Default)]
struct Applied {
    last: Option<LogIdOf<Types>>,
    membership: StoredMembershipOf<Types>,
}

impl ShardMachine {
    /// Waits while the application is behind. Once it has stopped, nothing
    /// applies anything any more.
    async fn hand_over(&self, committed: Committed) -> Result<(), io::Error> {
        self.to_application
            .send(committed)
            .await
            .map_err(|_| io::Error::other("the application stopped"))
    }

    /// A shard that hands what it commits to `to_application`.
    pub fn new(group: GroupId, to_application: mpsc::Sender<Committed>) -> ShardMachine {
        ShardMachine {
            group,
            applied: Arc::new(Mutex::new(Applied::default())),
            to_application,
        }
    }
}

/// Shards build no snapshots yet: openraft is configured never to ask.
fn no_snapshots() -> io::Error {
    io::Error::other("shard groups keep no snapshots")
}

impl RaftSnapshotBuilder<Types> for ShardMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Types, Self::SnapshotData>, io::Error> {
        Err(no_snapshots())
    }
}

impl RaftStateMachine<Types> for ShardMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = ShardMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>), io::Error> {
        let applied = self.applied.lock().expect("shard lock");
        Ok((applied.last, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm:
            futures::Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let log_id = entry.log_id();
            let outcome = match entry.payload {
                EntryPayload::Normal(Command::Batch { payload }) => {
                    let committed = Committed {
                        group: self.group,
                        index: log_id.index,
                        payload,
                        leader_from_here: None,
                    };
                    self.hand_over(committed).await?;
                    Outcome::Batched
                }
                // Catalog commands belong to the metadata group: a peer that
                // sends one here is answered, and nothing changes.
                EntryPayload::Normal(_) => Outcome::WrongGroup,
                EntryPayload::Blank => {
                    let committed = Committed {
                        group: self.group,
                        index: log_id.index,
                        payload: Bytes::new(),
                        leader_from_here: Some(log_id.committed_leader_id().node_id),
                    };
                    self.hand_over(committed).await?;
                    Outcome::Noted
                }
                EntryPayload::Membership(m) => {
                    let mut applied = self.applied.lock().expect("shard lock");
                    applied.membership = StoredMembershipOf::<Types>::new(Some(log_id), m);
                    Outcome::Noted
                }
            };
            {
                let mut applied = self.applied.lock().expect("shard lock");
                debug_assert!(
                    applied
                        .last
                        .as_ref()
                        .is_none_or(|last| last.index < log_id.index),
                    "entries are applied in log order, each once"
                );
                applied.last = Some(log_id);
            }
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf<Types>,
        _snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<Types, Self::SnapshotData>>, io::Error> {
        Ok(None)
    }
}

/// The shard group a queue lives in, of `shards` (groups 1 to `shards`): a
/// hash of its name every node and every version computes alike (FNV-1a).
pub fn shard_of(queue: &str, shards: u32) -> GroupId {
    debug_assert!(shards > 0, "a cluster has at least one shard");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in queue.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    1 + (hash % u64::from(shards.max(1))) as GroupId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable_and_in_range() {
        // Fixed values: a change here would move queues between shards.
        assert_eq!(shard_of("orders", 3), 2);
        assert_eq!(shard_of("payments", 3), 2);
        assert_eq!(shard_of("q", 3), 3);
        assert_eq!(shard_of("orders", 64), 13);
        let spread: std::collections::BTreeSet<GroupId> =
            (0..100).map(|i| shard_of(&format!("q{i}"), 3)).collect();
        assert_eq!(spread, [1, 2, 3].into_iter().collect());
        assert_eq!(shard_of("anything", 1), 1);
    }
}
