//! The broker's protocol core, sans-IO: frames and time in, frames out.
//!
//! ```text
//!   client REQUEST ──► route (weights) ──► rate limit ──► service queue (bounded)
//!                                                             │ dispatch_request:
//!   worker READY ──► free slots (least busy, then least ─────┘ oldest request to
//!                    recently used)                             the first free worker
//!   worker REPLY ──► client (by the request handle the worker echoes)
//!   tick: heartbeat_workers, expire_workers, expire_requests
//! ```
//!
//! I/O contract: call [`Broker::handle`] with each message received on the
//! ROUTER (identity first), and [`Broker::tick`] no later than
//! [`Broker::next_deadline`]; send every returned [`Action`] in order. The core
//! never reads a clock or touches a socket, so every rule is a unit test.
//!
//! Invariants: a request is in exactly one place — a service queue or one
//! worker's hands — until its final reply or its error is sent; a worker holds
//! at most its credit of requests (one for MDP workers), and is listed in its
//! service's free slots exactly when it can take another and is not draining;
//! every queue and table is bounded.

mod coalesce;
mod config;
mod policy;
mod requests;
mod state;
#[cfg(test)]
mod tests;
mod workers;

use foldhash::HashMap as FastMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

pub use coalesce::coalesce;
pub use config::BrokerConfig;
pub use policy::{RateLimiter, Route, ServicePolicy, parse_routes, pick, validate_routes};
use state::{Request, Service, Worker};

use zmesh_wire::mdp::{self, BadItem, ClientMsg, ClientProto, Inbound, MdpError, ReplyKind};

/// Something for the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `frames` to the peer with this ROUTER identity.
    Send {
        /// Peer identity.
        to: Bytes,
        /// Frames after the identity.
        frames: Vec<Bytes>,
    },
}

/// Counters, for `zmesh services` and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BrokerStats {
    /// Messages that were not valid MDP.
    pub malformed: u64,
    /// Replies for requests no longer held (late, duplicate or from a replaced worker).
    pub stale_replies: u64,
    /// Workers expired by heartbeat.
    pub workers_expired: u64,
    /// Workers removed because their connection closed.
    pub workers_disconnected: u64,
    /// Requests handed to another worker after their worker died.
    pub redispatched: u64,
}

/// One service as `zmesh services` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceInfo {
    /// Name.
    pub name: String,
    /// Registered workers.
    pub workers: usize,
    /// Free worker slots: requests the service's workers could take now
    /// (an idle MDP worker is one; a ZMDPW1 worker up to its credit).
    pub idle: usize,
    /// Requests waiting for a worker.
    pub queued: usize,
    /// Requests received.
    pub requests: u64,
    /// Final replies delivered.
    pub replies: u64,
    /// Errors returned (timeouts, rate limit, dead workers).
    pub errors: u64,
    /// Policy.
    pub policy: ServicePolicy,
    /// Weighted routes, if this name is routed.
    pub routes: Option<Vec<Route>>,
}

/// Status replies, now in `zmesh-wire`.
pub use zmesh_wire::mdp::status;

/// The broker state machine. See the module docs for its contract.
pub struct Broker {
    cfg: BrokerConfig,
    // foldhash: fast, and randomly seeded per process (names and identities
    // come from peers).
    services: FastMap<Bytes, Service>,
    workers: FastMap<Bytes, Worker>,
    requests: FastMap<u64, Request>,
    /// Sum of the registered workers' credits (at most `slots_max`).
    slots: usize,
    /// Orders workers of equal load in their services' free-slot lists.
    slot_seq: u64,
    next_handle: u64,
    rng: u64,
    limiters: FastMap<Bytes, RateLimiter>,
    stats: BrokerStats,
    draining: bool,
    /// Latencies of answered requests not yet taken by the driver (bounded).
    latencies: std::collections::VecDeque<(String, Duration)>,
    /// Whether anyone takes them (the admin port's histogram).
    record_latencies: bool,
    /// Peers whose replies and requests pile up unread (the driver's outbox
    /// says so): their workers get no new requests. Bounded by the outbox.
    congested: foldhash::HashSet<Bytes>,
    /// The time of the call being handled (every entry point takes it).
    now: Instant,
}

/// How long a service with no worker and nothing waiting is remembered.
pub const SERVICE_IDLE_EXPIRY: Duration = Duration::from_secs(60);

