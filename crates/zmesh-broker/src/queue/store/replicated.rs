//! The store's half of a queue in a cluster: publishes handed to the
//! cluster instead of the journal, and committed ones applied back.

use bytes::Bytes;

use super::super::core::QueueAction;
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
}

impl QueueStore {
    /// From now on publishes are stored by the cluster: their records wait
    /// in [`QueueStore::take_replicated`] and are answered by
    /// [`QueueStore::apply_committed`]. Deliveries, acks and requeues stay
    /// in this node's memory (replicated in a later step: `docs/cluster.md`).
    pub fn replicate_publishes(&mut self) {
        self.replicated.get_or_insert_with(Vec::new);
    }

    /// In a cluster: serves the queues `leads` names (this node leads their
    /// shards), and only those (`QueueCore::serve`).
    pub fn serve(&mut self, leads: impl Fn(&str) -> bool) -> Sends {
        let actions = self.core.serve(self.now(), leads);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// The publishes waiting for the cluster since the last call.
    pub fn take_replicated(&mut self) -> Vec<ReplicatedPublish> {
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
        let actions = self
            .core
            .apply_committed(self.now(), offset, ticket, &record);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
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

    /// In a cluster, a record goes to the cluster instead of the journal.
    /// Settles, requeues and moves stay in memory for now: only publishes
    /// (and dead letters, published with a ticket) go.
    pub(super) fn hand_to_cluster(
        &mut self,
        record: Bytes,
        ticket: Option<u64>,
    ) -> Vec<QueueAction> {
        if let (
            Some(journal::Entry::Publish {
                queue,
                published_ms,
                msg_id,
                body,
            }),
            Some(ticket),
        ) = (journal::Entry::decode(&record), ticket)
        {
            let Some(name) = self.core.queue_name(queue) else {
                let reason = "queue deleted".to_owned();
                return self.core.persisted(self.now(), ticket, Err(reason));
            };
            self.replicated
                .get_or_insert_with(Vec::new)
                .push(ReplicatedPublish {
                    ticket,
                    queue: name.to_owned(),
                    published_ms,
                    msg_id,
                    body,
                    // The cluster link knows the catalog.
                    declared_at: 0,
                });
        }
        Vec::new()
    }
}
