//! The worker: serves one service through the broker with a handler, bounded
//! concurrency, heartbeats both ways, reconnect with backoff after the broker
//! goes away, and a graceful drain.
//!
//! By default it speaks the zmesh worker protocol (`ZMDPW1`): one connection
//! with a credit of `concurrency` requests, replies batched
//! (`multiplexed`). With [`WorkerProtocol::Mdp`] it speaks 7/MDP to any
//! Majordomo broker, one connection per concurrent request (`mdp`).
//!
//! ```no_run
//! # async fn demo() {
//! use zmesh_client::worker::{Worker, WorkerConfig, handler};
//! let (stop_tx, stop) = tokio::sync::watch::channel(false);
//! let w = Worker::new("tcp://127.0.0.1:5555", "echo", WorkerConfig::default(),
//!     handler(|body| async move { Ok(body) }));
//! // Returns once stopped, or with an error when the broker refuses it.
//! let _ = w.run(stop).await;
//! # }
//! ```

mod mdp;
mod multiplexed;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use zmesh::{Socket, SocketOptions, SocketType};

/// What a handler returns: the reply body, or an error text sent as `["500", text]`.
pub type HandlerResult = Result<Vec<Bytes>, String>;

/// A request handler.
pub type Handler =
    Arc<dyn Fn(Vec<Bytes>) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>> + Send + Sync>;

/// Wrap an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Vec<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |body| Box::pin(f(body)))
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Heartbeat interval (must match the broker's).
    pub heartbeat_interval: Duration,
    /// Missed heartbeats before the broker is presumed dead.
    pub heartbeat_liveness: u32,
    /// First reconnect wait (doubles up to `reconnect_max`).
    pub reconnect_initial: Duration,
    /// Longest reconnect wait.
    pub reconnect_max: Duration,
    /// Requests handled at once.
    pub concurrency: usize,
    /// What to speak to the broker.
    pub protocol: WorkerProtocol,
    /// Longest a ZMDPW1 drain waits for running handlers; then the worker
    /// leaves anyway and the broker hands what it held to another worker
    /// (idempotent services) or answers it with an error.
    pub drain_timeout: Duration,
    /// The options of each session's DEALER (security, signing, high-water
    /// marks...); its name is set per worker.
    pub socket: SocketOptions,
}

/// The worker's protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerProtocol {
    /// `ZMDPW1` (zmesh brokers): one connection, `concurrency` requests at once.
    #[default]
    Zmesh,
    /// 7/MDP (any Majordomo broker): one connection per concurrent request.
    Mdp,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(2500),
            heartbeat_liveness: 3,
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
            concurrency: 1,
            protocol: WorkerProtocol::Zmesh,
            drain_timeout: Duration::from_secs(30),
            socket: SocketOptions::default(),
        }
    }
}

/// Counts of a worker's life.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Requests handled.
    pub handled: AtomicU64,
    /// Sessions opened (the first and every reconnect).
    pub sessions: AtomicU64,
}

/// A worker for one service.
pub struct Worker {
    endpoint: String,
    service: String,
    cfg: WorkerConfig,
    handler: Handler,
    stats: Arc<WorkerStats>,
}

/// Why a worker stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker refused the handshake (a wrong CURVE server key, a key or
    /// address its policy denies). Fix the configuration; dialing again
    /// would be refused again, so the worker does not.
    #[error("the broker refused the connection: {reason}")]
    Refused {
        /// The engine's reason, with the endpoint.
        reason: String,
    },
}

/// Resolves with the engine's reason once it gives up on the broker (a
/// refused handshake); never while it still dials.
async fn refused(gave_up: &mut watch::Receiver<Option<String>>) -> String {
    // The guard is dropped before any further await (it is not `Send`).
    let why = gave_up
        .wait_for(Option::is_some)
        .await
        .map(|why| why.clone().unwrap_or_default());
    match why {
        Ok(why) => why,
        // The socket is gone: no verdict will come.
        Err(_) => std::future::pending().await,
    }
}

/// Close a session's socket; after a drain, say `disconnect` first.
async fn end_session(
    sock: Socket,
    end: SessionEnd,
    disconnect: Vec<Bytes>,
) -> zmesh::Result<SessionEnd> {
    if matches!(end, SessionEnd::Stopped) {
        let _ = sock.send(zmesh::Message::from_frames(disconnect)).await;
    }
    sock.close().await?;
    Ok(end)
}

