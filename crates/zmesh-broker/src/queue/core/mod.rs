//! The queue broker's protocol core, sans-IO.
//!
//! I/O contract: at start, feed every journal record to [`QueueCore::replay`]
//! in offset order, then call [`QueueCore::replay_done`]. Then call [`QueueCore::handle`] for each ZMQU01 message,
//! [`QueueCore::tick`] no later than [`QueueCore::next_deadline_ms`], and
//! carry out every returned [`QueueAction`] in order: an `Append` with a
//! ticket must be answered by [`QueueCore::persisted`] once the record is
//! durable under its [`Durability`] (or failed), in offset order. Time is
//! wall-clock milliseconds since the Unix epoch, given by the caller, because
//! message TTLs must survive restarts.
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
use zmesh_log::Durability;

mod compact;

pub use compact::{COMPACT_IDLE_MS, CompactLimits, MOVE_HEADER_BYTES, RECORD_OVERHEAD_BYTES};
mod deliver;
mod publish;

use publish::{Batch, Waiter};

use super::journal::{Entry, SETTLE_BATCH_MAX, SettleReason};
use super::options::{Catalog, QueueOptions, QueueSpec};
use super::proto::{self, Command, code};
use super::state::{Body, Dedup, Memory, Msg, Queue, QueueStats};

/// Core settings.
#[derive(Clone, Debug)]
pub struct QueueCoreConfig {
    /// How often consumers hear a HEARTBEAT from the broker.
    pub heartbeat_ms: u64,
    /// A consumer silent for this long is gone: its messages are redelivered.
    pub peer_timeout_ms: u64,
    /// Messages held over all queues.
    pub messages_max: u64,
    /// Body bytes of stored messages kept in memory over all queues: past
    /// it, a stored message's body stays on disk only and is read back when
    /// needed (each queue also has its `max_bytes`, in memory or not).
    pub bytes_max: u64,
    /// Body bytes waiting for their write over all queues: past it,
    /// publishes are refused (503), so a stalled disk cannot fill the memory.
    /// One body is always taken when none waits, whatever its size.
    pub storing_bytes_max: u64,
    /// Consuming peers at once.
    pub peers_max: usize,
    /// Queues at once.
    pub queues_max: usize,
}

impl Default for QueueCoreConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            peer_timeout_ms: 5000,
            messages_max: 20_000_000,
            bytes_max: 4 << 30,
            storing_bytes_max: 4 << 30,
            peers_max: 100_000,
            queues_max: 10_000,
        }
    }
}

