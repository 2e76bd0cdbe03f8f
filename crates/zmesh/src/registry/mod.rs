//! The connection registry: every socket's peers, their state and traffic, live.
//!
//! Each [`crate::Socket`] registers itself (in [`Registry::global`] unless given
//! another) and a small task feeds the engine's monitor events through the
//! sans-IO [`SocketTable`]. Query it with [`Registry::snapshot`]; follow it with
//! [`Registry::subscribe`].
//!
//! ```no_run
//! # async fn demo() -> zmesh::Result<()> {
//! let registry = zmesh::Registry::global();
//! let mut events = registry.subscribe();
//! let sock = zmesh::Socket::new(zmesh::SocketType::Push, zmesh::SocketOptions::default())?;
//! sock.connect("tcp://127.0.0.1:5555").await?;
//! while let Ok(ev) = events.recv().await {
//!     println!("{} {} -> {}", ev.peer, ev.from.map(|s| s.to_string()).unwrap_or_default(), ev.to);
//! }
//! # Ok(()) }
//! ```

mod event;
mod peer;
mod table;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

pub use event::{CloseReason, ConnectionEvent, Direction, LinkEvent, PeerState, Traffic};
pub use peer::{PeerKey, PeerSnapshot, StateChange};
pub use table::SocketTable;

use crate::options::SocketOptions;
use crate::socket_type::SocketType;

/// How many state-change events a slow subscriber may fall behind before it
/// sees `Lagged` (and should re-read a snapshot).
pub const EVENT_BACKLOG_MAX: usize = 4096;

/// How many closed sockets stay visible in snapshots.
pub const CLOSED_SOCKETS_KEPT_MAX: usize = 64;

