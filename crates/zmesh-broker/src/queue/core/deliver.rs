//! Consumers and what becomes of a delivered message: consume and cancel,
//! dispatch within credit, ack, nack, redelivery and dead letters.

use bytes::Bytes;
use zmesh::clock::Now;
use zmesh_log::Durability;

use super::{Peer, QueueCore, Ticket};
use crate::queue::journal::{Entry, SettleReason};
use crate::queue::proto::{self, code};
use crate::queue::state::{Consumer, Msg};

impl QueueCore {
    pub(super) fn dead_letter_persisted(
        &mut self,
        now: Now,
        from: u32,
        from_offset: u64,
        to: u32,
        msg: Msg,
        result: Result<u64, String>,
    ) {
        match result {
            Ok(offset) if self.names.contains_key(&to) => {
                let q = self.queue_by_id(to).expect("checked");
                // Its body is in the copy's record, at its new tag.
                q.insert(
                    offset,
                    Msg {
                        published_ms: now.wall_ms,
                        born_mono_ms: now.mono_ms,
                        deliveries: 0,
                        order: offset,
                        holder: None,
                        moving: false,
                        delivered_as: None,
                        ..msg
                    },
                );
                let name = q.spec.name.clone();
                if let Some(src) = self.queue_by_id(from) {
                    src.counters.dead_lettered += 1;
                }
                // Only now may the original go: its copy is durable.
                self.settle(from, SettleReason::DeadLettered, vec![from_offset]);
                self.dispatch(now, &name);
            }
            _ => {
                // The copy is not stored: the original stays where it was,
                // back in line. Should compaction be moving it (a held
                // message dead-lettered mid-move), it is moving again, so
                // that the move's outcome still applies to it.
                let moving = self.tickets.values().any(|t| {
                    matches!(t, Ticket::Move { queue, from: f } if *queue == from && *f == from_offset)
                });
                if let Some(src) = self.queue_by_id(from) {
                    src.insert(
                        from_offset,
                        Msg {
                            moving,
                            holder: None,
                            delivered_as: None,
                            ..msg
                        },
                    );
                    let name = src.spec.name.clone();
                    self.dispatch(now, &name);
                } else {
                    self.messages -= 1;
                }
            }
        }
    }

    pub(super) fn consume(
        &mut self,
        now: Now,
        from: &Bytes,
        corr: &Bytes,
        name: &str,
        prefetch: u32,
    ) {
        let Some(q) = self.queues.get_mut(name) else {
            return self.send(
                from,
                proto::error(corr, code::NOT_FOUND, &format!("no queue {name:?}")),
            );
        };
        if !q.serving {
            let served_by = q.served_by.clone();
            return self.send(
                from,
                super::not_served_here(corr, name, served_by.as_deref()),
            );
        }
        if !self.peers.contains_key(from) && self.peers.len() >= self.config.peers_max {
            return self.send(
                from,
                proto::error(
                    corr,
                    code::UNAVAILABLE,
                    "the broker's consumer limit is reached",
                ),
            );
        }
        match q.consumers.iter_mut().find(|c| c.peer == *from) {
            Some(c) => c.prefetch = prefetch,
            None => q.consumers.push(Consumer {
                peer: from.clone(),
                prefetch,
                held: Default::default(),
                congested: self.congested.contains(from),
            }),
        }
        let peer = self.peers.entry(from.clone()).or_insert(Peer {
            last_seen_ms: now.mono_ms,
            queues: Vec::new(),
        });
        if !peer.queues.iter().any(|n| n == name) {
            peer.queues.push(name.to_owned());
        }
        self.send(from, proto::ok(corr, None));
        self.dispatch(now, name);
    }

    /// Remove `peer`'s consumer of `name`; its held messages go back, or with
    /// `keep` stay held until acked by tag or timed out.
    pub(super) fn cancel(&mut self, now: Now, peer: &Bytes, name: &str, keep: bool) -> bool {
        let Some(q) = self.queues.get_mut(name) else {
            return false;
        };
        let Some(i) = q.consumers.iter().position(|c| c.peer == *peer) else {
            return false;
        };
        let c = q.consumers.remove(i);
        q.next_consumer = 0;
        let mut held: Vec<u64> = if keep {
            q.detached.extend(c.held);
            Vec::new()
        } else {
            c.held.into_iter().collect()
        };
        held.sort_unstable();
        for off in &held {
            if let Some(m) = q.messages.get_mut(off) {
                m.holder = None;
                if let Some(known) = m.delivered_as.take() {
                    q.aliases.remove(&known);
                }
            }
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.queues.retain(|n| n != name);
            if p.queues.is_empty() {
                self.peers.remove(peer);
            }
        }
        for off in held {
            self.redeliver(now, name, off);
        }
        self.dispatch(now, name);
        true
    }

    pub(super) fn drop_peer(&mut self, now: Now, peer: &Bytes) {
        let Some(p) = self.peers.get(peer) else {
            return;
        };
        for name in p.queues.clone() {
            self.cancel(now, peer, &name, false);
        }
        self.peers.remove(peer);
    }