/// Something for the driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueAction {
    /// Send frames to a peer.
    Send {
        /// ROUTER identity.
        to: Bytes,
        /// Frames after the identity.
        frames: Vec<Bytes>,
        /// The last frame is the body of the message stored by the journal
        /// record at this offset (a PUBLISH or MOVE): read it with
        /// [`journal::body`](super::journal::body) and push it.
        body_at: Option<u64>,
    },
    /// Append a journal record. With a ticket, answer with
    /// [`QueueCore::persisted`] once it is durable under `durability`.
    Append {
        /// Encoded [`Entry`].
        record: Bytes,
        /// The record ends with the body of the message stored by the
        /// journal record at this offset: append it before writing. Should
        /// it be unreadable, the append failed.
        body_at: Option<u64>,
        /// What "durable" means for this record.
        durability: Durability,
        /// Who waits for it.
        ticket: Option<u64>,
    },
    /// Save the catalog (atomically) before carrying out later actions.
    SaveCatalog(Catalog),
}

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
            core.queues.insert(
                spec.name.clone(),
                Queue::new(spec.clone(), core.memory.clone()),
            );
        }
        core.catalog = catalog;
        core
    }

    fn queue_by_id(&mut self, id: u32) -> Option<&mut Queue> {
        let name = self.names.get(&id)?;
        self.queues.get_mut(name)
    }

    /// Apply one journal record read back at start-up.
    pub fn replay(&mut self, offset: u64, record: &Bytes) {
        let entry = Entry::decode(record);
        if let Some(
            Entry::Publish { queue, .. }
            | Entry::Settle { queue, .. }
            | Entry::Requeue { queue, .. }
            | Entry::Move { queue, .. },
        ) = &entry
        {
            // Should the catalog ever lag the journal, a new queue must not inherit old records.
            self.catalog.next_id = self.catalog.next_id.max(queue + 1);
        }
        match entry {
            Some(Entry::Publish {
                queue,
                published_ms,
                msg_id,
                body,
            }) => {
                let Some(q) = self.queue_by_id(queue) else {
                    return;
                };
                q.remember(msg_id.clone(), Dedup::Stored(offset));
                q.insert(offset, Msg::new(body, msg_id, published_ms, offset));
                self.messages += 1;
            }
            Some(Entry::Settle { queue, offsets, .. }) => {
                let offsets: Vec<u64> = offsets.iter().map(|o| self.moved_to(*o)).collect();
                let Some(q) = self.queue_by_id(queue) else {
                    return;
                };
                let removed = offsets.iter().filter(|o| q.remove(**o).is_some()).count();
                self.messages -= removed as u64;
            }
            Some(Entry::Move {
                queue,
                from,
                order,
                published_ms,
                deliveries,
                msg_id,
                body,
            }) => {
                // Where the message is now: a MOVE after a failed one (or
                // a SETTLE of the original written while the move was in
                // flight) must reach the copy, not resurrect the original.
                let current = self.moved_to(from);
                self.replay_moves.insert(from, offset);
                let Some(q) = self.queue_by_id(queue) else {
                    return;
                };
                // The original is gone already when its segment was deleted.
                if q.remove(current).is_none() {
                    self.messages += 1;
                }
                let q = self.queue_by_id(queue).expect("found above");
                // An id past the window stays forgotten: a move does not make it new.
                q.dedup.update(&msg_id, Dedup::Stored(offset));
                let mut msg = Msg::new(body, msg_id, published_ms, order);
                msg.deliveries = deliveries;
                q.insert(offset, msg);
            }
            Some(Entry::Requeue {
                queue,
                offset,
                deliveries,
            }) => {
                let offset = self.moved_to(offset);
                if let Some(m) = self
                    .queue_by_id(queue)
                    .and_then(|q| q.messages.get_mut(&offset))
                {
                    m.deliveries = deliveries;
                }
            }
            None => tracing::warn!(offset, "journal record of an unknown kind skipped"),
        }
    }

    /// Replay is over: forget how moved messages were renamed.
    pub fn replay_done(&mut self) {
        self.replay_moves = HashMap::default();
    }

    /// During replay, the tag a message stored at `tag` has now (after the
    /// MOVEs replayed so far).
    fn moved_to(&self, mut tag: u64) -> u64 {
        while let Some(&next) = self.replay_moves.get(&tag) {
            tag = next;
        }
        tag
    }

    /// The lowest offset a live message still needs; the log may drop
    /// segments wholly below it. `None` when nothing is held.
    pub fn min_live_offset(&self) -> Option<u64> {
        self.queues
            .values()
            .filter_map(|q| q.messages.first_key_value().map(|(tag, _)| *tag))
            .chain(self.tickets.values().filter_map(|t| match t {
                // The original stays needed until its dead-letter copy is durable.
                Ticket::DeadLetter { from_offset, .. } => Some(*from_offset),
                // Likewise until its move is durable.
                Ticket::Move { from, .. } => Some(*from),
                Ticket::Publish { .. } => None,
            }))
            .min()
    }

    /// The lowest journal offset to keep: the oldest a live message needs,
    /// or a `pending` record (written, not yet answered) needs; with neither,
    /// `end` (everything below may go).
    pub fn keep_from(&self, pending: impl IntoIterator<Item = u64>, end: u64) -> u64 {
        self.min_live_offset()
            .into_iter()
            .chain(pending)
            .min()
            .unwrap_or(end)
    }

    /// When [`QueueCore::tick`] is next due.
    pub fn next_deadline_ms(&self) -> u64 {
        self.earliest_ack_deadline_ms
            .map_or(self.next_heartbeat_ms, |d| d.min(self.next_heartbeat_ms))
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
    pub fn handle(&mut self, now_ms: u64, from: &Bytes, frames: &[Bytes]) -> Vec<QueueAction> {
        if let Some(p) = self.peers.get_mut(from) {
            p.last_seen_ms = now_ms;
        }
        match proto::parse(frames) {
            Ok(cmd) => self.command(now_ms, from, cmd),
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

    fn command(&mut self, now_ms: u64, from: &Bytes, cmd: Command) {
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
                self.publish(now_ms, &queue, msg_id, body, waiter);
            }
            Command::Batch { corr, queue, items } => {
                self.publish_batch(now_ms, from, corr, &queue, items)
            }
            Command::Consume {
                corr,
                queue,
                prefetch,
            } => self.consume(now_ms, from, &corr, &queue, prefetch),
            Command::Cancel { corr, queue, keep } => {
                if self.cancel(now_ms, from, &queue, keep) {
                    self.send(from, proto::ok(&corr, None));
                } else {
                    self.send(
                        from,
                        proto::error(&corr, code::NOT_FOUND, "not consuming that queue"),
                    );
                }
            }
            Command::Ack { queue, tags } => self.ack(now_ms, &queue, &tags),
            Command::Nack {
                queue,
                requeue,
                tags,
            } => self.nack(now_ms, &queue, requeue, &tags),
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
            Command::Heartbeat => {}
            Command::Disconnect => self.drop_peer(now_ms, from),
        }
    }

    fn save_catalog(&mut self) {
        self.out
            .push(QueueAction::SaveCatalog(self.catalog.clone()));
    }

    fn create_queue(&mut self, name: &str, mut options: QueueOptions) {
        if options.dead_letter.is_none() {
            options.dead_letter = Some(if name.ends_with(".dlq") {
                String::new()
            } else {
                format!("{name}.dlq")
            });
        }
        let spec = QueueSpec {
            id: self.catalog.next_id,
            name: name.to_owned(),
            options,
        };
        self.catalog.next_id += 1;
        self.catalog.queues.push(spec.clone());
        self.names.insert(spec.id, spec.name.clone());
        self.queues
            .insert(spec.name.clone(), Queue::new(spec, self.memory.clone()));
    }

    fn declare(&mut self, from: &Bytes, corr: &Bytes, name: &str, options: Option<QueueOptions>) {
        if let Some(q) = self.queues.get(name) {
            let same = match &options {
                None => true,
                Some(o) => {
                    let mut o = o.clone();
                    o.dead_letter = o.dead_letter.or_else(|| q.options().dead_letter.clone());
                    &o == q.options()
                }
            };
            let reply = if same {
                proto::ok(
                    corr,
                    Some(serde_json::to_vec(&q.spec).expect("spec").into()),
                )
            } else {
                proto::error(
                    corr,
                    code::CONFLICT,
                    &format!("queue {name:?} exists with other options"),
                )
            };
            return self.send(from, reply);
        }
        if self.queues.len() + 2 > self.config.queues_max {
            return self.send(
                from,
                proto::error(
                    corr,
                    code::UNAVAILABLE,
                    "the broker's queue limit is reached",
                ),
            );
        }
        self.create_queue(name, options.unwrap_or_default());
        let dlq = self.queues[name]
            .options()
            .dead_letter
            .clone()
            .unwrap_or_default();
        if !dlq.is_empty() && !self.queues.contains_key(&dlq) {
            self.create_queue(
                &dlq,
                QueueOptions {
                    dead_letter: Some(String::new()),
                    // Reading dead letters (and giving them back) must not drop them.
                    max_deliveries: u32::MAX,
                    ..QueueOptions::default()
                },
            );
        }
        self.save_catalog();
        tracing::info!(queue = name, "queue declared");
        let spec = serde_json::to_vec(&self.queues[name].spec).expect("spec");
        self.send(from, proto::ok(corr, Some(spec.into())));
    }

    fn delete(&mut self, from: &Bytes, corr: &Bytes, name: &str) {
        let Some(q) = self.queues.remove(name) else {
            return self.send(
                from,
                proto::error(corr, code::NOT_FOUND, &format!("no queue {name:?}")),
            );
        };
        self.names.remove(&q.id());
        self.catalog.queues.retain(|s| s.id != q.id());
        self.messages -= q.messages.len() as u64;
        for p in self.peers.values_mut() {
            p.queues.retain(|n| n != name);
        }
        // Its records die with its id; nothing to write to the journal.
        self.save_catalog();
        tracing::info!(queue = name, messages = q.messages.len(), "queue deleted");
        let body = format!(r#"{{"deleted_messages":{}}}"#, q.messages.len());
        self.send(from, proto::ok(corr, Some(body.into())));
    }

    fn purge(&mut self, from: &Bytes, corr: &Bytes, name: &str) {
        let Some(q) = self.queues.get_mut(name) else {
            return self.send(
                from,
                proto::error(corr, code::NOT_FOUND, &format!("no queue {name:?}")),
            );
        };
        // Waiting in line, or being moved by compaction (it would be in line).
        let offsets: Vec<u64> = q
            .messages
            .iter()
            .filter(|(_, m)| m.holder.is_none())
            .map(|(tag, _)| *tag)
            .collect();
        for o in &offsets {
            q.remove(*o);
        }
        let id = q.id();
        self.messages -= offsets.len() as u64;
        let body = format!(r#"{{"purged":{}}}"#, offsets.len());
        self.settle(id, SettleReason::Purged, offsets);
        self.send(from, proto::ok(corr, Some(body.into())));
    }

    /// The record of `ticket` is durable at `offset` (`Ok`), or could not be
    /// stored (`Err` with the reason).
    pub fn persisted(
        &mut self,
        now_ms: u64,
        ticket: u64,
        result: Result<u64, String>,
    ) -> Vec<QueueAction> {
        match self.tickets.remove(&ticket) {
            Some(Ticket::Publish {
                queue,
                msg,
                waiters,
            }) => self.publish_persisted(now_ms, queue, msg, waiters, result),
            Some(Ticket::DeadLetter {
                from,
                from_offset,
                to,
                msg,
            }) => self.dead_letter_persisted(now_ms, from, from_offset, to, msg, result),
            Some(Ticket::Move { queue, from }) => self.move_persisted(now_ms, queue, from, result),
            None => {}
        }
        std::mem::take(&mut self.out)
    }

    /// `peer`'s connection closed: its consumers are dropped at once and the
    /// messages they held go back to their queues (or to the dead letters),
    /// instead of after `peer_timeout_ms` of silence.
    pub fn connection_closed(&mut self, now_ms: u64, peer: &Bytes) -> Vec<QueueAction> {
        self.congested.remove(peer);
        if self.peers.contains_key(peer) {
            tracing::info!(peer = ?peer, "consumer's connection closed; its messages go back");
            self.counters.peers_disconnected += 1;
            self.drop_peer(now_ms, peer);
        }
        std::mem::take(&mut self.out)
    }

    /// `peer` reads too slowly (`true`) or has caught up (`false`), as the
    /// driver's outbox reports: its consumers get no deliveries meanwhile, so
    /// messages go to other consumers or wait in the queue, not in memory
    /// in front of a reader that does not read.
    pub fn set_congested(
        &mut self,
        now_ms: u64,
        peer: &Bytes,
        congested: bool,
    ) -> Vec<QueueAction> {
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
                    self.dispatch(now_ms, &name);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Timers: ack timeouts, silent consumers, TTL expiry, heartbeats.
    pub fn tick(&mut self, now_ms: u64) -> Vec<QueueAction> {
        let silent: Vec<Bytes> = self
            .peers
            .iter()
            .filter(|(_, p)| now_ms >= p.last_seen_ms + self.config.peer_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for peer in silent {
            tracing::info!(peer = ?peer, "consumer silent too long; its messages go back");
            self.counters.peers_expired += 1;
            self.drop_peer(now_ms, &peer);
        }
        let mut next_ack: Option<u64> = None;
        // Rebuilt below: by the scan of held messages and by the dispatches.
        self.earliest_ack_deadline_ms = None;
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in &names {
            let q = &self.queues[name];
            let (overdue, next) = q.overdue(now_ms);
            let expired = q.expired_ready(now_ms);
            if let Some(n) = next {
                next_ack = Some(next_ack.map_or(n, |a| a.min(n)));
            }
            for off in overdue {
                if let Some(q) = self.queues.get_mut(name) {
                    q.release(off);
                }
                self.redeliver(now_ms, name, off);
            }
            if !expired.is_empty() {
                if let Some(q) = self.queues.get_mut(name) {
                    q.counters.expired += expired.len() as u64;
                    for off in &expired {
                        q.unready(*off);
                    }
                }
                for off in expired {
                    self.dead_letter(now_ms, name, off, "expired");
                }
            }
            self.dispatch(now_ms, name);
        }
        if let Some(n) = next_ack {
            self.earliest_ack_deadline_ms =
                Some(self.earliest_ack_deadline_ms.map_or(n, |e| e.min(n)));
        }
        if now_ms >= self.next_heartbeat_ms {
            let peers: Vec<Bytes> = self.peers.keys().cloned().collect();
            for p in peers {
                self.send(&p, proto::heartbeat());
            }
            self.next_heartbeat_ms = now_ms + self.config.heartbeat_ms;
        }
        std::mem::take(&mut self.out)
    }
}
