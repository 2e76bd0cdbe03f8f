//! Messages for peers that cannot take them yet: the broker's per-peer outbox.
//!
//! The broker's ROUTER runs with `router_mandatory`, so a send never vanishes:
//! it goes out, comes back because the peer's pipe is full, or fails because
//! the peer is gone. The driver hands every outgoing message here. A peer with
//! nothing waiting gets it at once (`try_send`, never an awaited send: one
//! slow peer must not stall the loop that serves all the others); a full peer
//! gets it queued behind what already waits for it, in order, and the driver
//! retries blocked peers on a short timer ([`Outbox::retry_at`]). What cannot
//! be delivered at all is counted by product and reason ([`OutboxStats`]).
//!
//! What waits is bounded in bytes ([`OutboxLimits`]). Past a peer's soft bound
//! the outbox reports it congested, and the cores give it no new work (no
//! requests to a worker, no deliveries to a consumer or subscriber) until it
//! drains below half of that; past its hard bound, or when all peers together
//! pass the broker-wide bound (then the peer with the most waiting), the peer
//! is reported overflowed: what waits for it is dropped and counted, and the
//! driver disconnects it. A peer that never reads cannot be told anything else.
//!
//! The engine has no per-peer "writable" signal (its readiness is "any peer has
//! room"), hence the timer: it runs only while a peer is blocked, from 1 ms,
//! doubling to [`RETRY_MAX`] while no blocked peer takes anything.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use serde::Serialize;
use zmesh::{Error, Message, Socket, TrySendError};

/// First retry of a blocked peer.
const RETRY_MIN: Duration = Duration::from_millis(1);
/// Longest wait between retries while blocked peers take nothing.
pub const RETRY_MAX: Duration = Duration::from_millis(16);

/// Which product a message belongs to, for the drop counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Product {
    /// Majordomo: requests to workers, replies to clients, heartbeats.
    Mdp,
    /// Durable queues: deliveries, confirms, replies.
    Queue,
    /// Streams: MSGs, STORED, replies.
    Stream,
}

impl Product {
    const ALL: [Product; 3] = [Product::Mdp, Product::Queue, Product::Stream];

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Mdp => "mdp",
            Product::Queue => "queue",
            Product::Stream => "stream",
        }
    }
}

/// Why a message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The peer was gone (or never connected) when its message was sent.
    Unroutable,
    /// The broker stopped with the message still waiting for its peer.
    Shutdown,
    /// The socket refused it for another reason (logged).
    SendError,
    /// The peer read too slowly: past its bound, it was disconnected.
    Overflow,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        DropReason::Unroutable,
        DropReason::Shutdown,
        DropReason::SendError,
        DropReason::Overflow,
    ];

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unroutable => "unroutable",
            DropReason::Shutdown => "shutdown",
            DropReason::SendError => "send_error",
            DropReason::Overflow => "overflow",
        }
    }
}

/// Bounds on what waits, in bytes (envelopes included).
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    /// Past this a peer gets no new work until it drains below half of it.
    pub peer_soft_bytes: usize,
    /// Past this a peer is disconnected and what waits for it dropped (counted).
    pub peer_hard_bytes: usize,
    /// All peers together; past it the peer with the most waiting overflows.
    pub total_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            peer_soft_bytes: 8 << 20,
            peer_hard_bytes: 64 << 20,
            total_bytes: 1 << 30,
        }
    }
}

/// A change the cores or the driver act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxEvent {
    /// Past its soft bound: give this peer no new work.
    Congested(Bytes),
    /// Drained below half its soft bound (or its queue is gone): work may resume.
    Relieved(Bytes),
    /// Past a hard bound: what waited was dropped; disconnect the peer.
    Overflowed(Bytes),
}

/// Where a message goes: the broker's ROUTER, or a stand-in in unit tests.
pub trait PeerSink {
    /// Send without waiting, as [`Socket::try_send`].
    fn try_send(&self, msg: Message) -> Result<(), TrySendError>;
}

impl PeerSink for Socket {
    fn try_send(&self, msg: Message) -> Result<(), TrySendError> {
        Socket::try_send(self, msg)
    }
}