    /// A message not processed goes back to its queue, or to the dead letters
    /// once it has used up its deliveries.
    pub(super) fn redeliver(&mut self, now: Now, name: &str, offset: u64) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        let Some(m) = q.messages.get(&offset) else {
            return;
        };
        if m.deliveries >= q.options().max_deliveries {
            return self.dead_letter(now, name, offset, "max deliveries");
        }
        let (id, deliveries) = (q.id(), m.deliveries);
        q.make_ready(offset);
        q.counters.redelivered += 1;
        self.append(
            Entry::Requeue {
                queue: id,
                offset,
                deliveries,
            },
            Durability::Os,
            None,
        );
    }

    pub(super) fn dead_letter(&mut self, now: Now, name: &str, offset: u64, why: &str) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        let Some(msg) = q.remove(offset) else {
            return;
        };
        let from = q.id();
        let target = q
            .options()
            .dead_letter
            .clone()
            .filter(|d| !d.is_empty())
            .and_then(|d| self.queues.get(&d))
            .map(|d| (d.id(), d.options().durability));
        tracing::debug!(queue = name, offset, why, "dead-lettering");
        let Some((to, durability)) = target else {
            if let Some(q) = self.queues.get_mut(name) {
                q.counters.dropped += 1;
            }
            self.messages -= 1;
            return self.settle(from, SettleReason::Dropped, vec![offset]);
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let entry = Entry::Publish {
            queue: to,
            published_ms: now.wall_ms,
            msg_id: msg.msg_id.clone(),
            body: Bytes::new(),
        };
        self.append_with_body(entry, offset, &msg, durability, ticket);
        self.tickets.insert(
            ticket,
            Ticket::DeadLetter {
                from,
                from_offset: offset,
                to,
                msg,
            },
        );
    }

    pub(super) fn ack(&mut self, now: Now, name: &str, tags: &[u64]) {
        let Some(q) = self.queues.get_mut(name) else {
            self.counters.unknown_tags += tags.len() as u64;
            return;
        };
        let mut settled = Vec::with_capacity(tags.len());
        for &tag in tags {
            let tag = q.current_tag(tag);
            let held = q.messages.get(&tag).is_some_and(|m| m.holder.is_some());
            if held && q.remove(tag).is_some() {
                settled.push(tag);
            } else {
                self.counters.unknown_tags += 1;
            }
        }
        q.counters.acked += settled.len() as u64;
        let id = q.id();
        self.messages -= settled.len() as u64;
        if !settled.is_empty() {
            self.settle(id, SettleReason::Acked, settled);
        }
        self.dispatch(now, name);
    }

    pub(super) fn nack(&mut self, now: Now, name: &str, requeue: bool, tags: &[u64]) {
        let Some(q) = self.queues.get_mut(name) else {
            self.counters.unknown_tags += tags.len() as u64;
            return;
        };
        let mut released = Vec::new();
        for &tag in tags {
            let tag = q.current_tag(tag);
            if q.release(tag) {
                released.push(tag);
            } else {
                self.counters.unknown_tags += 1;
            }
        }
        for tag in released {
            if requeue {
                self.redeliver(now, name, tag);
            } else {
                self.dead_letter(now, name, tag, "rejected");
            }
        }
        self.dispatch(now, name);
    }

    /// Whether a DELIVER the core decided (its head frames, as
    /// `proto::deliver_head` made them) is still its message's current
    /// delivery to `to`: not released, redelivered or settled since. A body
    /// read off the loop can take that long; a DELIVER that is no longer
    /// current is not sent (its message is back in line, or elsewhere).
    pub fn is_current_delivery(&self, to: &Bytes, deliver: &[Bytes]) -> bool {
        let field = |i: usize| deliver.get(i).and_then(|b| std::str::from_utf8(b).ok());
        let (Some(queue), Some(tag), Some(deliveries)) = (
            field(3),
            field(4).and_then(|t| t.parse::<u64>().ok()),
            field(5).and_then(|d| d.parse::<u32>().ok()),
        ) else {
            return false;
        };
        let Some(q) = self.queues.get(queue) else {
            return false;
        };
        q.messages.get(&q.current_tag(tag)).is_some_and(|m| {
            m.deliveries == deliveries && m.holder.as_ref().is_some_and(|(peer, _)| peer == to)
        })
    }

    /// The DELIVER of `tag` to `to` was not sent (its body could not be read
    /// back): the delivery did not happen. The message goes back in line
    /// with its delivery count as it was, so failed reads never use up its
    /// deliveries. It is tried again at the queue's next dispatch (the next
    /// ack or publish, at the latest the next tick), not at once, so a read
    /// error that lasts is retried with the queue's traffic, not in a loop.
    pub fn delivery_failed(&mut self, to: &Bytes, tag: u64) {
        // Tags are journal offsets, unique over all queues.
        let Some(q) = self.queues.values_mut().find(|q| {
            q.messages
                .get(&tag)
                .and_then(|m| m.holder.as_ref())
                .is_some_and(|(peer, _)| peer == to)
        }) else {
            return;
        };
        q.release(tag);
        if let Some(m) = q.messages.get_mut(&tag) {
            m.deliveries = m.deliveries.saturating_sub(1);
        }
        q.counters.delivered = q.counters.delivered.saturating_sub(1);
        q.make_ready(tag);
    }

    pub(super) fn dispatch(&mut self, now: Now, name: &str) {
        // Only the node serving a queue decides what its messages become.
        let Some(q) = self.queues.get_mut(name).filter(|q| q.serving) else {
            return;
        };
        // In a cluster, the next leader must know how often a message was
        // delivered: deliveries are decisions in the shard's log.
        let mut delivered = Vec::new();
        let record = self.config.served_where_led.then_some(&mut delivered);
        let (expired, earliest) = q.dispatch(now, &mut self.out, record);
        q.counters.expired += expired.len() as u64;
        if !delivered.is_empty() {
            let queue = q.id();
            self.append(
                Entry::Deliver {
                    queue,
                    offsets: delivered,
                },
                Durability::Os,
                None,
            );
        }
        if let Some(d) = earliest {
            self.earliest_ack_deadline_ms =
                Some(self.earliest_ack_deadline_ms.map_or(d, |e| e.min(d)));
        }
        for off in expired {
            self.dead_letter(now, name, off, "expired");
        }
    }
}
