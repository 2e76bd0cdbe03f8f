//! The broker's records: services, workers, requests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::slots::FreeSlots;
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
