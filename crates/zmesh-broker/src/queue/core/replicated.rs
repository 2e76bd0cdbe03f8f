//! A queue in a cluster: its publishes are stored by the shard group the
//! queue lives in, not by this node's journal. Each committed record comes
//! back here on every node, in log order, at the same offset everywhere.

use super::*;

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
    pub fn apply_committed(
        &mut self,
        now: Now,
        offset: u64,
        ticket: Option<u64>,
        record: &Bytes,
    ) -> Vec<QueueAction> {
        if let Some(ticket) = ticket.filter(|t| self.is_storing(*t)) {
            return self.persisted(now, ticket, Ok(offset));
        }
        let name = match Entry::decode(record) {
            Some(Entry::Publish { queue, .. }) => self.queue_name(queue).map(str::to_owned),
            _ => None,
        };
        debug_assert!(
            matches!(Entry::decode(record), Some(Entry::Publish { .. })),
            "only publishes are committed"
        );
        self.replay(now, offset, record);
        if let Some(name) = name {
            self.dispatch(now, &name);
        }
        std::mem::take(&mut self.out)
    }
}
