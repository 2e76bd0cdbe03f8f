//! The store's half of a queue in a cluster: publishes handed to the
//! cluster instead of the journal, and committed ones applied back.

use bytes::Bytes;

use super::super::core::{NotInMemory, QueueAction, QueueSnapshot, Served};
use super::super::journal;
use super::{QueueStore, Sends};

/// A publish that a cluster stores: what its shard group replicates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicatedPublish {
    /// The core's ticket on the node that took it.
    pub ticket: u64,
    pub queue: String,
    /// Wall-clock time of the publish, for TTL on every node.
    pub published_ms: u64,
    pub msg_id: Bytes,
    pub body: Bytes,
    /// Which declaration of the queue it was published to: the catalog
    /// index that declared it (0: not known), so that a queue deleted and
    /// declared again does not get the old one's messages.
    pub declared_at: u64,
    /// A dead-letter copy: stored even when its queue holds its id already
    /// (a publisher's repeat is stored once).
    #[serde(default)]
    pub dead_letter: bool,
}

/// What this node decided about messages of a queue it serves (it leads the
/// queue's shard): every other node applies it when committed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicatedDecision {
    pub queue: String,
    /// Which declaration of the queue (as for a publish).
    pub declared_at: u64,
    pub decision: Decision,
}

/// A decision on messages, named by their offsets (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Decision {
    /// Gone for good: acked, dead-lettered (its copy is stored), dropped or
    /// purged.
    Settle {
        reason: journal::SettleReason,
        offsets: Vec<u64>,
    },
    /// Back in line after `deliveries` deliveries.
    Requeue { offset: u64, deliveries: u32 },
    /// Delivered: (offset, how many times in all). A count, not "once
    /// more", so that applying it again (over a snapshot that has it) is
    /// harmless.
    Deliver { delivered: Vec<(u64, u32)> },
}

/// What a node hands its queues' shard groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicated {
    Publish(ReplicatedPublish),
    Decision(ReplicatedDecision),
}

impl Replicated {
    /// The queue it is about.
    pub fn queue(&self) -> &str {
        match self {
            Replicated::Publish(p) => &p.queue,
            Replicated::Decision(d) => &d.queue,
        }
    }

    /// Names the declaration of its queue it is about.
    pub fn set_declared_at(&mut self, index: u64) {
        match self {
            Replicated::Publish(p) => p.declared_at = index,
            Replicated::Decision(d) => d.declared_at = index,
        }
    }
}

impl QueueStore {
    /// From now on publishes are stored by the cluster: their records wait
    /// in [`QueueStore::take_replicated`] and are answered by
    /// [`QueueStore::apply_committed`]. So do the decisions of the queues
    /// this node serves (deliveries, settles and requeues), which other
    /// nodes apply with [`QueueStore::apply_decision`].
    pub fn replicate_publishes(&mut self) {
        self.replicated.get_or_insert_with(Vec::new);
    }

