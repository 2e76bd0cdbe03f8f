//! The broker's settings.

use std::collections::HashMap;
use std::time::Duration;

use super::policy::{Route, ServicePolicy};

/// Broker settings.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// How often the broker heartbeats each worker.
    pub heartbeat_interval: Duration,
    /// Missed heartbeats before a worker is declared dead.
    pub heartbeat_liveness: u32,
    /// How long a 7/MDP worker (MDPW01, MDPW02) may hold a request without a
    /// word. Reference workers send no heartbeats while they handle one, so
    /// a busy one is not expired for heartbeat silence: its connection
    /// closing (the engine's ZMTP heartbeats notice a dead host) ends it, or
    /// this limit. ZMDPW1 workers heartbeat while busy and get no such grace.
    pub worker_busy_max: Duration,
    /// Requests a service may queue while it has no free worker.
    pub queue_max: usize,
    /// How long a request may wait for a worker before the client gets "503".
    pub request_timeout: Duration,
    /// Requests the broker holds at once, over all services.
    pub requests_max: usize,
    /// Workers the broker accepts at once.
    pub workers_max: usize,
    /// Requests all workers together may hold: the sum of their credits
    /// (one per MDP worker). A ZMDPW1 worker's credit is cut to what is left;
    /// a worker that would get none is refused. Bounds the free-slot lists.
    pub slots_max: usize,
    /// Services the broker knows at once. Any client can name a service, so
    /// without a bound made-up names would grow the table without end; a
    /// service with no worker and nothing waiting is forgotten after
    /// [`SERVICE_IDLE_EXPIRY`](super::SERVICE_IDLE_EXPIRY).
    pub services_max: usize,
    /// Per-service policies by service name.
    pub policies: HashMap<String, ServicePolicy>,
    /// Weighted routes by requested service name.
    pub routes: HashMap<String, Vec<Route>>,
    /// Seed of the routing randomness (fixed seeds make tests reproducible).
    pub seed: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(2500),
            heartbeat_liveness: 3,
            worker_busy_max: Duration::from_secs(600),
            queue_max: 10_000,
            request_timeout: Duration::from_secs(10),
            requests_max: 100_000,
            workers_max: 10_000,
            slots_max: 100_000,
            services_max: 10_000,
            policies: HashMap::new(),
            routes: HashMap::new(),
            seed: 0x2545_f491_4f6c_dd1d,
        }
    }
}
