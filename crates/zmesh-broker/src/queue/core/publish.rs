//! Publishing: PUBLISH (one message) and BATCH (many, one reply), with
//! deduplication by message id and confirms only once the record is durable.

use bytes::Bytes;
use zmesh::clock::Now;

use super::{QueueCore, Ticket};
use crate::queue::journal::Entry;
use crate::queue::proto::{self, code};
use crate::queue::state::{Dedup, Msg};

/// Someone waiting for a message's outcome.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A PUBLISH: answered with CONFIRM or ERROR.
    Single {
        to: Bytes,
        corr: Bytes,
        /// A repeat of a message id already being stored.
        duplicate: bool,
    },
    /// One message of a BATCH: fills its slot of the batch reply.
    Batch {
        id: u64,
        index: usize,
        duplicate: bool,
    },
}

impl Waiter {
    fn into_duplicate(mut self) -> Waiter {
        match &mut self {
            Waiter::Single { duplicate, .. } | Waiter::Batch { duplicate, .. } => *duplicate = true,
        }
        self
    }

    fn duplicate(&self) -> bool {
        match self {
            Waiter::Single { duplicate, .. } | Waiter::Batch { duplicate, .. } => *duplicate,
        }
    }
}

/// A BATCH whose reply waits for every message's outcome.
#[derive(Debug)]
pub(super) struct Batch {
    to: Bytes,
    corr: Bytes,
    slots: Vec<Option<Bytes>>,
    remaining: usize,
}

/// What became of one published message.
enum Outcome {
    Stored { offset: u64, duplicate: bool },
    Refused { code: u16, reason: String },
}