/// Latencies kept between two `take_latencies` calls at most.
const LATENCIES_MAX: usize = 100_000;

fn handle_bytes(h: u64) -> Bytes {
    Bytes::copy_from_slice(&h.to_be_bytes())
}

fn handle_of(b: &Bytes) -> Option<u64> {
    <[u8; 8]>::try_from(b.as_ref()).ok().map(u64::from_be_bytes)
}

impl Broker {
    /// A broker with `cfg`.
    pub fn new(cfg: BrokerConfig) -> Self {
        let rng = cfg.seed | 1;
        Self {
            cfg,
            services: FastMap::default(),
            workers: FastMap::default(),
            requests: FastMap::default(),
            slots: 0,
            slot_seq: 0,
            next_handle: 1,
            rng,
            limiters: FastMap::default(),
            stats: BrokerStats::default(),
            draining: false,
            latencies: Default::default(),
            record_latencies: false,
            congested: Default::default(),
            now: Instant::now(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }

    /// Every known service.
    pub fn services(&self) -> Vec<ServiceInfo> {
        let mut names: Vec<String> = self
            .services
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        names.extend(self.cfg.routes.keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let s = self.services.get(name.as_bytes());
                ServiceInfo {
                    workers: s.map_or(0, |s| s.workers),
                    idle: s.map_or(0, |s| s.free.free()),
                    queued: s.map_or(0, |s| s.waiting.len()),
                    requests: s.map_or(0, |s| s.requests),
                    replies: s.map_or(0, |s| s.replies),
                    errors: s.map_or(0, |s| s.errors),
                    policy: self.policy(&name),
                    routes: self.cfg.routes.get(&name).cloned(),
                    name,
                }
            })
            .collect()
    }

    fn policy(&self, service: &str) -> ServicePolicy {
        self.cfg.policies.get(service).cloned().unwrap_or_default()
    }

    /// Replace the routes of `service` (empty: remove them).
    pub fn set_routes(&mut self, service: &str, routes: Vec<Route>) -> Result<(), String> {
        if routes.is_empty() {
            self.cfg.routes.remove(service);
            return Ok(());
        }
        validate_routes(&routes)?;
        self.cfg.routes.insert(service.to_owned(), routes);
        Ok(())
    }

    /// xorshift64*: deterministic from the configured seed.
    fn roll(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One message from the ROUTER: `from` is the peer identity, `frames` the rest.
    pub fn handle(&mut self, now: Instant, from: &Bytes, frames: &[Bytes]) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        match mdp::parse(frames) {
            Ok(Inbound::Batch(items)) => {
                let mut invalid = None;
                for item in items {
                    match item {
                        Ok(inbound) => self.inbound(now, from, inbound, &mut out),
                        // A bad request in a client's batch costs only itself.
                        Err(BadItem {
                            error,
                            request_id: Some(request_id),
                        }) => {
                            self.stats.malformed += 1;
                            out.push(Action::Send {
                                to: from.clone(),
                                frames: mdp::client_error(
                                    &ClientProto::Zmesh { request_id },
                                    &Bytes::new(),
                                    status::BAD_REQUEST,
                                    &error.to_string(),
                                ),
                            });
                        }
                        // Anything else is the peer's fault; its valid items
                        // (replies it owes) are taken first.
                        Err(bad) => invalid = Some(bad.error),
                    }
                }
                if let Some(e) = invalid {
                    self.malformed(from, &e, &mut out);
                }
            }
            Ok(inbound) => self.inbound(now, from, inbound, &mut out),
            Err(e) => self.malformed(from, &e, &mut out),
        }
        self.debug_check_bounds();
        out
    }

    /// The bounds that hold after every call, checked in O(1) in debug
    /// builds ([`Broker::check_invariants`] checks everything).
    fn debug_check_bounds(&self) {
        debug_assert!(
            self.requests.len() <= self.cfg.requests_max,
            "requests past their bound"
        );
        debug_assert!(
            self.workers.len() <= self.cfg.workers_max,
            "workers past their bound"
        );
        debug_assert!(
            self.slots <= self.cfg.slots_max,
            "worker credit past its bound"
        );
        debug_assert!(
            self.latencies.len() <= LATENCIES_MAX,
            "latencies past their bound"
        );
    }

    /// An invalid message: counted and dropped; a known worker is
    /// disconnected (7/MDP: "treat that peer as invalid").
    fn malformed(&mut self, from: &Bytes, e: &MdpError, out: &mut Vec<Action>) {
        self.stats.malformed += 1;
        tracing::debug!(error = %e, "malformed message dropped");
        if let Some(w) = self.workers.get(from) {
            let v = w.version;
            self.delete_worker(from, "sent an invalid message", out);
            out.push(Action::Send {
                to: from.clone(),
                frames: mdp::worker_disconnect(v),
            });
        }
    }

    fn inbound(&mut self, now: Instant, from: &Bytes, inbound: Inbound, out: &mut Vec<Action>) {
        match inbound {
            Inbound::Client(ClientMsg::Request {
                proto,
                service,
                body,
            }) => self.client_request(now, from, proto, service, body, out),
            Inbound::Worker(v, msg) => self.worker_message(now, from, v, msg, out),
            // The parser never nests batches.
            Inbound::Batch(_) => {}
        }
    }

    /// Timers: heartbeat workers, expire silent workers, expire requests that waited too long.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        let busy_max = self.cfg.worker_busy_max;
        let dead: Vec<(Bytes, &'static str)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.expires_at(busy_max) <= now)
            .map(|(id, w)| {
                let why = if w.busy_grace() {
                    "busy past worker_busy_max without a word"
                } else {
                    "heartbeat expired"
                };
                (id.clone(), why)
            })
            .collect();
        for (id, why) in dead {
            self.stats.workers_expired += 1;
            if let Some(w) = self.workers.get(&id) {
                out.push(Action::Send {
                    to: id.clone(),
                    frames: mdp::worker_disconnect(w.version),
                });
            }
            self.delete_worker(&id, why, &mut out);
        }
        for (id, w) in &mut self.workers {
            if w.next_heartbeat <= now {
                out.push(Action::Send {
                    to: id.clone(),
                    frames: mdp::worker_heartbeat(w.version),
                });
                w.next_heartbeat = now + self.cfg.heartbeat_interval;
            }
        }
        let mut expired = Vec::new();
        for s in self.services.values_mut() {
            while let Some(&h) = s.waiting.front() {
                match self.requests.get(&h) {
                    Some(r) if r.deadline <= now => {
                        expired.push(s.waiting.pop_front().expect("front"))
                    }
                    Some(_) => break,
                    None => {
                        s.waiting.pop_front();
                    }
                }
            }
        }
        let timeout_ms = self.cfg.request_timeout.as_millis();
        for h in expired {
            if let Some(req) = self.requests.remove(&h) {
                let why = format!(
                    "no worker for {} within {timeout_ms} ms",
                    String::from_utf8_lossy(&req.service)
                );
                self.reply_error(
                    &req.client,
                    &req.proto,
                    &req.requested,
                    status::UNAVAILABLE,
                    &why,
                    &mut out,
                );
            }
        }
        // Forget services nothing refers to any more (made-up names included).
        self.services.retain(|_, s| {
            !s.unused() || now.saturating_duration_since(s.last_active) < SERVICE_IDLE_EXPIRY
        });
        self.debug_check_bounds();
        out
    }

    /// `peer`'s connection closed: a worker is removed at once (its requests
    /// go to another worker, or back to their clients as errors), instead of
    /// when its heartbeats would have lapsed. Requests the peer sent as a
    /// client stay: their replies will find no one and are counted then.
    pub fn connection_closed(&mut self, now: Instant, peer: &Bytes) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        self.congested.remove(peer);
        if self.workers.contains_key(peer) {
            self.stats.workers_disconnected += 1;
            self.delete_worker(peer, "its connection closed", &mut out);
        }
        out
    }

