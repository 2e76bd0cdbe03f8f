//! Compaction: copying live messages forward, out of the journal's oldest
//! segment, so that the segment can be deleted.
//!
//! The journal loses whole segments from the front only. Without compaction
//! one message waiting in an idle queue keeps every later segment, however
//! little of them is live, and the journal grows with the traffic of every
//! other queue. The store asks for a pass when the journal is mostly dead
//! records (`QueueStore::end_batch`); the core then writes a MOVE record for
//! each message below the segment's end that is waiting in line in a queue
//! that has delivered nothing for `COMPACT_IDLE_MS` (a queue being consumed
//! frees its old segments itself, head first), or that a consumer has held
//! for that long (a long job must not keep the journal's head while the rest
//! of its queue flows). One record both
//! stores the copy and retires the original, so a crash leaves one of the
//! two, never both and never neither.
//!
//! While its copy is being written the message is `moving`: it keeps its
//! place in line but holds the line (a consumer arriving meanwhile waits the
//! few milliseconds of the fsync); once the copy is durable it takes the
//! copy's offset as its tag, with its order and delivery count. A held
//! message's consumer goes on acking it by the tag it was delivered under:
//! the queue maps that tag to the new one until the message is settled or
//! released (`Queue::aliases`).

use bytes::Bytes;
use zmesh::clock::Now;
use zmesh_log::Durability;

use super::{QueueAction, QueueCore, Ticket};
use crate::queue::journal::{Entry, SettleReason};
use crate::queue::state::Dedup;

/// Bytes of a MOVE record besides its msg id and body.
pub const MOVE_HEADER_BYTES: u64 = 35;

/// Journal bytes of a live message besides its msg id and body: the larger
/// of the PUBLISH and MOVE headers, plus the log's record header.
pub const RECORD_OVERHEAD_BYTES: u64 = MOVE_HEADER_BYTES + zmesh_log::record::HEADER_LEN as u64;

/// A queue that delivered a message this recently is being consumed: its
/// waiting messages are not moved. A message held this long is moved.
pub const COMPACT_IDLE_MS: u64 = 5_000;

/// How much one compaction pass may do.
#[derive(Clone, Copy, Debug)]
pub struct CompactLimits {
    /// Messages moved at most.
    pub moves_max: usize,
    /// Body bytes moved at most (at least one message is, whatever its size).
    pub bytes_max: u64,
    /// The log's largest record: a message whose MOVE would not fit stays.
    pub record_bytes_max: u64,
}

impl QueueCore {
    /// Move messages whose tag is below `below` (waiting in line in idle
    /// queues, or held for `COMPACT_IDLE_MS`), within `limits`; returns the actions to carry out (MOVE records, each with a
    /// ticket answered through [`QueueCore::persisted`]).
    ///
    /// ```
    /// use zmesh_broker::queue::core::CompactLimits;
    /// use zmesh_broker::queue::{Catalog, QueueCore, QueueCoreConfig};
    /// use zmesh::clock::Now;
    /// let now = Now { mono_ms: 0, wall_ms: 0 };
    /// let mut core = QueueCore::new(QueueCoreConfig::default(), Catalog::default());
    /// let limits = CompactLimits { moves_max: 100, bytes_max: 1 << 20, record_bytes_max: 1 << 24 };
    /// assert!(core.compact(now, 1_000, limits).is_empty()); // nothing stored, nothing to move
    /// ```
    pub fn compact(&mut self, now: Now, below: u64, limits: CompactLimits) -> Vec<QueueAction> {
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        for q in self.queues.values_mut() {
            // A queue that is being consumed frees its old segments itself,
            // head first; moving its head would only copy messages about to
            // go and make its consumers wait for the copies. (Window room
            // says nothing: every ack refills the window at once.)
            let idle =
                q.last_delivery_ms == 0 || now.mono_ms >= q.last_delivery_ms + COMPACT_IDLE_MS;
            let ack_timeout_ms = q.options().ack_timeout_ms;
            // In a busy queue only held messages can qualify: look at those alone.
            let tags: Box<dyn Iterator<Item = u64>> = if idle {
                Box::new(q.messages.range(..below).map(|(tag, _)| *tag))
            } else {
                let mut held: Vec<u64> = q
                    .consumers
                    .iter()
                    .flat_map(|c| c.held.iter())
                    .chain(q.detached.iter())
                    .copied()
                    .filter(|tag| *tag < below)
                    .collect();
                held.sort_unstable();
                Box::new(held.into_iter())
            };
            let mut movable = Vec::new();
            for tag in tags {
                if entries.len() + movable.len() >= limits.moves_max || bytes >= limits.bytes_max {
                    break;
                }
                let Some(m) = q.messages.get(&tag) else {
                    continue;
                };
                let settled_in = match &m.holder {
                    None => idle,
                    // Held this long, it is a long job, not one about to be acked.
                    Some((_, ack_due_ms)) => {
                        let delivered_ms = ack_due_ms.saturating_sub(ack_timeout_ms);
                        now.mono_ms >= delivered_ms + COMPACT_IDLE_MS
                    }
                };
                let record = MOVE_HEADER_BYTES + m.msg_id.len() as u64 + m.body.len();
                if settled_in && !m.moving && record <= limits.record_bytes_max {
                    bytes += m.body.len();
                    movable.push(tag);
                }
            }
            for from in movable {
                // It keeps its place in line; dispatch waits at it until the
                // copy is durable (a few milliseconds), so nothing overtakes it.
                let m = q.messages.get_mut(&from).expect("just listed");
                m.moving = true;
                let entry = Entry::Move {
                    queue: q.spec.id,
                    from,
                    order: m.order,
                    published_ms: m.published_ms,
                    deliveries: m.deliveries,
                    msg_id: m.msg_id.clone(),
                    body: Bytes::new(),
                };
                entries.push((entry, m.clone()));
            }
        }
        for (entry, msg) in entries {
            let Entry::Move { queue, from, .. } = entry else {
                unreachable!("only moves were listed")
            };
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            // Durable before the old segment may go, whatever the queue's setting.
            self.append_with_body(entry, from, &msg, Durability::GROUP_DEFAULT, ticket);
            self.tickets.insert(ticket, Ticket::Move { queue, from });
            self.counters.moved += 1;
        }
        std::mem::take(&mut self.out)
    }