/// Per-socket counters, updated on the send/receive path with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    msgs_in: AtomicU64,
    bytes_in: AtomicU64,
    msgs_out: AtomicU64,
    bytes_out: AtomicU64,
    drops: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn received(&self, bytes: usize) {
        self.msgs_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn sent(&self, bytes: usize) {
        self.msgs_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn traffic(&self) -> Traffic {
        Traffic {
            msgs_in: self.msgs_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            msgs_out: self.msgs_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }
}

/// One socket as the registry sees it.
#[derive(Clone, Debug, Serialize)]
pub struct SocketSnapshot {
    /// Registry id (unique within the process).
    pub id: u64,
    /// Name given in the options, or `<TYPE>-<id>`.
    pub name: String,
    /// Socket type.
    pub socket_type: String,
    /// Endpoints it listens on.
    pub bound: Vec<String>,
    /// Whether the socket has closed.
    pub closed: bool,
    /// Heartbeat interval / timeout in ms, if heartbeats are on.
    pub heartbeat_ms: Option<(u64, u64)>,
    /// Totals over all peers.
    pub traffic: Traffic,
    /// Messages the zmesh layer gave up on (send timeout or full queue).
    pub drops: u64,
    /// Clients refused by the authentication policy.
    pub auth_refusals: u64,
    /// Received messages dropped because their signature did not verify.
    pub signature_failures: u64,
    /// The last signature failure, in words.
    pub last_signature_error: Option<String>,
    /// Peers, dialed and accepted.
    pub peers: Vec<PeerSnapshot>,
}

struct SocketEntry {
    name: String,
    socket_type: SocketType,
    heartbeat_ms: Option<(u64, u64)>,
    table: SocketTable,
    counters: Arc<Counters>,
    closed: bool,
    auth_refusals: u64,
    signature_failures: u64,
    last_signature_error: Option<String>,
}

struct Inner {
    sockets: Mutex<BTreeMap<u64, SocketEntry>>,
    events: broadcast::Sender<ConnectionEvent>,
    next_id: AtomicU64,
}

/// A live registry of connections. Cheap to clone: clones share the same registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registry {
    /// A new, empty registry.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BACKLOG_MAX);
        Self {
            inner: Arc::new(Inner {
                sockets: Mutex::new(BTreeMap::new()),
                events,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The process-wide registry sockets join unless told otherwise.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// Follow state changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.events.subscribe()
    }

    /// Every socket and peer, as they are now.
    pub fn snapshot(&self) -> Vec<SocketSnapshot> {
        let sockets = self.lock();
        sockets
            .iter()
            .map(|(id, e)| Self::socket_snapshot(*id, e))
            .collect()
    }

    /// One socket, as it is now.
    pub fn socket(&self, id: u64) -> Option<SocketSnapshot> {
        let sockets = self.lock();
        sockets.get(&id).map(|e| Self::socket_snapshot(id, e))
    }

    fn socket_snapshot(id: u64, e: &SocketEntry) -> SocketSnapshot {
        let traffic = e.counters.traffic();
        SocketSnapshot {
            id,
            name: e.name.clone(),
            socket_type: e.socket_type.to_string(),
            bound: e.table.bound().to_vec(),
            closed: e.closed,
            heartbeat_ms: e.heartbeat_ms,
            traffic,
            drops: e.counters.drops(),
            auth_refusals: e.auth_refusals,
            signature_failures: e.signature_failures,
            last_signature_error: e.last_signature_error.clone(),
            peers: e.table.snapshot(&traffic),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SocketEntry>> {
        // A panic while holding the lock leaves the table consistent enough to read.
        self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(
        &self,
        t: SocketType,
        o: &SocketOptions,
        counters: Arc<Counters>,
    ) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = SocketEntry {
            name: o.name.clone().unwrap_or_else(|| format!("{t}-{id}")),
            socket_type: t,
            heartbeat_ms: o
                .heartbeat
                .map(|h| (h.interval.as_millis() as u64, h.timeout.as_millis() as u64)),
            table: SocketTable::default(),
            counters,
            closed: false,
            auth_refusals: 0,
            signature_failures: 0,
            last_signature_error: None,
        };
        let mut sockets = self.lock();
        sockets.insert(id, entry);
        // Bound the number of closed sockets kept for inspection.
        let closed: Vec<u64> = sockets
            .iter()
            .filter(|(_, e)| e.closed)
            .map(|(id, _)| *id)
            .collect();
        if closed.len() > CLOSED_SOCKETS_KEPT_MAX {
            for id in &closed[..closed.len() - CLOSED_SOCKETS_KEPT_MAX] {
                sockets.remove(id);
            }
        }
        id
    }

    /// Feed one event for socket `id` and publish the resulting state changes.
    pub(crate) fn apply(&self, id: u64, ev: LinkEvent) {
        let now = now_ms();
        let closing = matches!(ev, LinkEvent::SocketClosed);
        let (name, changes) = {
            let mut sockets = self.lock();
            let Some(e) = sockets.get_mut(&id) else {
                return;
            };
            let traffic = e.counters.traffic();
            let changes = e.table.apply(now, ev, &traffic);
            if closing {
                e.closed = true;
            }
            (e.name.clone(), changes)
        };
        self.publish(now, id, &name, changes);
    }

    pub(crate) fn resync(&self, id: u64, live: &[(u64, String, bool)], reason: &str) {
        let now = now_ms();
        let (name, changes) = {
            let mut sockets = self.lock();
            let Some(e) = sockets.get_mut(&id) else {
                return;
            };
            let traffic = e.counters.traffic();
            (e.name.clone(), e.table.resync(now, live, reason, &traffic))
        };
        self.publish(now, id, &name, changes);
    }

    /// The auth policy refused a client from `ip`; the reason is attached to
    /// its handshake failure when the engine reports it.
    pub(crate) fn note_refusal(&self, id: u64, ip: Option<&str>, reason: &str) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.auth_refusals += 1;
            e.table.refuse(ip, reason);
        }
    }

    /// A received message failed verification and was dropped.
    pub(crate) fn note_signature_failure(&self, id: u64, reason: &str) {
        tracing::warn!(
            socket = id,
            reason,
            "message dropped: signature did not verify"
        );
        if let Some(e) = self.lock().get_mut(&id) {
            e.signature_failures += 1;
            e.last_signature_error = Some(reason.to_owned());
        }
    }

    /// Periodic upkeep; returns whether the caller should resync (see [`SocketTable::tick`]).
    pub(crate) fn tick(&self, id: u64, stale_ms: u64) -> bool {
        let now = now_ms();
        self.lock()
            .get_mut(&id)
            .is_some_and(|e| e.table.tick(now, stale_ms))
    }

    fn publish(&self, now: u64, id: u64, name: &str, changes: Vec<StateChange>) {
        for c in changes {
            let ev = ConnectionEvent {
                at_ms: now,
                socket_id: id,
                socket_name: name.to_owned(),
                peer: c.peer.to_string(),
                endpoint: c.endpoint,
                from: c.from,
                to: c.to,
                reason: c.reason,
            };
            tracing::debug!(
                socket = %ev.socket_name, peer = %ev.peer, to = %ev.to,
                reason = ev.reason.as_deref().unwrap_or(""), "connection state"
            );
            // No subscriber is fine: the snapshot still has the state.
            let _ = self.inner.events.send(ev);
        }
    }
}
