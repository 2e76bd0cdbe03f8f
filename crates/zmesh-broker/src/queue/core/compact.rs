//! Compaction: copying live messages forward, out of the journal's oldest
//! segment, so that the segment can be deleted.
//!
//! The journal loses whole segments from the front only. Without compaction
//! one message waiting in an idle queue keeps every later segment, however
//! little of them is live, and the journal grows with the traffic of every
//! other queue. The store asks for a pass when the journal is mostly dead
//! records (`QueueStore::end_batch`); the core then writes a MOVE record for
//! each message waiting in line below the segment's end. One record both
//! stores the copy and retires the original, so a crash leaves one of the two,
//! never both and never neither.
//!
//! While its copy is being written the message is out of line (`moving`); once
//! the copy is durable it takes the copy's offset as its tag and goes back in
//! line at its old place (`order`), with its delivery count. Held messages are
//! not moved, because their consumer acks them by tag; they leave the segment
//! when acked, or are moved by a later pass once back in line.

use zmesh_log::Durability;

use super::{QueueAction, QueueCore, Ticket};
use crate::queue::journal::{Entry, SettleReason};
use crate::queue::state::Dedup;

impl QueueCore {
    /// Move messages waiting in line whose tag is below `below`, at most
    /// `moves_max` of them and about `bytes_max` of bodies; returns the
    /// actions to carry out (MOVE records, each with a ticket).
    ///
    /// ```
    /// use zmesh_broker::queue::{Catalog, QueueCore, QueueCoreConfig};
    /// let mut core = QueueCore::new(QueueCoreConfig::default(), Catalog::default());
    /// assert!(core.compact(1_000, 100, 1 << 20).is_empty()); // nothing stored, nothing to move
    /// ```
    pub fn compact(&mut self, below: u64, moves_max: usize, bytes_max: u64) -> Vec<QueueAction> {
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        for q in self.queues.values_mut() {
            if entries.len() >= moves_max || bytes >= bytes_max {
                break;
            }
            let mut movable = Vec::new();
            for (tag, m) in q.messages.range(..below) {
                if entries.len() + movable.len() >= moves_max || bytes >= bytes_max {
                    break;
                }
                if m.holder.is_none() && !m.moving {
                    bytes += m.body.len() as u64;
                    movable.push(*tag);
                }
            }
            for from in movable {
                q.unready(from);
                let m = q.messages.get_mut(&from).expect("just listed");
                m.moving = true;
                entries.push(Entry::Move {
                    queue: q.spec.id,
                    from,
                    order: m.order,
                    published_ms: m.published_ms,
                    deliveries: m.deliveries,
                    msg_id: m.msg_id.clone(),
                    body: m.body.clone(),
                });
            }
        }
        for entry in entries {
            let Entry::Move { queue, from, .. } = entry else {
                unreachable!("only moves were listed")
            };
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            // Durable before the old segment may go, whatever the queue's setting.
            self.append(entry, Durability::GROUP_DEFAULT, Some(ticket));
            self.tickets.insert(ticket, Ticket::Move { queue, from });
            self.counters.moved += 1;
        }
        std::mem::take(&mut self.out)
    }

    /// The MOVE record of the message at `from` is durable at `result`'s
    /// offset, or failed.
    pub(super) fn move_persisted(
        &mut self,
        now_ms: u64,
        queue: u32,
        from: u64,
        result: Result<u64, String>,
    ) {
        // A deleted queue's records die with its id.
        let Some(q) = self.queue_by_id(queue) else {
            return;
        };
        let name = q.spec.name.clone();
        let still_moving = q.messages.get(&from).is_some_and(|m| m.moving);
        match result {
            Ok(tag) if still_moving => {
                let mut m = q.messages.remove(&from).expect("checked");
                m.moving = false;
                if let Some(Dedup::Stored(_)) = q.dedup.get(&m.msg_id) {
                    q.remember(m.msg_id.clone(), Dedup::Stored(tag));
                }
                q.messages.insert(tag, m);
                q.make_ready(tag);
                self.dispatch(now_ms, &name);
            }
            Ok(tag) => {
                // Purged while its copy was written: the SETTLE of the
                // original misses the copy on replay, so the copy goes too.
                self.settle(queue, SettleReason::Purged, vec![tag]);
            }
            Err(reason) => {
                // The original stays. Should the copy reach the disk after
                // all, a restart takes the copy instead: at worst the message
                // is delivered again.
                tracing::warn!(
                    queue = name,
                    from,
                    reason,
                    "journal compaction: a move failed"
                );
                if still_moving {
                    let m = q.messages.get_mut(&from).expect("checked");
                    m.moving = false;
                    q.make_ready(from);
                    self.dispatch(now_ms, &name);
                }
            }
        }
    }

    /// Bytes the live messages would take in the journal, counting
    /// `record_overhead` bytes for each besides its body.
    pub fn live_bytes(&self, record_overhead: u64) -> u64 {
        self.queues
            .values()
            .map(|q| q.bytes + q.len() * record_overhead)
            .sum()
    }
}