/// Undelivered messages, by product and reason.
#[derive(Clone, Debug, Serialize)]
pub struct DropCount {
    /// The product the message belonged to.
    pub product: Product,
    /// Why it was not delivered.
    pub reason: DropReason,
    /// How many.
    pub messages: u64,
}

/// What the outbox holds and has given up on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutboxStats {
    /// Messages waiting for a full peer.
    pub waiting_messages: u64,
    /// Their bytes, envelope included.
    pub waiting_bytes: u64,
    /// Peers with messages waiting.
    pub blocked_peers: u64,
    /// Peers given no new work now (past their soft bound).
    pub congested_peers: u64,
    /// Messages that had to wait for their peer before going out.
    pub waited_total: u64,
    /// Peers disconnected for reading too slowly.
    pub overflowed_peers_total: u64,
    /// Undelivered messages, every product x reason (zeros included).
    pub dropped: Vec<DropCount>,
}

struct Waiting {
    product: Product,
    msg: Message,
    /// Its size as counted when queued (what leaves the counts when it goes).
    len: usize,
}

#[derive(Default)]
struct PeerQueue {
    messages: VecDeque<Waiting>,
    bytes: usize,
    /// Reported congested and not yet relieved.
    congested: bool,
}

/// The per-peer outbox; see the module docs.
pub struct Outbox {
    /// Only peers with something waiting; a peer leaves when its queue empties.
    blocked: HashMap<Bytes, PeerQueue>,
    waiting_messages: usize,
    waiting_bytes: usize,
    waited_total: u64,
    dropped: [[u64; DropReason::ALL.len()]; Product::ALL.len()],
    retry_at: Option<Instant>,
    retry_delay: Duration,
    limits: OutboxLimits,
    congested: usize,
    /// Peers past a hard bound, until their connection's close is handled.
    overflowed: foldhash::HashSet<Bytes>,
    overflowed_total: u64,
    events: Vec<OutboxEvent>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new(OutboxLimits::default())
    }
}

/// The routing frame a ROUTER message starts with.
fn peer_of(msg: &Message) -> Bytes {
    msg.frame(0).unwrap_or_default()
}

impl Outbox {
    /// An empty outbox with these bounds.
    pub fn new(limits: OutboxLimits) -> Self {
        debug_assert!(limits.peer_soft_bytes <= limits.peer_hard_bytes);
        Self {
            blocked: HashMap::default(),
            waiting_messages: 0,
            waiting_bytes: 0,
            waited_total: 0,
            dropped: Default::default(),
            retry_at: None,
            retry_delay: RETRY_MIN,
            limits,
            congested: 0,
            overflowed: Default::default(),
            overflowed_total: 0,
            events: Vec::new(),
        }
    }

    /// Congestion changes and overflows since the last call, in order.
    pub fn take_events(&mut self) -> Vec<OutboxEvent> {
        std::mem::take(&mut self.events)
    }

