//! The broker's records: services, workers, requests, and each service's
//! free slots.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use zmesh_wire::mdp::{ClientProto, WorkerVersion};

/// A service: its queue and its workers.
#[derive(Debug)]
pub(super) struct Service {
    /// Requests waiting for a worker, oldest first (handles).
    pub waiting: VecDeque<u64>,
    /// Its workers that can take a request, in the order they will.
    pub free: FreeSlots,
    /// Registered workers.
    pub workers: usize,
    pub requests: u64,
    pub replies: u64,
    pub errors: u64,
    /// Last request, registration or reply: a service with no workers and
    /// nothing waiting is forgotten a while after this.
    pub last_active: Instant,
}

impl Service {
    pub fn new(now: Instant) -> Self {
        Self {
            waiting: VecDeque::new(),
            free: FreeSlots::default(),
            workers: 0,
            requests: 0,
            replies: 0,
            errors: 0,
            last_active: now,
        }
    }

    /// Nothing refers to it: no worker, no request waiting.
    pub fn unused(&self) -> bool {
        self.workers == 0 && self.waiting.is_empty()
    }
}

/// A registered worker.
#[derive(Debug)]
pub(super) struct Worker {
    pub version: WorkerVersion,
    pub service: Bytes,
    /// Declared dead after this unless it speaks.
    pub expiry: Instant,
    pub next_heartbeat: Instant,
    /// The requests it holds (at most `credit`).
    pub busy: Vec<u64>,
    /// Requests it may hold at once.
    pub credit: u32,
    /// When it last went from idle to busy.
    pub busy_since: Instant,
    /// Asked for no more requests (ZMDPW1 DRAIN).
    pub draining: bool,
    /// Its messages pile up unread in the broker's outbox: no new requests.
    pub congested: bool,
    /// Its place in its service's [`FreeSlots`]: (load, order) when listed.
    pub listed: Option<(u32, u64)>,
}

impl Worker {
    /// A 7/MDP worker holding a request: silent by the reference's design.
    pub fn busy_grace(&self) -> bool {
        self.version != WorkerVersion::Zmesh && !self.busy.is_empty()
    }

    /// When it is declared dead unless it speaks: heartbeat silence, or for
    /// a busy 7/MDP worker the busy limit (its connection's close ends it sooner).
    pub fn expires_at(&self, busy_max: Duration) -> Instant {
        if self.busy_grace() {
            self.expiry.max(self.busy_since + busy_max)
        } else {
            self.expiry
        }
    }
}

/// A request the broker holds.
#[derive(Debug)]
pub(super) struct Request {
    pub client: Bytes,
    pub proto: ClientProto,
    /// The name the client asked for (replies carry it).
    pub requested: Bytes,
    /// The service it was routed to.
    pub service: Bytes,
    pub body: Vec<Bytes>,
    /// Error to the client if still queued then.
    pub deadline: Instant,
    /// When it arrived (for the latency histogram).
    pub received: Instant,
    /// The worker holding it.
    pub worker: Option<Bytes>,
}

// Free slots.
//
// Which worker of a service takes the next request: the least busy one with
// a free slot, and among equally busy ones the one that changed longest ago.
// For MDP workers (one slot each) that is least-recently-used, as 7/MDP
// asks; for ZMDPW1 workers it spreads a burst over the pool instead of
// filling one worker's credit while another idles.

/// The free slots of one service's workers.
#[derive(Debug, Default)]
pub(super) struct FreeSlots {
    /// (requests held, when it last changed, worker): first is next.
    order: BTreeSet<(u32, u64, Bytes)>,
    /// Free slots over all listed workers.
    free: usize,
}

impl FreeSlots {
    /// List `w` (if it can take a request) at its current load; `seq` orders
    /// it after every worker listed before at the same load.
    pub fn offer(&mut self, id: &Bytes, w: &mut Worker, seq: u64) {
        self.withdraw(id, w);
        let busy = w.busy.len() as u32;
        if w.draining || w.congested || busy >= w.credit {
            return;
        }
        self.order.insert((busy, seq, id.clone()));
        self.free += (w.credit - busy) as usize;
        w.listed = Some((busy, seq));
    }

    /// Take `w` off the list (it is busy, draining, congested or gone).
    pub fn withdraw(&mut self, id: &Bytes, w: &mut Worker) {
        if let Some((busy, seq)) = w.listed.take() {
            self.order.remove(&(busy, seq, id.clone()));
            self.free -= (w.credit - busy) as usize;
        }
    }

    /// The worker to take the next request, if any has a free slot.
    pub fn next(&self) -> Option<Bytes> {
        self.order.first().map(|(_, _, id)| id.clone())
    }

    /// Free slots in all.
    pub fn free(&self) -> usize {
        self.free
    }

    /// The list holds exactly the listed workers of `workers` (those of this
    /// service), each at its load, and counts their free slots (O(n): checks).
    pub fn check<'a>(&self, workers: impl Iterator<Item = (&'a Bytes, &'a Worker)>) {
        let mut listed = 0;
        let mut free = 0;
        for (id, w) in workers {
            if let Some((busy, seq)) = w.listed {
                assert!(
                    self.order.contains(&(busy, seq, id.clone())),
                    "{id:?} listed, not in the list"
                );
                assert_eq!(busy as usize, w.busy.len(), "{id:?} listed at a stale load");
                assert!(
                    !w.draining && !w.congested && busy < w.credit,
                    "{id:?} listed but cannot take one"
                );
                listed += 1;
                free += (w.credit - busy) as usize;
            }
        }
        assert_eq!(
            listed,
            self.order.len(),
            "the list holds a worker not listed"
        );
        assert_eq!(free, self.free, "free slots");
    }
}