    /// `peer` reads too slowly (`true`) or has caught up (`false`), as the
    /// driver's outbox reports: a congested worker is offered no requests, so
    /// they go to its peers or wait, instead of piling up in front of it.
    pub fn set_congested(&mut self, now: Instant, peer: &Bytes, congested: bool) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        if congested {
            self.congested.insert(peer.clone());
        } else {
            self.congested.remove(peer);
        }
        let Some(w) = self.workers.get_mut(peer) else {
            return out;
        };
        if w.congested == congested {
            return out;
        }
        w.congested = congested;
        let service = w.service.clone();
        let Some(s) = self.services.get_mut(&service) else {
            return out;
        };
        if congested {
            s.free.withdraw(peer, w);
        } else {
            self.slot_seq += 1;
            s.free.offer(peer, w, self.slot_seq);
            self.dispatch_requests(&service, &mut out);
        }
        out
    }

    /// The latest time [`Self::tick`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let workers = self
            .workers
            .values()
            .flat_map(|w| [w.expires_at(self.cfg.worker_busy_max), w.next_heartbeat]);
        let requests = self
            .services
            .values()
            .filter_map(|s| s.waiting.front())
            .filter_map(|h| self.requests.get(h).map(|r| r.deadline));
        workers.chain(requests).min()
    }

    /// Record request latencies for [`Broker::take_latencies`] (off by default).
    pub fn record_latencies(&mut self, on: bool) {
        self.record_latencies = on;
    }

    /// Request latencies (arrival to final reply) since the last call, by service.
    pub fn take_latencies(&mut self) -> Vec<(String, Duration)> {
        self.latencies.drain(..).collect()
    }

    /// Stop taking new requests (they get "503 broker shutting down");
    /// requests already held are still answered.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// The end of a drain: every request still held gets "503 broker
    /// shutting down" (none is left without an answer), then every worker is
    /// told to disconnect.
    pub fn disconnect_workers(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let held: Vec<u64> = self.requests.keys().copied().collect();
        for handle in held {
            if let Some(req) = self.requests.remove(&handle) {
                self.reply_error(
                    &req.client,
                    &req.proto,
                    &req.requested,
                    "503",
                    "broker shutting down",
                    &mut out,
                );
            }
        }
        for s in self.services.values_mut() {
            s.waiting.clear();
        }
        let ids: Vec<Bytes> = self.workers.keys().cloned().collect();
        for id in ids {
            if let Some(v) = self.workers.get(&id).map(|w| w.version) {
                self.delete_worker(&id, "broker shutting down", &mut out);
                out.push(Action::Send {
                    to: id,
                    frames: mdp::worker_disconnect(v),
                });
            }
        }
        out
    }

    /// Requests held: queued or with a worker.
    pub fn requests_held(&self) -> usize {
        self.requests.len()
    }

    /// Every rule of the broker's state, checked in full; panics on the first
    /// broken one. O(n) in what it holds: for tests, simulations and fuzz
    /// targets, not for a running broker.
    pub fn check_invariants(&self) {
        let credits: usize = self.workers.values().map(|w| w.credit as usize).sum();
        assert_eq!(credits, self.slots, "slots are the workers' credits");
        assert!(self.slots <= self.cfg.slots_max);
        assert!(self.requests.len() <= self.cfg.requests_max);
        assert!(self.workers.len() <= self.cfg.workers_max);
        for (id, w) in &self.workers {
            assert!(self.services.contains_key(&w.service), "{id:?}: no service");
            assert!(
                w.busy.len() <= w.credit as usize,
                "{id:?}: holds past its credit"
            );
            for h in &w.busy {
                let r = self.requests.get(h);
                assert!(
                    r.is_some_and(|r| r.worker.as_ref() == Some(id)),
                    "{id:?}: busy with {h} not its own"
                );
            }
        }
        for (name, s) in &self.services {
            let workers = self.workers.iter().filter(|(_, w)| w.service == *name);
            assert_eq!(s.workers, workers.clone().count(), "{name:?}: worker count");
            s.free.check(workers);
        }
        for (h, r) in &self.requests {
            match &r.worker {
                Some(w) => assert!(
                    self.workers.get(w).is_some_and(|w| w.busy.contains(h)),
                    "request {h}: its worker does not hold it"
                ),
                None => assert!(
                    self.services
                        .get(&r.service)
                        .is_some_and(|s| s.waiting.contains(h)),
                    "request {h}: neither held nor waiting"
                ),
            }
        }
    }

    /// Workers registered now.
    pub fn workers_registered(&self) -> usize {
        self.workers.len()
    }

    /// Requests waiting for a worker, by service (for tests and metrics).
    pub fn queued(&self, service: &str) -> usize {
        self.services
            .get(service.as_bytes())
            .map_or(0, |s| s.waiting.len())
    }
}
