//! # The admin HTTP port: Prometheus metrics, a JSON API, health probes
//!
//! The broker's loop owns all state; it publishes a [`Snapshot`] here once a
//! second and executes [`AdminCommand`]s sent from HTTP handlers, so the HTTP
//! side never touches the protocol cores. Changes (purge, routes) need the
//! admin token: `Authorization: Bearer <token>`.
//!
//! ```text
//! GET  /healthz /readyz              probes
//! GET  /metrics                      Prometheus (OpenMetrics text)
//! GET  /api/version /api/services /api/queues /api/streams /api/connections /api/overview
//! POST /api/queues/{name}/purge      (token)
//! PUT  /api/routes/{service}         body "target:weight,..." (token)
//! GET  /api/openapi.json             the API's OpenAPI document
//! ```

mod api;
mod metrics;

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::mdp::{BrokerStats, ServiceInfo};
use crate::queue::{CoreCounters, QueueStats};

pub use api::router;

/// Everything the admin port shows, as of `updated_ms`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// zmesh version.
    pub version: String,
    /// When the broker started (ms since the epoch).
    pub started_ms: u64,
    /// When this snapshot was taken.
    pub updated_ms: u64,
    /// The broker is draining: no new requests accepted.
    pub draining: bool,
    /// MDP services.
    pub services: Vec<ServiceInfo>,
    /// MDP counters.
    pub broker: BrokerStats,
    /// Registered workers.
    pub workers: usize,
    /// Requests held (queued or with a worker).
    pub requests_held: usize,
    /// Durable queues.
    pub queues: Vec<QueueStats>,
    /// Queue protocol counters.
    pub queue_counters: Option<CoreCounters>,
    /// Journal bytes on disk.
    pub journal_bytes: u64,
    /// Streams.
    pub streams: Vec<serde_json::Value>,
    /// Connections of the broker's socket.
    pub connections: Vec<zmesh::registry::PeerSnapshot>,
    /// Messages and bytes through the broker's socket, both ways.
    pub traffic: zmesh::registry::Traffic,
    /// Messages waiting for full peers, and those that could not be delivered.
    pub outbox: crate::outbox::OutboxStats,
}

/// A change asked for over HTTP, carried out by the broker's loop.
#[derive(Debug)]
pub enum AdminCommand {
    /// Drop a queue's ready messages; answers with how many.
    Purge {
        /// Queue.
        queue: String,
        /// Answer.
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Replace a service's weighted routes.
    SetRoutes {
        /// Requested service name.
        service: String,
        /// `target:weight,...`.
        spec: String,
        /// Answer.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Histograms by label set, each made with the latency buckets.
pub type HistogramFamily = Family<Vec<(String, String)>, Histogram, fn() -> Histogram>;

/// Latency histograms the loop observes into and `/metrics` renders.
pub struct Histograms {
    /// MDP request latency (arrival to final reply), by service.
    pub request_seconds: HistogramFamily,
    /// Group commit latency (sync asked to durable).
    pub fsync_seconds: Histogram,
}

fn latency_buckets() -> Histogram {
    // 100 µs to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            request_seconds: Family::new_with_constructor(latency_buckets),
            fsync_seconds: latency_buckets(),
        }
    }
}

/// Distinct service labels on the request histogram at most; the rest are "other".
pub const SERVICE_LABELS_MAX: usize = 1000;

/// Shared between the loop and the HTTP handlers.
#[derive(Clone)]
pub struct AdminState {
    /// Histograms.
    pub histograms: Arc<Histograms>,
    /// Latest snapshot.
    pub snapshot: Arc<RwLock<Snapshot>>,
    /// Commands to the loop.
    pub commands: mpsc::Sender<AdminCommand>,
    /// Token required for changes; `None` refuses every change.
    pub token: Option<String>,
    /// Host names (lower case) the port answers to besides IP addresses and
    /// `localhost`: a browser page on any other name may be a DNS rebinding.
    pub allowed_hosts: Arc<Vec<String>>,
}

/// The loop's end: where to publish snapshots and receive commands.
pub struct AdminLink {
    /// Histograms (the loop observes into them).
    pub histograms: Arc<Histograms>,
    /// Service labels used so far on the request histogram.
    pub services_seen: std::collections::HashSet<String>,
    /// Latest snapshot (the loop writes it).
    pub snapshot: Arc<RwLock<Snapshot>>,
    /// Commands from HTTP.
    pub commands: mpsc::Receiver<AdminCommand>,
}

/// A pair of ends for one broker.
pub fn channel(token: Option<String>) -> (AdminState, AdminLink) {
    let snapshot = Arc::new(RwLock::new(Snapshot::default()));
    let histograms = Arc::new(Histograms::default());
    let (tx, rx) = mpsc::channel(64);
    (
        AdminState {
            histograms: histograms.clone(),
            snapshot: snapshot.clone(),
            commands: tx,
            token,
            allowed_hosts: Arc::default(),
        },
        AdminLink {
            histograms,
            services_seen: Default::default(),
            snapshot,
            commands: rx,
        },
    )
}

/// Serve the admin port on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
