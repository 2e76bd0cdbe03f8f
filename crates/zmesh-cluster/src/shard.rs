//! A shard group's state machine: committed batches handed to the
//! application (the broker) in log order.
//!
//! A shard replicates batches of queue records the cluster never reads. The
//! state they build lives in the application, which applies each batch as
//! it arrives; this machine remembers how far it got. A snapshot is the
//! application's own encoding of its state of the shard, asked of it in log
//! order ([`ShardUpdate::SnapshotWanted`]), so it holds exactly the entries
//! handed over before. It is kept in one file, written before openraft may
//! purge the log below it. A node restarted after a purge, or a follower
//! sent a leader's snapshot, hands it over as [`ShardUpdate::Restore`]
//! before the entries that follow it.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::node::SHARDS_MAX;
use crate::snapshot_file::{self, SnapshotFileError, StoredSnapshot};
use crate::types::{Command, GroupId, NodeId, Outcome, Types};

/// Updates waiting for the application, over all shards: past it, applying
/// waits (and so do confirms), while replication goes on.
pub const COMMITTED_QUEUE_MAX: usize = 64;

// At start-up every shard hands its snapshot over before the application
// reads any: they must all fit.
const _: () = assert!(COMMITTED_QUEUE_MAX >= SHARDS_MAX as usize);

/// The snapshot file in a shard's directory.
const SNAPSHOT_FILE: &str = "shard.snapshot";

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

/// What a node's shards hand the application, in log order per shard.
#[derive(Debug)]
pub enum ShardUpdate {
    Committed(Committed),
    /// The shard's state up to entry `index`, as the application encoded it
    /// for a snapshot: it replaces whatever the application holds of the
    /// shard. The shard's entries after `index` follow.
    Restore {
        group: GroupId,
        index: u64,
        state: Bytes,
    },
    /// openraft takes a snapshot: the application answers with its state of
    /// the shard, encoded, once it has applied every update handed over
    /// before this one (it applies them in order, so at once). The shard's
    /// next entries wait for nothing.
    SnapshotWanted {
        group: GroupId,
        reply: oneshot::Sender<Bytes>,
    },
}

/// A shard group's state machine (openraft's `RaftStateMachine`). Clones
/// share the state: openraft holds one, and its snapshot builder another.
#[derive(Clone)]
pub struct ShardMachine {
    group: GroupId,
    /// Held while handing over, so that what the application is given and
    /// what this machine says it applied never differ.
    inner: Arc<Mutex<Inner>>,
    snapshot_path: PathBuf,
}

struct Inner {
    last: Option<LogIdOf<Types>>,
    membership: StoredMembershipOf<Types>,
    /// The index of the snapshot kept on disk.
    snapshot_index: Option<u64>,
    /// The snapshot read at start-up, until the application has it: it goes
    /// before anything else.
    restore: Option<ShardUpdate>,
    to_application: mpsc::Sender<ShardUpdate>,
}

impl Inner {
    /// Waits while the application is behind. Once it has stopped, nothing
    /// applies anything any more.
    async fn hand_over(&mut self, update: ShardUpdate) -> Result<(), io::Error> {
        if let Some(restore) = self.restore.take() {
            self.send(restore).await?;
        }
        self.send(update).await
    }

    async fn send(&self, update: ShardUpdate) -> Result<(), io::Error> {
        self.to_application
            .send(update)
            .await
            .map_err(|_| io::Error::other("the application stopped"))
    }

    /// Keeps `stored` as the snapshot on disk, unless a newer one is kept.
    async fn keep(&mut self, path: &Path, stored: StoredSnapshot) -> Result<bool, io::Error> {
        let index = stored.meta.last_log_id.map(|id| id.index);
        if self.snapshot_index.is_some() && self.snapshot_index >= index {
            return Ok(false);
        }
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || snapshot_file::write(&path, &stored))
            .await
            .map_err(io::Error::other)??;
        self.snapshot_index = index;
        Ok(true)
    }
}

