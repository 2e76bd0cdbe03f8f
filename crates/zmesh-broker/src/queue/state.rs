//! One queue's messages and consumers.
//!
//! ```text
//!                 PUBLISH                persisted(ok)
//!   (producer) ──────────► storing ─────────────────► ready ──dispatch──► held by a consumer
//!                              │ persisted(err): ERROR 507      ▲               │ ACK: settled
//!                              ▼                               │  NACK(requeue) │ ack timeout,
//!                           refused                            └────────────────┤ consumer gone
//!                                                                               │ NACK(no requeue),
//!                                   dead-letter queue ◄── deliveries ≥ max ─────┘ TTL expired
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::{HashMap, HashSet};

pub(crate) use crate::dedup::Dedup;
use crate::dedup::DedupWindow;
use crate::timers::Deadlines;

use bytes::Bytes;
use serde::Serialize;
use zmesh::clock::Now;

use super::core::action::QueueAction;
use super::options::{QueueOptions, QueueSpec};
use super::proto;

mod check;

/// A stored message's body: in memory, or only in the journal record that
/// stores the message (at its tag), read back when it is needed.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    InMemory(Bytes),
    OnDisk { len: u64 },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::InMemory(b) => b.len() as u64,
            Body::OnDisk { len } => *len,
        }
    }
}

/// A stored message.
#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub body: Body,
    pub msg_id: Bytes,
    /// When it was published, on the wall clock: what its records store.
    pub published_ms: u64,
    /// The same moment on the monotonic clock, which its TTL runs from: a
    /// wall-clock step expires nothing. Derived from `published_ms` at replay.
    pub born_mono_ms: u64,
    pub deliveries: u32,
    /// Its place in the queue: the offset of its first PUBLISH record. The
    /// tag changes when compaction moves the message to a new record; this
    /// does not, so a moved message keeps its turn.
    pub order: u64,
    /// The consumer holding it and when its ack is due.
    pub holder: Option<(Bytes, u64)>,
    /// Being copied to the journal's tail by compaction: it stays in line
    /// but holds it (is not delivered, nor expired) until the copy is
    /// durable.
    pub moving: bool,
    /// The tag its holder knows it by, when compaction moved it while held
    /// (the queue's `aliases` map that tag to this one).
    pub delivered_as: Option<u64>,
}

impl Msg {
    /// A message published `now`, first stored at `offset`, never delivered.
    pub fn new(body: Bytes, msg_id: Bytes, now: Now, offset: u64) -> Msg {
        Self::published_at(body, msg_id, now.wall_ms, now.mono_ms, offset)
    }

    /// A message read back at `now` whose records say it was published at
    /// `published_ms` (wall clock): its age then is what has passed on the
    /// wall clock since (none if that is in the future).
    pub fn replayed(body: Bytes, msg_id: Bytes, published_ms: u64, now: Now, offset: u64) -> Msg {
        let age_ms = now.wall_ms.saturating_sub(published_ms);
        let born_mono_ms = now.mono_ms.saturating_sub(age_ms);
        Self::published_at(body, msg_id, published_ms, born_mono_ms, offset)
    }

    fn published_at(
        body: Bytes,
        msg_id: Bytes,
        published_ms: u64,
        born_mono_ms: u64,
        offset: u64,
    ) -> Msg {
        Msg {
            body: Body::InMemory(body),
            msg_id,
            published_ms,
            born_mono_ms,
            deliveries: 0,
            order: offset,
            holder: None,
            moving: false,
            delivered_as: None,
        }
    }
}

/// One consumer of a queue: a peer and its credit window.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub peer: Bytes,
    pub prefetch: u32,
    /// Tags delivered and not yet settled; never more than `prefetch`.
    pub held: HashSet<u64>,
    /// Its deliveries pile up unread in the broker's outbox: none for now.
    pub congested: bool,
}

/// Counters of one queue.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueCounters {
    /// Publishes accepted for storage.
    pub published: u64,
    /// Publishes confirmed.
    pub confirmed: u64,
    /// Publishes recognised as repeats of a stored message id.
    pub duplicates: u64,
    /// Publishes refused (limits, storage errors).
    pub refused: u64,
    /// Deliveries, first and repeated.
    pub delivered: u64,
    /// Messages returned to the queue (nack, ack timeout, consumer gone).
    pub redelivered: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages dropped with nowhere to go (no dead-letter queue).
    pub dropped: u64,
    /// Messages whose TTL ran out.
    pub expired: u64,
}