    /// Send `msg` (routing frame first) to its peer now, or queue it behind
    /// what already waits for that peer. Only a closed socket is an error.
    pub fn send(
        &mut self,
        sink: &impl PeerSink,
        now: Instant,
        product: Product,
        msg: Message,
    ) -> Result<(), Error> {
        let peer = peer_of(&msg);
        if self.overflowed.contains(&peer) {
            // Being disconnected: nothing more goes to it.
            self.count_drop(product, DropReason::Overflow, 1);
            return Ok(());
        }
        // Behind what waits, if anything does: order per peer is the protocols' promise.
        let msg = if self.blocked.contains_key(&peer) {
            msg
        } else {
            match sink.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(msg)) => {
                    if self.retry_at.is_none() {
                        self.retry_delay = RETRY_MIN;
                        self.retry_at = Some(now + RETRY_MIN);
                    }
                    msg
                }
                Err(TrySendError::Failed(e)) => return self.failed(product, e),
            }
        };
        self.enqueue(peer, product, msg);
        Ok(())
    }

    fn enqueue(&mut self, peer: Bytes, product: Product, msg: Message) {
        let len = msg.byte_len();
        let queue = self.blocked.entry(peer.clone()).or_default();
        queue.bytes += len;
        queue.messages.push_back(Waiting { product, msg, len });
        self.waiting_messages += 1;
        self.waiting_bytes += len;
        if !queue.congested && queue.bytes > self.limits.peer_soft_bytes {
            queue.congested = true;
            self.congested += 1;
            self.events.push(OutboxEvent::Congested(peer.clone()));
        }
        if queue.bytes > self.limits.peer_hard_bytes {
            self.overflow(&peer);
        }
        while self.waiting_bytes > self.limits.total_bytes {
            let Some(biggest) = self
                .blocked
                .iter()
                .max_by_key(|(_, q)| q.bytes)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            self.overflow(&biggest);
        }
    }

    /// Drop everything waiting for `peer` (counted) and report it overflowed.
    fn overflow(&mut self, peer: &Bytes) {
        let Some(queue) = self.blocked.remove(peer) else {
            return;
        };
        for w in &queue.messages {
            self.count_drop(w.product, DropReason::Overflow, 1);
        }
        self.waiting_messages -= queue.messages.len();
        self.waiting_bytes -= queue.bytes;
        self.overflowed_total += 1;
        // It stays congested (no new work from the cores) until its
        // connection's close is handled ([`Outbox::peer_gone`]): relieving it
        // now would hand new work to a peer about to be disconnected.
        if !queue.congested {
            self.congested += 1;
            self.events.push(OutboxEvent::Congested(peer.clone()));
        }
        self.overflowed.insert(peer.clone());
        self.events.push(OutboxEvent::Overflowed(peer.clone()));
        if self.blocked.is_empty() {
            self.retry_at = None;
        }
    }

    /// `peer`'s connection closed: what waits for it can never be delivered
    /// (counted as unroutable), and a new connection under the same routing
    /// id starts afresh. The cores forget its congestion themselves.
    pub fn peer_gone(&mut self, peer: &Bytes) {
        if self.overflowed.remove(peer) {
            self.congested -= 1;
        }
        if let Some(queue) = self.blocked.remove(peer) {
            for w in &queue.messages {
                self.count_drop(w.product, DropReason::Unroutable, 1);
            }
            self.waiting_messages -= queue.messages.len();
            self.waiting_bytes -= queue.bytes;
            if queue.congested {
                self.congested -= 1;
            }
            if self.blocked.is_empty() {
                self.retry_at = None;
            }
        }
        self.check_counts();
    }

    /// Events are waiting for [`Outbox::take_events`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// A peer's queue is gone: if it was congested, it is not any more.
    fn forget(&mut self, peer: &Bytes, congested: bool) {
        if congested {
            self.congested -= 1;
            self.events.push(OutboxEvent::Relieved(peer.clone()));
        }
    }

    /// Count a send the socket refused; a closed socket ends the loop.
    fn failed(&mut self, product: Product, e: Error) -> Result<(), Error> {
        let reason = match e {
            Error::Closed => return Err(e),
            Error::Unroutable => DropReason::Unroutable,
            other => {
                tracing::warn!(error = %other, product = product.as_str(), "broker send failed");
                DropReason::SendError
            }
        };
        self.count_drop(product, reason, 1);
        Ok(())
    }

    fn count_drop(&mut self, product: Product, reason: DropReason, n: u64) {
        let p = Product::ALL.iter().position(|x| *x == product);
        let r = DropReason::ALL.iter().position(|x| *x == reason);
        if let (Some(p), Some(r)) = (p, r) {
            self.dropped[p][r] += n;
        }
    }

    /// When blocked peers should be tried again; `None` while nothing waits.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Try every blocked peer again, each in its order, until it is full again.
    pub fn retry(&mut self, sink: &impl PeerSink, now: Instant) -> Result<(), Error> {
        let mut progress = false;
        let mut emptied = Vec::new();
        let mut failures = Vec::new();
        for (peer, queue) in self.blocked.iter_mut() {
            while let Some(w) = queue.messages.pop_front() {
                let len = w.len;
                match sink.try_send(w.msg) {
                    Ok(()) => {
                        progress = true;
                        self.waited_total += 1;
                        queue.bytes -= len;
                        self.waiting_messages -= 1;
                        self.waiting_bytes -= len;
                    }
                    Err(TrySendError::Full(msg)) => {
                        queue.messages.push_front(Waiting {
                            product: w.product,
                            msg,
                            len,
                        });
                        break;
                    }
                    Err(TrySendError::Failed(e)) => {
                        queue.bytes -= len;
                        self.waiting_messages -= 1;
                        self.waiting_bytes -= len;
                        failures.push((w.product, e));
                    }
                }
            }
            if queue.messages.is_empty() {
                debug_assert_eq!(queue.bytes, 0, "a peer's byte count follows its messages");
                emptied.push(peer.clone());
            } else if queue.congested && queue.bytes <= self.limits.peer_soft_bytes / 2 {
                queue.congested = false;
                self.congested -= 1;
                self.events.push(OutboxEvent::Relieved(peer.clone()));
            }
        }
        for peer in emptied {
            if let Some(queue) = self.blocked.remove(&peer) {
                self.forget(&peer, queue.congested);
            }
        }
        for (product, e) in failures {
            self.failed(product, e)?;
        }
        self.retry_at = if self.blocked.is_empty() {
            None
        } else {
            self.retry_delay = if progress {
                RETRY_MIN
            } else {
                (self.retry_delay * 2).min(RETRY_MAX)
            };
            Some(now + self.retry_delay)
        };
        self.check_counts();
        Ok(())
    }

    /// Nothing waits for any peer.
    pub fn is_empty(&self) -> bool {
        self.blocked.is_empty()
    }

    /// The broker stops: count what still waits as dropped.
    pub fn abandon(&mut self) {
        let mut counts = Vec::new();
        for queue in self.blocked.values() {
            for w in &queue.messages {
                counts.push(w.product);
            }
        }
        for product in counts {
            self.count_drop(product, DropReason::Shutdown, 1);
        }
        self.blocked.clear();
        self.overflowed.clear();
        self.congested = 0;
        self.waiting_messages = 0;
        self.waiting_bytes = 0;
        self.retry_at = None;
    }

    /// Counters and gauges for the admin port.
    pub fn stats(&self) -> OutboxStats {
        let mut dropped = Vec::with_capacity(Product::ALL.len() * DropReason::ALL.len());
        for (p, product) in Product::ALL.iter().enumerate() {
            for (r, reason) in DropReason::ALL.iter().enumerate() {
                dropped.push(DropCount {
                    product: *product,
                    reason: *reason,
                    messages: self.dropped[p][r],
                });
            }
        }
        OutboxStats {
            waiting_messages: self.waiting_messages as u64,
            waiting_bytes: self.waiting_bytes as u64,
            blocked_peers: self.blocked.len() as u64,
            congested_peers: self.congested as u64,
            waited_total: self.waited_total,
            overflowed_peers_total: self.overflowed_total,
            dropped,
        }
    }

    /// Undelivered messages of one product for one reason.
    pub fn dropped(&self, product: Product, reason: DropReason) -> u64 {
        let p = Product::ALL.iter().position(|x| *x == product);
        let r = DropReason::ALL.iter().position(|x| *x == reason);
        match (p, r) {
            (Some(p), Some(r)) => self.dropped[p][r],
            _ => 0,
        }
    }

    /// The totals follow the per-peer queues (O(peers): debug builds only).
    fn check_counts(&self) {
        if cfg!(debug_assertions) {
            let messages: usize = self.blocked.values().map(|q| q.messages.len()).sum();
            let bytes: usize = self.blocked.values().map(|q| q.bytes).sum();
            debug_assert_eq!(messages, self.waiting_messages);
            debug_assert_eq!(bytes, self.waiting_bytes);
            debug_assert!(self.blocked.values().all(|q| !q.messages.is_empty()));
            let congested = self.blocked.values().filter(|q| q.congested).count();
            debug_assert_eq!(congested + self.overflowed.len(), self.congested);
            debug_assert!(
                self.overflowed
                    .iter()
                    .all(|p| !self.blocked.contains_key(p))
            );
            debug_assert_eq!(self.retry_at.is_some(), !self.blocked.is_empty());
        }
    }
}

#[cfg(test)]
mod tests;