impl ShardMachine {
    /// The shard `group` kept in `dir`, handing what it commits to
    /// `to_application`: from its snapshot if it has one, which
    /// [`ShardMachine::hand_over_restored`] gives the application first.
    pub fn open(
        group: GroupId,
        dir: &Path,
        to_application: mpsc::Sender<ShardUpdate>,
    ) -> Result<ShardMachine, SnapshotFileError> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let mut inner = Inner {
            last: None,
            membership: StoredMembershipOf::<Types>::default(),
            snapshot_index: None,
            restore: None,
            to_application,
        };
        if let Some(stored) = snapshot_file::read(&snapshot_path)? {
            inner.last = stored.meta.last_log_id;
            inner.membership = stored.meta.last_membership.clone();
            inner.snapshot_index = stored.meta.last_log_id.map(|id| id.index);
            inner.restore = Some(ShardUpdate::Restore {
                group,
                index: inner.snapshot_index.unwrap_or(0),
                state: Bytes::from(stored.data),
            });
        }
        Ok(ShardMachine {
            group,
            inner: Arc::new(Mutex::new(inner)),
            snapshot_path,
        })
    }

    /// Hands the snapshot read at start-up to the application, if it has
    /// not had it yet.
    pub async fn hand_over_restored(&self) -> Result<(), io::Error> {
        let mut inner = self.inner.lock().await;
        match inner.restore.take() {
            Some(restore) => inner.send(restore).await,
            None => Ok(()),
        }
    }
}

impl RaftSnapshotBuilder<Types> for ShardMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Types, Self::SnapshotData>, io::Error> {
        let (meta, answer) = {
            let mut inner = self.inner.lock().await;
            let (reply, answer) = oneshot::channel();
            inner
                .hand_over(ShardUpdate::SnapshotWanted {
                    group: self.group,
                    reply,
                })
                .await?;
            let meta = SnapshotMetaOf::<Types> {
                last_log_id: inner.last,
                last_membership: inner.membership.clone(),
            };
            (meta, answer)
        };
        // Entries go on being applied meanwhile; the answer holds those
        // handed over before the question, which `meta` names.
        let state = answer
            .await
            .map_err(|_| io::Error::other("the application stopped"))?;
        let data = state.to_vec();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.inner
            .lock()
            .await
            .keep(&self.snapshot_path, stored)
            .await?;
        Ok(SnapshotOf::<Types, _> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<Types> for ShardMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = ShardMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>), io::Error> {
        let inner = self.inner.lock().await;
        Ok((inner.last, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm:
            futures::Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let log_id = entry.log_id();
            let mut inner = self.inner.lock().await;
            let outcome = match entry.payload {
                EntryPayload::Normal(Command::Batch { payload }) => {
                    let committed = Committed {
                        group: self.group,
                        index: log_id.index,
                        payload,
                        leader_from_here: None,
                    };
                    inner.hand_over(ShardUpdate::Committed(committed)).await?;
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
                    inner.hand_over(ShardUpdate::Committed(committed)).await?;
                    Outcome::Noted
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembershipOf::<Types>::new(Some(log_id), m);
                    Outcome::Noted
                }
            };
            debug_assert!(
                inner
                    .last
                    .as_ref()
                    .is_none_or(|last| last.index < log_id.index),
                "entries are applied in log order, each once"
            );
            inner.last = Some(log_id);
            drop(inner);
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
        meta: &SnapshotMetaOf<Types>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let mut inner = self.inner.lock().await;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        inner.keep(&self.snapshot_path, stored).await?;
        // The leader's state replaces the one read at start-up.
        inner.restore = None;
        inner
            .hand_over(ShardUpdate::Restore {
                group: self.group,
                index: meta.last_log_id.map_or(0, |id| id.index),
                state: Bytes::from(data),
            })
            .await?;
        inner.last = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<Types, Self::SnapshotData>>, io::Error> {
        let inner = self.inner.lock().await;
        if inner.snapshot_index.is_none() {
            return Ok(None);
        }
        let path = self.snapshot_path.clone();
        let stored = tokio::task::spawn_blocking(move || snapshot_file::read(&path))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        Ok(stored.map(|s| SnapshotOf::<Types, _> {
            meta: s.meta,
            snapshot: Cursor::new(s.data),
        }))
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
