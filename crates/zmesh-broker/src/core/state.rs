//! The broker's records: services, workers, requests.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::slots::FreeSlots;
use crate::mdp::{ClientProto, WorkerVersion};

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
    /// Asked for no more requests (ZMDPW1 DRAIN).
    pub draining: bool,
    /// Its messages pile up unread in the broker's outbox: no new requests.
    pub congested: bool,
    /// Its place in its service's [`FreeSlots`]: (load, order) when listed.
    pub listed: Option<(u32, u64)>,
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
