//! Publishes stored by the cluster: each node hands what its clients
//! publish to the shard group of their queue, a batch per shard at a time,
//! and applies every shard's committed batches in log order. A publish is
//! confirmed when the node that took it applies the batch holding it: a
//! quorum has it durable by then. The node serving a queue (leading its
//! shard) hands its decisions the same way: what was acked, dead-lettered,
//! dropped, purged or requeued, which every other node applies.
//!
//! One batch per shard is in flight at a time, so a shard's publishes are
//! committed in the order the node took them; what arrives meanwhile waits
//! and goes out as the next batch (within the queues' bound on bytes
//! waiting for storage, past which publishes are refused).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use zmesh_cluster::{ClusterNode, Command, Committed, GroupId, NodeId, ShardUpdate};

use super::Answering;
use super::snapshot::{self, ShardState};
use crate::queue::store::{
    Decision, QueueStore, Replicated, ReplicatedDecision, ReplicatedPublish,
};
use crate::storage::Sends;

/// Publishes and decisions in one batch at most. A publish's offset is its
/// entry's index shifted past `POSITION_BITS`, plus its position in the
/// batch.
pub const BATCH_PUBLISHES_MAX: usize = 4096;

/// Body bytes (and 8 to 12 per message a decision names) in one batch at most (a
/// batch holds at least one item, whatever its size).
pub const BATCH_BYTES_MAX: usize = 1 << 20;

const POSITION_BITS: u32 = 20;
const _: () = assert!(BATCH_PUBLISHES_MAX < 1 << POSITION_BITS);

/// What a shard's Raft entry holds for the queues.
#[derive(Debug, Serialize, Deserialize)]
struct ShardBatch {
    /// The node that took the publishes, and which start of it: a
    /// restarted node's tickets start over.
    node: NodeId,
    boot: u64,
    /// How far that node knew the catalog: a node applies the batch once
    /// its queues follow the catalog that far (its queues exist here).
    catalog_index: u64,
    publishes: Vec<ReplicatedPublish>,
    /// Applied after the publishes (a decision is about messages committed
    /// before: delivered, so applied).
    #[serde(default)]
    decisions: Vec<ReplicatedDecision>,
}

/// What waits for this node's queues to follow the catalog further.
enum Held {
    /// A committed batch at its index.
    Batch(u64, ShardBatch),
    /// A shard's state from a snapshot.
    Restore(GroupId, ShardState),
}

/// A batch proposal ended.
pub struct BatchDone {
    group: GroupId,
    tickets: Vec<u64>,
    /// `Err` with the reason when the batch may not have been stored.
    result: Result<(), String>,
}

/// The offset a publish committed at `index`, `position` has on every node.
fn offset_of(index: u64, position: usize) -> u64 {
    debug_assert!(position < BATCH_PUBLISHES_MAX);
    debug_assert!(
        index < 1 << (64 - POSITION_BITS),
        "the log is not that long"
    );
    (index << POSITION_BITS) | position as u64
}

pub struct Replication {
    node: Arc<ClusterNode>,
    boot: u64,
    /// Shards' committed batches (and snapshots), in log order per shard.
    committed: mpsc::Receiver<ShardUpdate>,
    /// A committed batch, or a shard's snapshot, that waits for this node's
    /// queues to follow the catalog (further updates wait behind it).
    held: Option<Held>,
    /// Publishes taken and decisions made, not yet proposed, per shard.
    waiting: BTreeMap<GroupId, VecDeque<Replicated>>,
    /// Shards with a batch proposal out.
    in_flight: BTreeSet<GroupId>,
    done_tx: mpsc::Sender<BatchDone>,
    done_rx: mpsc::Receiver<BatchDone>,
    /// Batches that would not decode (a bug, or a node of another version).
    pub undecodable: u64,
}

impl Replication {
    pub fn new(node: Arc<ClusterNode>) -> Replication {
        let committed = node
            .take_committed()
            .expect("a node's committed batches go to one broker");
        // One batch per shard is in flight: the channel never fills.
        let (done_tx, done_rx) = mpsc::channel(node.shards() as usize);
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Replication {
            node,
            boot,
            committed,
            held: None,
            waiting: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            done_tx,
            done_rx,
            undecodable: 0,
        }
    }

    /// Every publish taken has been proposed and its proposal has ended.
    pub fn settled(&self) -> bool {
        self.in_flight.is_empty() && self.waiting.values().all(VecDeque::is_empty)
    }

    /// A committed batch (none while one is held), or a proposal's end.
    pub async fn next(&mut self) -> Event {
        tokio::select! {
            Some(done) = self.done_rx.recv() => Event::Done(done),
            Some(update) = self.committed.recv(), if self.held.is_none() => match update {
                ShardUpdate::Committed(c) => Event::Committed(c),
                ShardUpdate::SnapshotWanted { group, reply } => Event::SnapshotWanted { group, reply },
                ShardUpdate::Restore { group, index, state } => Event::Restore { group, index, state },
            },
            else => std::future::pending().await,
        }
    }

