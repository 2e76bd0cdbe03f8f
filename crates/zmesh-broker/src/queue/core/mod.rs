//! The queue broker's protocol core, sans-IO.
//!
//! I/O contract: at start, feed every journal record to [`QueueCore::replay`]
//! in offset order, then call [`QueueCore::replay_done`]. Then call [`QueueCore::handle`] for each ZMQU01 message,
//! [`QueueCore::tick`] no later than [`QueueCore::next_deadline_ms`], and
//! carry out every returned [`QueueAction`] in order: an `Append` with a
//! ticket must be answered by [`QueueCore::persisted`] once the record is
//! durable under its [`Durability`] (or failed), in offset order.
//!
//! Time comes in as a [`Now`] from the caller's one clock: every timer (ack
//! deadlines, peer timeouts, heartbeats, TTL while running, compaction's idle
//! wait) runs on its monotonic reading, so a wall-clock step changes none of
//! them; the wall clock only stamps a message's publish time in its records,
//! from which replay derives the TTL left.
//!
//! Invariants: a message is in exactly one state (storing, ready, held by one
//! consumer) until settled; a CONFIRM is sent only after `persisted(ok)`; a
//! consumer never holds more than its prefetch; a message leaves its queue
//! only by a SETTLE record (ack, purge, drop) or after its dead-letter copy
//! is durable, so nothing confirmed is lost across a crash — at worst
//! delivered again.

// foldhash: fast, and randomly seeded per process (ids come from untrusted peers).
use foldhash::HashMap;

use bytes::Bytes;
use zmesh::clock::Now;
use zmesh_log::Durability;

pub mod action;
mod catalog;
mod compact;
mod config;

pub use compact::{COMPACT_IDLE_MS, CompactLimits, MOVE_HEADER_BYTES, RECORD_OVERHEAD_BYTES};
mod deliver;
mod publish;
mod replay;
mod replicated;
mod snapshot;

pub use action::QueueAction;
pub use catalog::options_as_created;
pub use config::QueueCoreConfig;
pub use snapshot::{NotInMemory, QueueSnapshot, SnapshotMessage};

use publish::{Batch, Waiter};
pub use replicated::Served;

/// A single broker's answer to NODES.
const NO_NODES: &[u8] = br#"{"node":null,"nodes":{}}"#;
use replicated::not_served_here;

use super::journal::{Entry, SETTLE_BATCH_MAX, SettleReason};
use super::options::{Catalog, QueueOptions, QueueSpec};
use super::proto::{self, Command, code};
use super::state::{Body, Dedup, Memory, Msg, Queue, QueueStats};

enum Ticket {
    Publish {
        queue: u32,
        msg: Msg,
        /// The publisher first, then repeats of its message id.
        waiters: Vec<Waiter>,
    },
    DeadLetter {
        from: u32,
        from_offset: u64,
        to: u32,
        msg: Msg,
    },
    /// Compaction's copy of the message at `from` (which stays until then).
    Move { queue: u32, from: u64 },
}

struct Peer {
    last_seen_ms: u64,
    queues: Vec<String>,
}

/// Core-wide counters.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CoreCounters {
    /// Messages that were not valid ZMQU01.
    pub malformed: u64,
    /// Acks and nacks for tags not held (late, repeated, unknown).
    pub unknown_tags: u64,
    /// Writes the storage refused.
    pub storage_errors: u64,
    /// Consumers dropped for silence.
    pub peers_expired: u64,
    /// Consumers dropped because their connection closed.
    pub peers_disconnected: u64,
    /// Messages copied forward by journal compaction.
    pub moved: u64,
    /// Compaction moves the storage refused.
    pub move_failures: u64,
}

/// Durable work queues: see the module docs for the I/O contract.
pub struct QueueCore {
    config: QueueCoreConfig,
    catalog: Catalog,
    queues: HashMap<String, Queue>,
    names: HashMap<u32, String>,
    tickets: HashMap<u64, Ticket>,
    next_ticket: u64,
    /// BATCH publishes waiting for their last message's outcome.
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    peers: HashMap<Bytes, Peer>,
    next_heartbeat_ms: u64,
    earliest_ack_deadline_ms: Option<u64>,
    messages: u64,
    /// Shutting down: publishes are refused (503), the rest goes on.
    draining: bool,
    /// During replay: MOVE records seen, original tag -> copy's tag.
    replay_moves: HashMap<u64, u64>,
    /// Bodies kept in memory over all queues, within `bytes_max`.
    memory: Memory,
    /// Body bytes waiting for their write, over all queues.
    storing_bytes: u64,
    /// Peers whose messages pile up unread in the driver's outbox: their
    /// consumers get no deliveries until relieved. Bounded by the outbox.
    congested: foldhash::HashSet<Bytes>,
    out: Vec<QueueAction>,
    /// Counters.
    pub counters: CoreCounters,
}