/// The handler's reply to `body`; an error, or a panic when the handler is
/// called or polled, becomes a `500` reply (the worker lives on).
fn reply_to(
    handler: &Handler,
    body: Vec<Bytes>,
) -> impl Future<Output = Vec<Bytes>> + Send + 'static {
    use futures::FutureExt;
    use std::panic::AssertUnwindSafe;
    let work = std::panic::catch_unwind(AssertUnwindSafe(|| handler(body)))
        .map(|fut| AssertUnwindSafe(fut).catch_unwind());
    async move {
        let done = match work {
            Ok(fut) => fut.await,
            Err(panic) => Err(panic),
        };
        match done {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => vec![Bytes::from_static(b"500"), Bytes::from(e)],
            Err(_) => vec![
                Bytes::from_static(b"500"),
                Bytes::from_static(b"handler panicked"),
            ],
        }
    }
}

/// Resolves once a stop is asked: `stop` true, or its sender gone. (Waiting
/// on `changed()` alone would spin once the sender is dropped.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum SessionEnd {
    /// The broker vanished or said DISCONNECT: reconnect.
    Lost,
    /// Shutdown requested and drained.
    Stopped,
    /// The broker refused the handshake, with the engine's reason.
    Refused(String),
}

impl Worker {
    /// A worker of `service` at the broker `endpoint`.
    pub fn new(endpoint: &str, service: &str, cfg: WorkerConfig, handler: Handler) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            service: service.to_owned(),
            cfg,
            handler,
            stats: Arc::default(),
        }
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Serve until `stop` turns true (or its sender is dropped: nobody is
    /// left to say stop); then finish in-flight requests, within
    /// `drain_timeout`, say DISCONNECT and return. A broker that refuses
    /// the handshake ends it with [`WorkerError::Refused`], not a reconnect loop.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let me = Arc::new(self);
        let sessions = match me.cfg.protocol {
            WorkerProtocol::Zmesh => 1,
            WorkerProtocol::Mdp => me.cfg.concurrency.max(1),
        };
        let slots: Vec<_> = (0..sessions)
            .map(|_| {
                let me = me.clone();
                let stop = stop.clone();
                tokio::spawn(async move { me.slot(stop).await })
            })
            .collect();
        let mut outcome = Ok(());
        for s in slots {
            if let Ok(Err(e)) = s.await {
                outcome = outcome.and(Err(e));
            }
        }
        outcome
    }

    /// One connection's life: sessions back to back, with backoff between them.
    async fn slot(&self, mut stop: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let mut wait = self.cfg.reconnect_initial;
        loop {
            if *stop.borrow() || stop.has_changed().is_err() {
                return Ok(());
            }
            self.stats.sessions.fetch_add(1, Ordering::Relaxed);
            let session = match self.cfg.protocol {
                WorkerProtocol::Zmesh => self.multiplexed_session(&mut stop).await,
                WorkerProtocol::Mdp => self.mdp_session(&mut stop).await,
            };
            match session {
                Ok(SessionEnd::Stopped) => return Ok(()),
                Ok(SessionEnd::Refused(reason)) => {
                    tracing::error!(service = %self.service, %reason, "the broker refused the worker");
                    return Err(WorkerError::Refused { reason });
                }
                Ok(SessionEnd::Lost) => {
                    tracing::info!(service = %self.service, "broker lost; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(service = %self.service, error = %e, "worker session failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut stop) => return Ok(()),
            }
            wait = (wait * 2).min(self.cfg.reconnect_max);
        }
    }

    /// A connected DEALER for one session, and its watch of the engine
    /// giving up on the broker.
    async fn connect(&self) -> zmesh::Result<(Socket, watch::Receiver<Option<String>>)> {
        let opts = self
            .cfg
            .socket
            .clone()
            .name(format!("worker-{}", self.service));
        let sock = Socket::new(SocketType::Dealer, opts)?;
        let gave_up = sock.gave_up();
        sock.connect(&self.endpoint).await?;
        Ok((sock, gave_up))
    }
}