    /// Queues `taken` (what the queues took and decided since the last
    /// call) and proposes a batch to each shard that has none in flight.
    /// `catalog_index`: how far this node knows the catalog;
    /// `declared_at`: the index that declared a queue, as far as known.
    pub fn propose(
        &mut self,
        taken: Vec<Replicated>,
        catalog_index: u64,
        declared_at: impl Fn(&str) -> u64,
    ) {
        for mut item in taken {
            item.set_declared_at(declared_at(item.queue()));
            let group = self.node.shard_of(item.queue());
            self.waiting.entry(group).or_default().push_back(item);
        }
        let ready: Vec<GroupId> = self
            .waiting
            .iter()
            .filter(|(g, w)| !w.is_empty() && !self.in_flight.contains(g))
            .map(|(g, _)| *g)
            .collect();
        for group in ready {
            self.propose_batch(group, catalog_index);
        }
    }

    fn propose_batch(&mut self, group: GroupId, catalog_index: u64) {
        let waiting = self.waiting.entry(group).or_default();
        let (mut publishes, mut decisions) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        while let Some(item) = waiting.front() {
            let size = match item {
                Replicated::Publish(p) => p.body.len(),
                Replicated::Decision(d) => match &d.decision {
                    Decision::Settle { offsets, .. } => 8 * offsets.len(),
                    Decision::Deliver { delivered } => 12 * delivered.len(),
                    Decision::Requeue { .. } => 8,
                },
            };
            let items = publishes.len() + decisions.len();
            if items >= BATCH_PUBLISHES_MAX || (items > 0 && bytes + size > BATCH_BYTES_MAX) {
                break;
            }
            bytes += size;
            match waiting.pop_front().expect("looked at") {
                Replicated::Publish(p) => publishes.push(p),
                Replicated::Decision(d) => decisions.push(d),
            }
        }
        let tickets: Vec<u64> = publishes.iter().map(|p| p.ticket).collect();
        let batch = ShardBatch {
            node: self.node.node_id(),
            boot: self.boot,
            catalog_index,
            publishes,
            decisions,
        };
        let payload = Bytes::from(rmp_serde::to_vec(&batch).expect("a batch encodes"));
        self.in_flight.insert(group);
        let node = self.node.clone();
        let mut answering = Answering {
            decided: Some(BatchDone {
                group,
                tickets,
                result: Err("the proposal ended without an answer".into()),
            }),
            tx: self.done_tx.clone(),
        };
        tokio::spawn(async move {
            let result = node.propose_in(group, Command::Batch { payload }).await;
            if let Some(done) = answering.decided.as_mut() {
                done.result = result.map(|_| ()).map_err(|e| format!("cluster: {e}"));
            }
        });
    }

    /// A proposal ended: a failed one's publishes still waiting are
    /// refused, and the shard's next batch goes out.
    pub fn done(&mut self, done: BatchDone, queues: &mut QueueStore, catalog_index: u64) -> Sends {
        self.in_flight.remove(&done.group);
        let mut sends = Vec::new();
        if let Err(reason) = &done.result {
            tracing::warn!(group = done.group, "a batch of publishes failed: {reason}");
            sends = queues.replication_failed(&done.tickets, reason);
        }
        if self.waiting.get(&done.group).is_some_and(|w| !w.is_empty()) {
            self.propose_batch(done.group, catalog_index);
        }
        sends
    }

    /// A shard committed a batch: applied now if this node's queues follow
    /// the catalog as far as its proposer did (`followed_index`), else held
    /// until [`Replication::release`] finds they do.
    pub fn committed(
        &mut self,
        committed: Committed,
        queues: &mut QueueStore,
        followed: &Followed,
    ) -> Sends {
        let batch: ShardBatch = match rmp_serde::from_slice(&committed.payload) {
            Ok(b) => b,
            Err(e) => {
                self.undecodable += 1;
                tracing::error!(
                    group = committed.group,
                    index = committed.index,
                    "a committed batch does not decode and is skipped: {e}"
                );
                return Vec::new();
            }
        };
        if batch.catalog_index > followed.index {
            self.held = Some(Held::Batch(committed.index, batch));
            return Vec::new();
        }
        self.apply(committed.index, batch, queues, followed)
    }

    /// openraft takes a snapshot of `group`: answered with the state of its
    /// queues here (everything committed before is applied by now).
    pub fn snapshot_wanted(
        &self,
        group: GroupId,
        reply: oneshot::Sender<Bytes>,
        queues: &QueueStore,
        followed: &Followed,
    ) {
        if let Some(state) = snapshot::take(&self.node, group, queues, followed) {
            let _ = reply.send(Bytes::from(state));
        }
    }

    /// `group`'s state up to entry `index` comes from a snapshot: its queues
    /// here are replaced with it, once they follow the catalog as far as
    /// the node that took it.
    pub fn restore(
        &mut self,
        group: GroupId,
        index: u64,
        state: &[u8],
        queues: &mut QueueStore,
        followed: &Followed,
    ) -> Sends {
        let state: ShardState = match rmp_serde::from_slice(state) {
            Ok(s) => s,
            Err(e) => {
                self.undecodable += 1;
                tracing::error!(group, index, "a shard's snapshot does not decode: {e}");
                return Vec::new();
            }
        };
        tracing::info!(group, index, "restoring the shard's queues from a snapshot");
        if state.catalog_index > followed.index {
            self.held = Some(Held::Restore(group, state));
            return Vec::new();
        }
        snapshot::restore(&self.node, group, &state, queues, followed)
    }