impl QueueCore {
    /// A core with the queues of `catalog` (empty until replayed).
    ///
    /// ```
    /// use zmesh_broker::queue::{QueueCore, QueueCoreConfig, Catalog};
    /// let core = QueueCore::new(QueueCoreConfig::default(), Catalog::default());
    /// assert!(core.stats().is_empty());
    /// ```
    pub fn new(config: QueueCoreConfig, catalog: Catalog) -> QueueCore {
        let memory = Memory::new(config.bytes_max);
        let mut core = QueueCore {
            config,
            catalog: Catalog::default(),
            queues: HashMap::default(),
            names: HashMap::default(),
            tickets: HashMap::default(),
            next_ticket: 0,
            batches: HashMap::default(),
            next_batch: 0,
            peers: HashMap::default(),
            congested: Default::default(),
            next_heartbeat_ms: 0,
            earliest_ack_deadline_ms: None,
            messages: 0,
            draining: false,
            replay_moves: HashMap::default(),
            memory,
            storing_bytes: 0,
            out: Vec::new(),
            counters: CoreCounters::default(),
        };
        for spec in &catalog.queues {
            core.names.insert(spec.id, spec.name.clone());
            let mut queue = Queue::new(spec.clone(), core.memory.clone());
            queue.serving = !core.config.served_where_led;
            core.queues.insert(spec.name.clone(), queue);
        }
        core.catalog = catalog;
        core
    }

    fn queue_by_id(&mut self, id: u32) -> Option<&mut Queue> {
        let name = self.names.get(&id)?;
        self.queues.get_mut(name)
    }

    /// When [`QueueCore::tick`] is next due, on the monotonic clock.
    pub fn next_deadline_ms(&self) -> u64 {
        self.earliest_ack_deadline_ms
            .map_or(self.next_heartbeat_ms, |d| d.min(self.next_heartbeat_ms))
    }

    /// Every rule of the core's state, checked in full; panics on the first
    /// broken one. O(n) in what it holds: for tests, simulations and fuzz
    /// targets, not for a running broker.
    pub fn check_invariants(&self) {
        let mut messages = 0;
        for (name, q) in &self.queues {
            assert_eq!(&q.spec.name, name);
            q.check();
            // Counted from acceptance: stored ones and those being stored.
            messages += q.messages.len() as u64 + q.storing;
            if let Some(d) = q.earliest_held_deadline() {
                assert!(
                    self.earliest_ack_deadline_ms.is_some_and(|e| e <= d),
                    "{name}: an ack deadline at {d} is earlier than the next tick ({:?})",
                    self.earliest_ack_deadline_ms
                );
            }
        }
        // A message being dead-lettered lives in its ticket until the copy is stored.
        messages += self
            .tickets
            .values()
            .filter(|t| matches!(t, Ticket::DeadLetter { .. }))
            .count() as u64;
        assert_eq!(messages, self.messages, "messages over all queues");
        for (id, name) in &self.names {
            assert!(self.queues.get(name).is_some_and(|q| q.spec.id == *id));
        }
    }