/// A queue as `zmesh queue stats` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct QueueStats {
    /// Name.
    pub name: String,
    /// Messages waiting for a consumer.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacked: u64,
    /// Messages being written, not yet confirmed.
    pub storing: u64,
    /// Body bytes held.
    pub bytes: u64,
    /// Messages whose body is on disk only (read back at delivery).
    pub on_disk: u64,
    /// Consumers.
    pub consumers: usize,
    /// Counters since the broker started.
    #[serde(flatten)]
    pub counters: QueueCounters,
    /// Settings.
    pub options: QueueOptions,
}

/// Bodies kept in memory by all the queues of one core together, within a
/// broker-wide budget: a stored message whose body would not fit keeps it on
/// disk only. Each queue adds and removes its own; a deleted queue gives its
/// bytes back when dropped.
#[derive(Clone, Debug)]
pub(crate) struct Memory {
    used: Arc<AtomicU64>,
    budget: u64,
}

impl Memory {
    pub fn new(budget: u64) -> Memory {
        Memory {
            used: Arc::default(),
            budget,
        }
    }

    pub fn get(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Count `n` more bytes in memory if they fit the budget.
    fn try_add(&self, n: u64) -> bool {
        // One core owns the queues: no other thread changes `used` meanwhile.
        if self.get() + n > self.budget {
            return false;
        }
        self.used.fetch_add(n, Ordering::Relaxed);
        true
    }

    fn sub(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

pub(crate) struct Queue {
    pub spec: QueueSpec,
    /// By tag (the offset of the record that stores them), so that the
    /// messages of a journal segment are a range.
    pub messages: BTreeMap<u64, Msg>,
    /// Messages waiting for a consumer, as (order, tag), oldest first.
    pub ready: BTreeSet<(u64, u64)>,
    pub consumers: Vec<Consumer>,
    /// Held messages whose consumer left with CANCEL keep: they wait for an
    /// ack by tag or their ack timeout.
    pub detached: HashSet<u64>,
    /// The ack deadline of every held message, by tag, earliest first (with
    /// entries of messages since acked, released or moved: see [`Deadlines`]).
    ack_deadlines: Deadlines<u64>,
    /// Tags held messages were delivered under -> their tags since
    /// compaction moved them: their holders ack and nack the old ones.
    pub aliases: HashMap<u64, u64>,
    /// Next consumer to try, for round-robin dispatch.
    pub next_consumer: usize,
    /// When a message was last delivered (0: never): compaction leaves a
    /// queue alone while it is being consumed.
    pub last_delivery_ms: u64,
    pub storing: u64,
    /// Body bytes held (stored and being stored), in memory or not.
    bytes: u64,
    /// Body bytes of stored messages kept in memory; change it only
    /// through the methods below, which keep the broker-wide total.
    in_memory: u64,
    /// Stored messages whose body is on disk only.
    on_disk: u64,
    memory: Memory,
    /// Msg id bytes of the stored messages (for the journal's live size).
    pub id_bytes: u64,
    pub dedup: DedupWindow,
    pub counters: QueueCounters,
    /// Whether this node serves the queue: always on a single broker; in a
    /// cluster, while it leads the queue's shard.
    pub serving: bool,
    /// While another node serves it: where clients reach that node, if
    /// this node knows (what a CONSUME or PURGE here is redirected to).
    pub served_by: Option<std::sync::Arc<str>>,
}

impl Queue {
    pub fn new(spec: QueueSpec, memory: Memory) -> Queue {
        Queue {
            spec,
            messages: BTreeMap::new(),
            ready: BTreeSet::new(),
            consumers: Vec::new(),
            detached: HashSet::default(),
            ack_deadlines: Deadlines::default(),
            aliases: HashMap::default(),
            next_consumer: 0,
            last_delivery_ms: 0,
            storing: 0,
            bytes: 0,
            in_memory: 0,
            on_disk: 0,
            memory,
            id_bytes: 0,
            dedup: DedupWindow::default(),
            counters: QueueCounters::default(),
            serving: true,
            served_by: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.spec.id
    }

    pub fn options(&self) -> &QueueOptions {
        &self.spec.options
    }

    pub fn len(&self) -> u64 {
        self.messages.len() as u64 + self.storing
    }

    /// Remember a producer's message id, forgetting the oldest past the window.
    pub fn remember(&mut self, msg_id: Bytes, state: Dedup) {
        let window = self.options().dedup_window as usize;
        self.dedup.remember(msg_id, state, window);
    }

    pub fn forget(&mut self, msg_id: &Bytes) {
        self.dedup.forget(msg_id);
    }

    /// Add a stored message as ready. Its body stays in memory while the
    /// broker-wide budget allows; past it, the body is dropped here and read
    /// back from the journal record at `offset` when needed.
    pub fn insert(&mut self, offset: u64, mut msg: Msg) {
        let len = msg.body.len();
        self.bytes += len;
        if matches!(msg.body, Body::InMemory(_)) && self.memory.try_add(len) {
            self.in_memory += len;
        } else {
            msg.body = Body::OnDisk { len };
            // The id may be a slice of the buffer that held the body (a
            // received frame, a replayed record): its own copy lets that go.
            msg.msg_id = Bytes::copy_from_slice(&msg.msg_id);
            self.on_disk += 1;
        }
        self.id_bytes += msg.msg_id.len() as u64;
        self.ready.insert((msg.order, offset));
        self.messages.insert(offset, msg);
    }

    /// The tag a message known to its holder as `tag` has now.
    pub fn current_tag(&self, tag: u64) -> u64 {
        self.aliases.get(&tag).copied().unwrap_or(tag)
    }

    /// The message at `from` now has tag `to` (compaction moved it): its
    /// place in line, its holder's window and its holder's name for it follow.
    pub fn retag(&mut self, from: u64, to: u64) {
        let Some(mut m) = self.messages.remove(&from) else {
            return;
        };
        if self.ready.remove(&(m.order, from)) {
            self.ready.insert((m.order, to));
        }
        if let Some((peer, _)) = &m.holder {
            if self.detached.remove(&from) {
                self.detached.insert(to);
            } else if let Some(c) = self.consumers.iter_mut().find(|c| c.peer == *peer)
                && c.held.remove(&from)
            {
                c.held.insert(to);
            }
            let known = *m.delivered_as.get_or_insert(from);
            self.aliases.insert(known, to);
        }
        let deadline = m.holder.as_ref().map(|(_, d)| *d);
        self.messages.insert(to, m);
        if let Some(deadline) = deadline {
            self.ack_deadlines
                .push(deadline, to, is_held_until(&self.messages));
        }
    }

    /// Body bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Count `n` more body bytes (a message being stored).
    pub fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
    }

    /// Count `n` body bytes fewer (a message stored or refused).
    pub fn sub_bytes(&mut self, n: u64) {
        self.bytes -= n;
    }

    /// Put a stored message (back) in line; false when it is not stored.
    pub fn make_ready(&mut self, offset: u64) -> bool {
        let Some(m) = self.messages.get(&offset) else {
            return false;
        };
        self.ready.insert((m.order, offset));
        true
    }

    /// Take a message out of line (it stays stored); true when it was in line.
    pub fn unready(&mut self, offset: u64) -> bool {
        self.messages
            .get(&offset)
            .is_some_and(|m| self.ready.remove(&(m.order, offset)))
    }

    /// Take a message out for good (settled or moved).
    pub fn remove(&mut self, offset: u64) -> Option<Msg> {
        let msg = self.messages.remove(&offset)?;
        self.ready.remove(&(msg.order, offset));
        self.bytes -= msg.body.len();
        match msg.body {
            Body::InMemory(_) => {
                self.in_memory -= msg.body.len();
                self.memory.sub(msg.body.len());
            }
            Body::OnDisk { .. } => self.on_disk -= 1,
        }
        self.id_bytes -= msg.msg_id.len() as u64;
        self.detached.remove(&offset);
        if let Some(known) = msg.delivered_as {
            self.aliases.remove(&known);
        }
        if let Some((peer, _)) = &msg.holder
            && let Some(c) = self.consumers.iter_mut().find(|c| c.peer == *peer)
        {
            c.held.remove(&offset);
        }
        Some(msg)
    }

    /// Release a held message from its consumer; true when it was held.
    pub fn release(&mut self, offset: u64) -> bool {
        let Some(msg) = self.messages.get_mut(&offset) else {
            return false;
        };
        let Some((peer, _)) = msg.holder.take() else {
            return false;
        };
        if let Some(known) = msg.delivered_as.take() {
            self.aliases.remove(&known);
        }
        self.detached.remove(&offset);
        if let Some(c) = self.consumers.iter_mut().find(|c| c.peer == peer) {
            c.held.remove(&offset);
        }
        true
    }

    /// Hand ready messages to consumers with credit, round-robin, oldest
    /// first. Returns the offsets found expired on the way, for the caller to
    /// dead-letter, and the earliest ack deadline set; with `delivered`,
    /// notes there the offsets delivered.
    pub fn dispatch(
        &mut self,
        now: Now,
        sends: &mut Vec<QueueAction>,
        mut delivered: Option<&mut Vec<u64>>,
    ) -> (Vec<u64>, Option<u64>) {
        let mut expired = Vec::new();
        let mut earliest = None;
        let n = self.consumers.len();
        if n == 0 {
            return (expired, earliest);
        }
        let ttl = self.spec.options.message_ttl_ms;
        let ack_timeout = self.spec.options.ack_timeout_ms;
        while let Some(&(_, offset)) = self.ready.first() {
            let msg = self
                .messages
                .get_mut(&offset)
                .expect("ready implies stored");
            if msg.moving {
                // Its copy is being made durable: nothing overtakes it (and
                // it expires, if due, once it has its new tag).
                break;
            }
            if ttl.is_some_and(|ttl| now.mono_ms >= msg.born_mono_ms.saturating_add(ttl)) {
                self.ready.pop_first();
                expired.push(offset);
                continue;
            }
            let Some(i) = (0..n).map(|k| (self.next_consumer + k) % n).find(|&i| {
                let c = &self.consumers[i];
                !c.congested && c.held.len() < c.prefetch as usize
            }) else {
                break;
            };
            self.next_consumer = (i + 1) % n;
            self.ready.pop_first();
            self.last_delivery_ms = now.mono_ms;
            let consumer = &mut self.consumers[i];
            let deadline = now.mono_ms + ack_timeout;
            msg.deliveries += 1;
            msg.holder = Some((consumer.peer.clone(), deadline));
            consumer.held.insert(offset);
            earliest.get_or_insert(deadline);
            self.counters.delivered += 1;
            if let Some(delivered) = delivered.as_deref_mut() {
                delivered.push(offset);
            }
            let mut frames =
                proto::deliver_head(&self.spec.name, offset, msg.deliveries, &msg.msg_id);
            let body_at = match &msg.body {
                Body::InMemory(b) => {
                    frames.push(b.clone());
                    None
                }
                Body::OnDisk { .. } => Some(offset),
            };
            sends.push(QueueAction::Send {
                to: consumer.peer.clone(),
                frames,
                body_at,
            });
            self.ack_deadlines
                .push(deadline, offset, is_held_until(&self.messages));
        }
        (expired, earliest)
    }

    /// Offsets of held messages whose ack is overdue, and the earliest deadline still ahead.
    /// Costs what is due, not what is held.
    pub fn overdue(&mut self, now: Now) -> (Vec<u64>, Option<u64>) {
        let live = is_held_until(&self.messages);
        let mut due = self.ack_deadlines.pop_due(now.mono_ms, live);
        // A message redelivered within the same millisecond is in twice.
        due.sort_unstable();
        due.dedup();
        let next = self.ack_deadlines.next(is_held_until(&self.messages));
        (due, next)
    }

    /// Offsets of ready messages whose TTL ran out (the oldest are first in line).
    pub fn expired_ready(&self, now: Now) -> Vec<u64> {
        let Some(ttl) = self.spec.options.message_ttl_ms else {
            return Vec::new();
        };
        self.ready
            .iter()
            .map(|&(_, tag)| tag)
            .take_while(|o| {
                self.messages
                    .get(o)
                    .is_some_and(|m| now.mono_ms >= m.born_mono_ms.saturating_add(ttl))
            })
            // A message being moved expires once it has its new tag.
            .filter(|o| self.messages.get(o).is_some_and(|m| !m.moving))
            .collect()
    }

    pub fn stats(&self) -> QueueStats {
        let unacked = self
            .consumers
            .iter()
            .map(|c| c.held.len() as u64)
            .sum::<u64>()
            + self.detached.len() as u64;
        QueueStats {
            name: self.spec.name.clone(),
            ready: self.ready.len() as u64,
            unacked,
            storing: self.storing,
            bytes: self.bytes,
            on_disk: self.on_disk,
            consumers: self.consumers.len(),
            counters: self.counters.clone(),
            options: self.spec.options.clone(),
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // A deleted queue's bytes leave the broker-wide total with it.
        self.memory.sub(self.in_memory);
    }
}

/// Whether the deadline entry `(deadline, tag)` is still wanted: the message
/// at `tag` is held with that ack deadline.
fn is_held_until(messages: &BTreeMap<u64, Msg>) -> impl Fn(u64, &u64) -> bool + '_ {
    |deadline, tag| {
        messages
            .get(tag)
            .is_some_and(|m| m.holder.as_ref().is_some_and(|(_, d)| *d == deadline))
    }
}