    /// The queues followed the catalog to `followed_index`: a batch held for
    /// that is applied.
    pub fn release(&mut self, queues: &mut QueueStore, followed: &Followed) -> Sends {
        match self.held.take() {
            Some(Held::Batch(index, batch)) if batch.catalog_index <= followed.index => {
                self.apply(index, batch, queues, followed)
            }
            Some(Held::Restore(group, state)) if state.catalog_index <= followed.index => {
                snapshot::restore(&self.node, group, &state, queues, followed)
            }
            held => {
                self.held = held;
                Vec::new()
            }
        }
    }

    fn apply(
        &mut self,
        index: u64,
        batch: ShardBatch,
        queues: &mut QueueStore,
        followed: &Followed,
    ) -> Sends {
        let mine = batch.node == self.node.node_id() && batch.boot == self.boot;
        let mut sends = Vec::new();
        for (position, publish) in batch.publishes.into_iter().enumerate() {
            // Published to a declaration of the queue that is gone: every
            // node skips it alike, and its publisher hears so.
            let here = followed.declared_at(&publish.queue);
            if publish.declared_at != 0 && here != 0 && publish.declared_at != here {
                if mine {
                    sends.extend(queues.replication_failed(
                        &[publish.ticket],
                        "the queue was deleted and declared again meanwhile",
                    ));
                }
                continue;
            }
            sends.extend(queues.apply_committed(offset_of(index, position), publish, mine));
        }
        // This node's own decisions were applied when it took them.
        for decided in batch.decisions.into_iter().filter(|_| !mine) {
            let here = followed.declared_at(&decided.queue);
            if decided.declared_at != 0 && here != 0 && decided.declared_at != here {
                continue;
            }
            queues.apply_decision(decided);
        }
        sends
    }
}

/// How far this node's queues follow the catalog.
pub struct Followed<'a> {
    /// The catalog index followed.
    pub index: u64,
    /// The catalog's records as followed.
    pub queues: &'a BTreeMap<String, zmesh_cluster::QueueRecord>,
}

impl Followed<'_> {
    /// The index that declared `queue` here (0: not known).
    pub fn declared_at(&self, queue: &str) -> u64 {
        self.queues.get(queue).map_or(0, |r| r.declared_at_index)
    }
}

/// What the replication has for the loop.
pub enum Event {
    Committed(Committed),
    Done(BatchDone),
    /// A shard's snapshot is being taken: answer with its queues' state.
    SnapshotWanted {
        group: GroupId,
        reply: oneshot::Sender<Bytes>,
    },
    /// A shard's queues are replaced by a snapshot's state, at `index`.
    Restore {
        group: GroupId,
        index: u64,
        state: Bytes,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed payload is bytes from peers: whatever they are, decoding
    /// answers (an error is counted and the batch skipped), never panics.
    #[test]
    fn batches_decode_or_fail_cleanly() {
        let batch = ShardBatch {
            node: 2,
            boot: 7,
            catalog_index: 3,
            publishes: vec![ReplicatedPublish {
                ticket: 1,
                queue: "jobs".into(),
                published_ms: 5,
                msg_id: Bytes::from_static(b"m-1"),
                body: Bytes::from_static(b"hello"),
                declared_at: 3,
                dead_letter: false,
            }],
            decisions: vec![ReplicatedDecision {
                queue: "jobs".into(),
                declared_at: 3,
                decision: Decision::Settle {
                    reason: crate::queue::journal::SettleReason::Acked,
                    offsets: vec![1 << 20, 2 << 20],
                },
            }],
        };
        let encoded = rmp_serde::to_vec(&batch).unwrap();
        let back: ShardBatch = rmp_serde::from_slice(&encoded).unwrap();
        assert_eq!(back.publishes, batch.publishes);
        assert_eq!(back.decisions, batch.decisions);
        for cut in 0..encoded.len() {
            assert!(rmp_serde::from_slice::<ShardBatch>(&encoded[..cut]).is_err());
        }
        let mut rng = zmesh_testkit::rng::SeededRng::new(28);
        let alphabet: Vec<u8> = (0..=255).collect();
        for _ in 0..10_000 {
            let mut bytes = encoded.clone();
            let at = (rng.next_u64() % bytes.len() as u64) as usize;
            bytes[at] = rng.next_u64() as u8;
            let _ = rmp_serde::from_slice::<ShardBatch>(&bytes);
            let _ = rmp_serde::from_slice::<ShardBatch>(&rng.bytes(&alphabet, 64));
        }
    }

    #[test]
    fn offsets_keep_log_order() {
        assert!(offset_of(1, BATCH_PUBLISHES_MAX - 1) < offset_of(2, 0));
        assert!(offset_of(7, 0) < offset_of(7, 1));
    }
}
