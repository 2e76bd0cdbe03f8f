//! A queue in a cluster: its publishes are stored by the shard group the
//! queue lives in, not by this node's journal. Each committed record comes
//! back here on every node, in log order, at the same offset everywhere.

use super::*;

/// Who serves a queue of a cluster, as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// This node (it leads the queue's shard, and has applied its log up
    /// to its own term).
    Here,
    /// Another node, reached by clients there if known (an election may be
    /// under way, or the leader has not advertised its endpoint yet).
    Elsewhere(Option<std::sync::Arc<str>>),
}

/// The answer to a CONSUME or PURGE of a queue another node serves: 421,
/// with where clients reach that node when this one knows.
pub(super) fn not_served_here(corr: &Bytes, name: &str, served_by: Option<&str>) -> Vec<Bytes> {
    let reason = match served_by {
        Some(endpoint) => format!("queue {name:?} is served by the node at {endpoint}"),
        None => format!(
            "queue {name:?} is served by the leader of its shard, which this node is not now; none is known yet"
        ),
    };
    proto::misdirected(corr, &reason, served_by)
}

impl QueueCore {
    /// The local id of queue `name`.
    pub fn queue_id(&self, name: &str) -> Option<u32> {
        self.queues.get(name).map(|q| q.id())
    }

    /// The name of the queue with local id `id`.
    pub fn queue_name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// Records that still wait to be stored.
    pub fn tickets_waiting(&self) -> usize {
        self.tickets.len()
    }

    /// Whether `ticket` still waits for its record to be stored.
    pub fn is_storing(&self, ticket: u64) -> bool {
        self.tickets.contains_key(&ticket)
    }

    /// A PUBLISH the cluster committed at `offset`. When it is this node's
    /// own, still waiting as `ticket`, it is answered as stored; otherwise
    /// it is applied as at replay, and handed to this node's consumers.
    /// One whose id its queue holds already is kept once, as on every node
    /// (but a `dead_letter` copy is kept whatever its id).
    pub fn apply_committed(
        &mut self,
        now: Now,
        offset: u64,
        ticket: Option<u64>,
        record: &Bytes,
        dead_letter: bool,
    ) -> Vec<QueueAction> {
        let Some(Entry::Publish { queue, msg_id, .. }) = Entry::decode(record) else {
            debug_assert!(false, "only publishes are committed");
            return Vec::new();
        };
        let first = self
            .queue_by_id(queue)
            .and_then(|q| match q.dedup.get(&msg_id) {
                Some(Dedup::Stored(first)) if first != offset => Some(first),
                _ => None,
            });
        if let Some(first) = first.filter(|_| !dead_letter) {
            self.publish_stored_already(ticket, queue, first);
            return std::mem::take(&mut self.out);
        }
        if let Some(ticket) = ticket.filter(|t| self.is_storing(*t)) {
            return self.persisted(now, ticket, Ok(offset));
        }
        let name = self.queue_name(queue).map(str::to_owned);
        self.replay(now, offset, record);
        if let Some(name) = name {
            self.dispatch(now, &name);
        }
        std::mem::take(&mut self.out)
    }

    /// Whether `ticket` waits for a dead-letter copy to be stored.
    pub fn is_dead_letter(&self, ticket: u64) -> bool {
        matches!(self.tickets.get(&ticket), Some(Ticket::DeadLetter { .. }))
    }

    /// A settle, requeue or delivery (a journal record) that the node
    /// serving the queue decided, committed by the queue's shard: applied
    /// as at replay.
    pub fn apply_decision(&mut self, now: Now, record: &Bytes) {
        debug_assert!(
            matches!(
                Entry::decode(record),
                Some(Entry::Settle { .. } | Entry::Requeue { .. } | Entry::Deliver { .. })
            ),
            "decisions are settles, requeues and deliveries"
        );
        // Their offsets are the records', not a journal's.
        self.replay(now, 0, record);
    }

    /// How many times each of `offsets` was delivered (those of messages
    /// gone are left out).
    pub fn deliveries(&self, queue: u32, offsets: &[u64]) -> Vec<(u64, u32)> {
        let Some(q) = self.names.get(&queue).and_then(|n| self.queues.get(n)) else {
            return Vec::new();
        };
        offsets
            .iter()
            .filter_map(|o| q.messages.get(o).map(|m| (*o, m.deliveries)))
            .collect()
    }

    /// The serving node delivered these messages (offset, times in all):
    /// they count as delivered that often, or more if known here already.
    pub fn delivered(&mut self, queue: u32, delivered: &[(u64, u32)]) {
        let Some(q) = self.queue_by_id(queue) else {
            return;
        };
        for (offset, times) in delivered {
            if let Some(m) = q.messages.get_mut(offset) {
                m.deliveries = m.deliveries.max(*times);
            }
        }
    }

    /// In a cluster: the queues this node serves from now on are those
    /// `served` names as served here (it leads their shards); the others
    /// answer CONSUME and PURGE with where `served` says they are. A queue
    /// it starts serving gets deliveries at once. One it stops serving loses
    /// its consumers: what they held goes back in line here without a
    /// record, as on every other node, for the shard's leader to decide on
    /// (it delivers it again).
    pub fn serve(&mut self, now: Now, served: impl Fn(&str) -> Served) -> Vec<QueueAction> {
        debug_assert!(self.config.served_where_led, "only a cluster's queues move");
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in names {
            let q = self.queues.get_mut(&name).expect("listed above");
            let (serving, served_by) = match served(&name) {
                Served::Here => (true, None),
                Served::Elsewhere(by) => (false, by),
            };
            q.served_by = served_by;
            if q.serving == serving {
                continue;
            }
            q.serving = serving;
            if serving {
                tracing::debug!(queue = name, "serving");
                self.dispatch(now, &name);
            } else {
                tracing::debug!(queue = name, "no longer serving");
                self.stop_serving(&name);
            }
        }
        std::mem::take(&mut self.out)
    }

    fn stop_serving(&mut self, name: &str) {
        let q = self.queues.get_mut(name).expect("the caller found it");
        let consumers = std::mem::take(&mut q.consumers);
        q.next_consumer = 0;
        let held: Vec<u64> = q
            .messages
            .iter()
            .filter(|(_, m)| m.holder.is_some())
            .map(|(tag, _)| *tag)
            .collect();
        for tag in held {
            q.release(tag);
            q.make_ready(tag);
        }
        debug_assert!(q.detached.is_empty(), "released above");
        for c in consumers {
            if let Some(p) = self.peers.get_mut(&c.peer) {
                p.queues.retain(|n| n != name);
                if p.queues.is_empty() {
                    self.peers.remove(&c.peer);
                }
            }
        }
    }
}