    /// Whether a queue of this name is declared here.
    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.contains_key(name)
    }

    /// Every queue's counters, by name.
    pub fn stats(&self) -> Vec<QueueStats> {
        let mut v: Vec<_> = self.queues.values().map(Queue::stats).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Refuse new publishes from now on ("503 broker shutting down").
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Messages held over all queues.
    pub fn message_count(&self) -> u64 {
        self.messages
    }

    fn send(&mut self, to: &Bytes, frames: Vec<Bytes>) {
        self.out.push(QueueAction::Send {
            to: to.clone(),
            frames,
            body_at: None,
        });
    }

    fn append(&mut self, entry: Entry, durability: Durability, ticket: Option<u64>) {
        self.out.push(QueueAction::Append {
            record: entry.encode(),
            body_at: None,
            durability,
            ticket,
        });
    }

    /// Append a record that stores message `msg` (found at `tag`): `entry`
    /// with `body` empty; the body is added here when in memory, or by the
    /// driver from the journal.
    fn append_with_body(
        &mut self,
        entry: Entry,
        tag: u64,
        msg: &Msg,
        durability: Durability,
        ticket: u64,
    ) {
        let (record, body_at) = match &msg.body {
            Body::InMemory(b) => {
                let mut r = bytes::BytesMut::from(&entry.encode()[..]);
                r.extend_from_slice(b);
                (r.freeze(), None)
            }
            Body::OnDisk { .. } => (entry.encode(), Some(tag)),
        };
        self.out.push(QueueAction::Append {
            record,
            body_at,
            durability,
            ticket: Some(ticket),
        });
    }

    /// Bodies kept in memory over all queues.
    pub fn bytes_in_memory(&self) -> u64 {
        self.memory.get()
    }

    fn settle(&mut self, queue: u32, reason: SettleReason, offsets: Vec<u64>) {
        for chunk in offsets.chunks(SETTLE_BATCH_MAX) {
            self.append(
                Entry::Settle {
                    queue,
                    reason,
                    offsets: chunk.to_vec(),
                },
                Durability::Os,
                None,
            );
        }
    }

    /// Handle one ZMQU01 message from peer `from` (frames after the identity).
    pub fn handle(&mut self, now: Now, from: &Bytes, frames: &[Bytes]) -> Vec<QueueAction> {
        if let Some(p) = self.peers.get_mut(from) {
            p.last_seen_ms = now.mono_ms;
        }
        match proto::parse(frames) {
            Ok(cmd) => self.command(now, from, cmd),
            Err(e) => {
                self.counters.malformed += 1;
                tracing::debug!(reason = %e.reason, "malformed queue message");
                if let Some(corr) = e.corr {
                    self.send(from, proto::error(&corr, code::BAD_REQUEST, &e.reason));
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    fn command(&mut self, now: Now, from: &Bytes, cmd: Command) {
        match cmd {
            Command::Declare {
                corr,
                queue,
                options,
            } => self.declare(from, &corr, &queue, options),
            Command::Delete { corr, queue } => self.delete(from, &corr, &queue),
            Command::Purge { corr, queue } => self.purge(from, &corr, &queue),
            Command::Publish {
                corr,
                queue,
                msg_id,
                body,
            } => {
                let waiter = Waiter::Single {
                    to: from.clone(),
                    corr,
                    duplicate: false,
                };
                self.publish(now, &queue, msg_id, body, waiter);
            }
            Command::Batch { corr, queue, items } => {
                self.publish_batch(now, from, corr, &queue, items)
            }
            Command::Consume {
                corr,
                queue,
                prefetch,
            } => self.consume(now, from, &corr, &queue, prefetch),
            Command::Cancel { corr, queue, keep } => {
                if self.cancel(now, from, &queue, keep) {
                    self.send(from, proto::ok(&corr, None));
                } else {
                    self.send(
                        from,
                        proto::error(&corr, code::NOT_FOUND, "not consuming that queue"),
                    );
                }
            }
            Command::Ack { queue, tags } => self.ack(now, &queue, &tags),
            Command::Nack {
                queue,
                requeue,
                tags,
            } => self.nack(now, &queue, requeue, &tags),
            Command::Stats { corr, queue } => {
                let stats: Vec<_> = match &queue {
                    Some(name) => match self.queues.get(name) {
                        Some(q) => vec![q.stats()],
                        None => {
                            return self.send(
                                from,
                                proto::error(&corr, code::NOT_FOUND, &format!("no queue {name:?}")),
                            );
                        }
                    },
                    None => self.stats(),
                };
                let body = serde_json::to_vec(&stats).expect("stats serialize");
                self.send(from, proto::ok(&corr, Some(body.into())));
            }
            // A single broker: no other node to name (a cluster answers
            // before its queues are asked).
            Command::Nodes { corr } => {
                self.send(from, proto::ok(&corr, Some(Bytes::from_static(NO_NODES))))
            }
            Command::Heartbeat => {}
            Command::Disconnect => self.drop_peer(now, from),
        }
    }

    /// The record of `ticket` is durable at `offset` (`Ok`), or could not be
    /// stored (`Err` with the reason).
    pub fn persisted(
        &mut self,
        now: Now,
        ticket: u64,
        result: Result<u64, String>,
    ) -> Vec<QueueAction> {
        match self.tickets.remove(&ticket) {
            Some(Ticket::Publish {
                queue,
                msg,
                waiters,
            }) => self.publish_persisted(now, queue, msg, waiters, result),
            Some(Ticket::DeadLetter {
                from,
                from_offset,
                to,
                msg,
            }) => self.dead_letter_persisted(now, from, from_offset, to, msg, result),
            Some(Ticket::Move { queue, from }) => self.move_persisted(now, queue, from, result),
            None => {}
        }
        std::mem::take(&mut self.out)
    }

    /// `peer`'s connection closed: its consumers are dropped at once and the
    /// messages they held go back to their queues (or to the dead letters),
    /// instead of after `peer_timeout_ms` of silence.
    pub fn connection_closed(&mut self, now: Now, peer: &Bytes) -> Vec<QueueAction> {
        self.congested.remove(peer);
        if self.peers.contains_key(peer) {
            tracing::info!(peer = ?peer, "consumer's connection closed; its messages go back");
            self.counters.peers_disconnected += 1;
            self.drop_peer(now, peer);
        }
        std::mem::take(&mut self.out)
    }

    /// `peer` reads too slowly (`true`) or has caught up (`false`), as the
    /// driver's outbox reports: its consumers get no deliveries meanwhile, so
    /// messages go to other consumers or wait in the queue, not in memory
    /// in front of a reader that does not read.
    pub fn set_congested(&mut self, now: Now, peer: &Bytes, congested: bool) -> Vec<QueueAction> {
        let changed = if congested {
            self.congested.insert(peer.clone())
        } else {
            self.congested.remove(peer)
        };
        if let Some(p) = self.peers.get(peer).filter(|_| changed) {
            let names = p.queues.clone();
            for name in names {
                let Some(q) = self.queues.get_mut(&name) else {
                    continue;
                };
                for c in q.consumers.iter_mut().filter(|c| c.peer == *peer) {
                    c.congested = congested;
                }
                if !congested {
                    self.dispatch(now, &name);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Timers: ack timeouts, silent consumers, TTL expiry, heartbeats.
    pub fn tick(&mut self, now: Now) -> Vec<QueueAction> {
        let silent: Vec<Bytes> = self
            .peers
            .iter()
            .filter(|(_, p)| now.mono_ms >= p.last_seen_ms + self.config.peer_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for peer in silent {
            tracing::info!(peer = ?peer, "consumer silent too long; its messages go back");
            self.counters.peers_expired += 1;
            self.drop_peer(now, &peer);
        }
        let mut next_ack: Option<u64> = None;
        // Rebuilt below: by the scan of held messages and by the dispatches.
        self.earliest_ack_deadline_ms = None;
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in &names {
            let Some(q) = self.queues.get_mut(name).filter(|q| q.serving) else {
                continue;
            };
            let (overdue, next) = q.overdue(now);
            let expired = q.expired_ready(now);
            if let Some(n) = next {
                next_ack = Some(next_ack.map_or(n, |a| a.min(n)));
            }
            for off in overdue {
                if let Some(q) = self.queues.get_mut(name) {
                    q.release(off);
                }
                self.redeliver(now, name, off);
            }
            if !expired.is_empty() {
                if let Some(q) = self.queues.get_mut(name) {
                    q.counters.expired += expired.len() as u64;
                    for off in &expired {
                        q.unready(*off);
                    }
                }
                for off in expired {
                    self.dead_letter(now, name, off, "expired");
                }
            }
            self.dispatch(now, name);
        }
        if let Some(n) = next_ack {
            self.earliest_ack_deadline_ms =
                Some(self.earliest_ack_deadline_ms.map_or(n, |e| e.min(n)));
        }
        if now.mono_ms >= self.next_heartbeat_ms {
            let peers: Vec<Bytes> = self.peers.keys().cloned().collect();
            for p in peers {
                self.send(&p, proto::heartbeat());
            }
            self.next_heartbeat_ms = now.mono_ms + self.config.heartbeat_ms;
        }
        // Whatever was due has been handled: the next tick is in the future.
        debug_assert!(self.next_heartbeat_ms > now.mono_ms);
        debug_assert!(
            self.earliest_ack_deadline_ms
                .is_none_or(|d| d > now.mono_ms),
            "an overdue ack was left for later"
        );
        debug_assert!(self.peers.len() <= self.config.peers_max);
        std::mem::take(&mut self.out)
    }
}