    /// In a cluster: serves the queues `served` says are served here (this
    /// node leads their shards), and only those; the others redirect to
    /// where `served` says they are (`QueueCore::serve`).
    pub fn serve(&mut self, served: impl Fn(&str) -> Served) -> Sends {
        let actions = self.core.serve(self.now(), served);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// The publishes and decisions waiting for the cluster since the last call.
    pub fn take_replicated(&mut self) -> Vec<Replicated> {
        self.replicated
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// A publish the cluster committed at `offset` (the same on every
    /// node): answered when `mine` (this node took it, as that ticket), and
    /// applied to its queue in any case.
    pub fn apply_committed(
        &mut self,
        offset: u64,
        publish: ReplicatedPublish,
        mine: bool,
    ) -> Sends {
        let Some(queue) = self.core.queue_id(&publish.queue) else {
            if mine && self.core.is_storing(publish.ticket) {
                // Deleted meanwhile: the core answers for a queue gone.
                return self.answered(publish.ticket, Ok(offset));
            }
            tracing::warn!(
                queue = publish.queue,
                offset,
                "a committed publish for a queue this node does not have is skipped"
            );
            return Vec::new();
        };
        let record = journal::Entry::Publish {
            queue,
            published_ms: publish.published_ms,
            msg_id: publish.msg_id,
            body: publish.body,
        }
        .encode();
        let ticket = mine.then_some(publish.ticket);
        let actions =
            self.core
                .apply_committed(self.now(), offset, ticket, &record, publish.dead_letter);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// A decision another node took about a queue it served, committed:
    /// applied here as a journal record is at replay (a delivery sets its
    /// count, so applying it twice is harmless). Sends nothing (this
    /// node serves no consumer of a queue another node decides on, or has
    /// just begun to: the message is gone, or back in line, as there).
    pub fn apply_decision(&mut self, decided: ReplicatedDecision) {
        let Some(queue) = self.core.queue_id(&decided.queue) else {
            return;
        };
        let record = match decided.decision {
            Decision::Settle { reason, offsets } => journal::Entry::Settle {
                queue,
                reason,
                offsets,
            },
            Decision::Requeue { offset, deliveries } => journal::Entry::Requeue {
                queue,
                offset,
                deliveries,
            },
            Decision::Deliver { delivered } => {
                self.core.delivered(queue, &delivered);
                return;
            }
        };
        self.core.apply_decision(self.now(), &record.encode());
    }

    /// The state of the queues `in_shard` names, for their shard's
    /// snapshot (`declared_at` left 0).
    pub fn shard_snapshot(
        &self,
        in_shard: impl Fn(&str) -> bool,
    ) -> Result<Vec<QueueSnapshot>, NotInMemory> {
        let mut names: Vec<&str> = self.core.queue_names().filter(|n| in_shard(n)).collect();
        names.sort_unstable();
        names
            .into_iter()
            .filter_map(|name| self.core.queue_snapshot(name))
            .collect()
    }

    /// Replaces what the queues `in_shard` names hold with what their
    /// shard's snapshot holds: `snapshot_of` finds a queue's state in it
    /// (none: the queue held nothing then).
    pub fn restore_shard<'s>(
        &mut self,
        in_shard: impl Fn(&str) -> bool,
        snapshot_of: impl Fn(&str) -> Option<&'s QueueSnapshot>,
    ) -> Sends {
        let names: Vec<String> = self
            .core
            .queue_names()
            .filter(|n| in_shard(n))
            .map(str::to_owned)
            .collect();
        let mut sends = Vec::new();
        for name in names {
            let actions = self
                .core
                .restore_queue(self.now(), &name, snapshot_of(&name));
            self.carry_out(actions, &mut sends);
        }
        self.saves.pass(sends)
    }

    /// The cluster could not store these publishes of this node (`reason`
    /// says why, and whether they may be stored after all): those still
    /// waiting are refused.
    pub fn replication_failed(&mut self, tickets: &[u64], reason: &str) -> Sends {
        let mut sends = Vec::new();
        for ticket in tickets {
            sends.extend(self.answered(*ticket, Err(reason.to_owned())));
        }
        sends
    }

    fn answered(&mut self, ticket: u64, result: Result<u64, String>) -> Sends {
        let actions = self.core.persisted(self.now(), ticket, result);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// In a cluster, a record goes to the cluster instead of the journal:
    /// publishes (and dead-letter copies) with their tickets, settles and
    /// requeues as decisions. (Moves do not happen: compaction is off.)
    pub(super) fn hand_to_cluster(
        &mut self,
        record: Bytes,
        ticket: Option<u64>,
    ) -> Vec<QueueAction> {
        let Some(entry) = journal::Entry::decode(&record) else {
            debug_assert!(false, "the core writes records that decode");
            return Vec::new();
        };
        let queue = match &entry {
            journal::Entry::Publish { queue, .. }
            | journal::Entry::Settle { queue, .. }
            | journal::Entry::Requeue { queue, .. }
            | journal::Entry::Move { queue, .. }
            | journal::Entry::Deliver { queue, .. } => *queue,
        };
        let Some(name) = self.core.queue_name(queue).map(str::to_owned) else {
            return match ticket {
                Some(ticket) => {
                    let reason = "queue deleted".to_owned();
                    self.core.persisted(self.now(), ticket, Err(reason))
                }
                None => Vec::new(),
            };
        };
        // The cluster link knows the catalog: it names the declaration.
        let declared_at = 0;
        let replicated = match (entry, ticket) {
            (
                journal::Entry::Publish {
                    published_ms,
                    msg_id,
                    body,
                    ..
                },
                Some(ticket),
            ) => Replicated::Publish(ReplicatedPublish {
                ticket,
                queue: name,
                published_ms,
                msg_id,
                body,
                declared_at,
                dead_letter: self.core.is_dead_letter(ticket),
            }),
            (
                journal::Entry::Settle {
                    reason, offsets, ..
                },
                _,
            ) => Replicated::Decision(ReplicatedDecision {
                queue: name,
                declared_at,
                decision: Decision::Settle { reason, offsets },
            }),
            (
                journal::Entry::Requeue {
                    offset, deliveries, ..
                },
                _,
            ) => Replicated::Decision(ReplicatedDecision {
                queue: name,
                declared_at,
                decision: Decision::Requeue { offset, deliveries },
            }),
            (journal::Entry::Deliver { offsets, .. }, _) => {
                Replicated::Decision(ReplicatedDecision {
                    queue: name,
                    declared_at,
                    decision: Decision::Deliver {
                        delivered: self.core.deliveries(queue, &offsets),
                    },
                })
            }
            (entry, _) => {
                debug_assert!(false, "not written in a cluster: {entry:?}");
                return Vec::new();
            }
        };
        self.replicated
            .get_or_insert_with(Vec::new)
            .push(replicated);
        Vec::new()
    }
}