    /// Moves that failed so far (storage errors): the store backs off.
    pub fn move_failures(&self) -> u64 {
        self.counters.move_failures
    }

    /// The MOVE record of the message at `from` is durable at `result`'s
    /// offset, or failed.
    pub(super) fn move_persisted(
        &mut self,
        now: Now,
        queue: u32,
        from: u64,
        result: Result<u64, String>,
    ) {
        if result.is_err() {
            self.counters.move_failures += 1;
        }
        // A deleted queue's records die with its id.
        let Some(q) = self.queue_by_id(queue) else {
            return;
        };
        let name = q.spec.name.clone();
        let still_moving = q.messages.get(&from).is_some_and(|m| m.moving);
        match result {
            Ok(tag) if still_moving => {
                // Same body and id: the byte counts stay as they are.
                let m = q.messages.get_mut(&from).expect("checked");
                m.moving = false;
                if q.dedup.get(&m.msg_id) == Some(Dedup::Stored(from)) {
                    q.dedup.update(&m.msg_id, Dedup::Stored(tag));
                }
                q.retag(from, tag);
                self.dispatch(now, &name);
            }
            Ok(tag) => {
                // Being dead-lettered meanwhile (a held message rejected
                // mid-move): replay has the copy in the original's place
                // now, so the dead-letter copy's outcome decides for it.
                let dead_lettering = self.tickets.values_mut().find_map(|t| match t {
                    Ticket::DeadLetter {
                        from: q,
                        from_offset,
                        msg,
                        ..
                    } if *q == queue && *from_offset == from => {
                        *from_offset = tag;
                        Some(msg.msg_id.clone())
                    }
                    _ => None,
                });
                if let Some(id) = dead_lettering {
                    // Should the copy fail, the message is back at `tag`:
                    // a repeated publish is then confirmed with that tag.
                    let q = self.queue_by_id(queue).expect("found above");
                    if q.dedup.get(&id) == Some(Dedup::Stored(from)) {
                        q.dedup.update(&id, Dedup::Stored(tag));
                    }
                    return;
                }
                // Settled (acked, purged) while its copy was written: the
                // copy goes too. (Replay also sends a SETTLE of the original
                // to the copy, should this one not be written.)
                self.settle(queue, SettleReason::Purged, vec![tag]);
            }
            Err(reason) => {
                // The original stays. Should the copy reach the disk after
                // all, replay takes it in the original's place.
                tracing::warn!(
                    queue = name,
                    from,
                    reason,
                    "journal compaction: a move failed"
                );
                if let Some(m) = q.messages.get_mut(&from) {
                    m.moving = false;
                }
                self.dispatch(now, &name);
            }
        }
    }

    /// Bytes the live messages take in the journal, at most.
    pub fn live_bytes(&self) -> u64 {
        self.queues
            .values()
            .map(|q| q.bytes() + q.id_bytes + q.len() * RECORD_OVERHEAD_BYTES)
            .sum()
    }
}