impl QueueCore {
    /// Store one message for `waiter`, who hears the outcome now (refused,
    /// already stored) or once the record is durable.
    pub(super) fn publish(
        &mut self,
        now: Now,
        name: &str,
        msg_id: Bytes,
        body: Bytes,
        waiter: Waiter,
    ) {
        if self.draining {
            let reason = "broker shutting down".to_owned();
            return self.resolve(
                waiter,
                Outcome::Refused {
                    code: code::UNAVAILABLE,
                    reason,
                },
            );
        }
        let messages = self.messages;
        let Some(q) = self.queues.get_mut(name) else {
            let reason = format!("no queue {name:?}");
            return self.resolve(
                waiter,
                Outcome::Refused {
                    code: code::NOT_FOUND,
                    reason,
                },
            );
        };
        match q.dedup.get(&msg_id) {
            Some(Dedup::Stored(offset)) => {
                q.counters.duplicates += 1;
                let outcome = Outcome::Stored {
                    offset,
                    duplicate: true,
                };
                return self.resolve(waiter, outcome);
            }
            Some(Dedup::Storing(ticket)) => {
                q.counters.duplicates += 1;
                if let Some(Ticket::Publish { waiters, .. }) = self.tickets.get_mut(&ticket) {
                    waiters.push(waiter.into_duplicate());
                }
                return;
            }
            None => {}
        }
        let o = q.options();
        let refusal = if q.len() >= o.max_length {
            Some((
                code::QUEUE_FULL,
                format!(
                    "queue {name:?} is full: {} messages (max_length)",
                    o.max_length
                ),
            ))
        } else if q.bytes() + body.len() as u64 > o.max_bytes {
            Some((
                code::QUEUE_FULL,
                format!("queue {name:?} is full: {} bytes (max_bytes)", o.max_bytes),
            ))
        } else if messages >= self.config.messages_max {
            Some((
                code::UNAVAILABLE,
                "the broker holds its maximum number of messages".to_owned(),
            ))
        } else if self.storing_bytes > 0
            && self.storing_bytes + body.len() as u64 > self.config.storing_bytes_max
        {
            // Stored bodies go to disk past the memory bound; these cannot
            // until written, and a stalled disk must not fill the memory.
            Some((
                code::UNAVAILABLE,
                format!(
                    "the broker holds its maximum of message bytes waiting for storage ({})",
                    self.config.storing_bytes_max
                ),
            ))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            q.counters.refused += 1;
            return self.resolve(waiter, Outcome::Refused { code, reason });
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        q.storing += 1;
        q.add_bytes(body.len() as u64);
        self.storing_bytes += body.len() as u64;
        q.counters.published += 1;
        q.remember(msg_id.clone(), Dedup::Storing(ticket));
        let (id, durability) = (q.id(), q.options().durability);
        self.messages += 1;
        self.append(
            Entry::Publish {
                queue: id,
                published_ms: now.wall_ms,
                msg_id: msg_id.clone(),
                body: body.clone(),
            },
            durability,
            Some(ticket),
        );
        // Its order is its offset, known once stored.
        let msg = Msg::new(body, msg_id, now, 0);
        self.tickets.insert(
            ticket,
            Ticket::Publish {
                queue: id,
                msg,
                waiters: vec![waiter],
            },
        );
    }

    /// BATCH: every message as a PUBLISH, one reply with a status per message.
    pub(super) fn publish_batch(
        &mut self,
        now: Now,
        from: &Bytes,
        corr: Bytes,
        name: &str,
        items: Vec<(Bytes, Bytes)>,
    ) {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(
            id,
            Batch {
                to: from.clone(),
                corr,
                slots: vec![None; items.len()],
                remaining: items.len(),
            },
        );
        for (index, (msg_id, body)) in items.into_iter().enumerate() {
            let waiter = Waiter::Batch {
                id,
                index,
                duplicate: false,
            };
            self.publish(now, name, msg_id, body, waiter);
        }
    }

    fn resolve(&mut self, waiter: Waiter, outcome: Outcome) {
        match waiter {
            Waiter::Single { to, corr, .. } => {
                let frames = match outcome {
                    Outcome::Stored { offset, duplicate } => {
                        proto::confirm(&corr, offset, duplicate)
                    }
                    Outcome::Refused { code, reason } => proto::error(&corr, code, &reason),
                };
                self.send(&to, frames);
            }
            Waiter::Batch { id, index, .. } => {
                let Some(batch) = self.batches.get_mut(&id) else {
                    return;
                };
                batch.slots[index] = Some(match outcome {
                    Outcome::Stored { offset, duplicate } => proto::batch_stored(offset, duplicate),
                    Outcome::Refused { code, reason } => proto::batch_refused(code, &reason),
                });
                batch.remaining -= 1;
                if batch.remaining == 0 {
                    let batch = self.batches.remove(&id).expect("present");
                    let statuses = batch.slots.into_iter().map(|s| s.expect("all filled"));
                    self.send(&batch.to, proto::confirmed(&batch.corr, statuses));
                }
            }
        }
    }

    pub(super) fn publish_persisted(
        &mut self,
        now: Now,
        queue: u32,
        msg: Msg,
        waiters: Vec<Waiter>,
        result: Result<u64, String>,
    ) {
        self.storing_bytes -= msg.body.len();
        let Some(q) = self.queue_by_id(queue) else {
            self.messages -= 1;
            for w in waiters {
                let reason = "queue deleted".to_owned();
                self.resolve(
                    w,
                    Outcome::Refused {
                        code: code::NOT_FOUND,
                        reason,
                    },
                );
            }
            return;
        };
        q.storing -= 1;
        q.sub_bytes(msg.body.len());
        match result {
            Ok(offset) => {
                q.counters.confirmed += 1;
                // Only if still remembered: an id the window let go while
                // this was stored must not push out a newer one.
                q.dedup.update(&msg.msg_id, Dedup::Stored(offset));
                q.insert(
                    offset,
                    Msg {
                        order: offset,
                        ..msg
                    },
                );
                let name = q.spec.name.clone();
                for w in waiters {
                    let duplicate = w.duplicate();
                    self.resolve(w, Outcome::Stored { offset, duplicate });
                }
                self.dispatch(now, &name);
            }
            Err(reason) => {
                q.counters.refused += 1;
                q.forget(&msg.msg_id);
                self.messages -= 1;
                self.counters.storage_errors += 1;
                let reason = format!("storage refused the message: {reason}");
                for w in waiters {
                    let reason = reason.clone();
                    self.resolve(
                        w,
                        Outcome::Refused {
                            code: code::STORAGE,
                            reason,
                        },
                    );
                }
            }
        }
    }

    /// In a cluster: a committed publish of an id its queue holds already,
    /// at `first` (a resend whose first try's fate was unknown, committed
    /// through another node). Every node keeps the first copy only; when
    /// this node took the repeat (as `ticket`, still waiting), its
    /// publishers hear it is stored at `first`.
    pub(super) fn publish_stored_already(&mut self, ticket: Option<u64>, queue: u32, first: u64) {
        if let Some(q) = self.queue_by_id(queue) {
            q.counters.duplicates += 1;
        }
        let Some(ticket) =
            ticket.filter(|t| matches!(self.tickets.get(t), Some(Ticket::Publish { .. })))
        else {
            return;
        };
        let Some(Ticket::Publish {
            queue,
            msg,
            waiters,
        }) = self.tickets.remove(&ticket)
        else {
            unreachable!("looked at above");
        };
        self.storing_bytes -= msg.body.len();
        self.messages -= 1;
        if let Some(q) = self.queue_by_id(queue) {
            q.storing -= 1;
            q.sub_bytes(msg.body.len());
        }
        for w in waiters {
            let outcome = Outcome::Stored {
                offset: first,
                duplicate: true,
            };
            self.resolve(w, outcome);
        }
    }
}
