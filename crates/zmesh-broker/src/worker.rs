//! The worker: serves one service through the broker with a handler, bounded
//! concurrency (one MDP session per slot), heartbeats both ways, reconnect
//! with backoff after the broker goes away, and a graceful drain.
//!
//! ```no_run
//! # async fn demo() {
//! use zmesh_broker::worker::{Worker, WorkerConfig, handler};
//! let (stop_tx, stop) = tokio::sync::watch::channel(false);
//! let w = Worker::new("tcp://127.0.0.1:5555", "echo", WorkerConfig::default(),
//!     handler(|body| async move { Ok(body) }));
//! w.run(stop).await;
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use zmesh::{Message, Socket, SocketOptions, SocketType};

use crate::mdp::{MDPW01, cmd};

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
    /// Requests handled at once (one broker session each).
    pub concurrency: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(2500),
            heartbeat_liveness: 3,
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
            concurrency: 1,
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

fn w1(command: u8) -> Vec<Bytes> {
    vec![
        Bytes::new(),
        Bytes::from_static(MDPW01),
        Bytes::from(vec![command]),
    ]
}

enum SessionEnd {
    /// The broker vanished or said DISCONNECT: reconnect.
    Lost,
    /// Shutdown requested and drained.
    Stopped,
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

    /// Serve until `stop` turns true; then finish in-flight requests, say
    /// DISCONNECT and return.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let me = Arc::new(self);
        let slots: Vec<_> = (0..me.cfg.concurrency.max(1))
            .map(|_| {
                let me = me.clone();
                let stop = stop.clone();
                tokio::spawn(async move { me.slot(stop).await })
            })
            .collect();
        for s in slots {
            let _ = s.await;
        }
    }

    /// One slot: sessions back to back, with backoff between them.
    async fn slot(&self, mut stop: watch::Receiver<bool>) {
        let mut wait = self.cfg.reconnect_initial;
        loop {
            if *stop.borrow() {
                return;
            }
            match self.session(&mut stop).await {
                Ok(SessionEnd::Stopped) => return,
                Ok(SessionEnd::Lost) => {
                    tracing::info!(service = %self.service, "broker lost; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(service = %self.service, error = %e, "worker session failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            wait = (wait * 2).min(self.cfg.reconnect_max);
        }
    }

    async fn session(&self, stop: &mut watch::Receiver<bool>) -> zmesh::Result<SessionEnd> {
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let opts = SocketOptions::default()
            .linger(Duration::from_secs(1))
            .name(format!("worker-{}", self.service));
        let sock = Socket::new(SocketType::Dealer, opts)?;
        sock.connect(&self.endpoint).await?;
        let mut ready = w1(cmd::W1_READY);
        ready.push(Bytes::from(self.service.clone()));
        sock.send(Message::from_frames(ready)).await?;
        let hb = self.cfg.heartbeat_interval;
        let patience = hb * self.cfg.heartbeat_liveness;
        let mut broker_expiry = Instant::now() + patience;
        let mut next_hb = Instant::now() + hb;
        let end = loop {
            tokio::select! {
                m = sock.recv() => {
                    broker_expiry = Instant::now() + patience;
                    let frames = m?.frames();
                    match frames.as_slice() {
                        [e, h, c, ..] if e.is_empty() && h.as_ref() == MDPW01 && c.as_ref() == [cmd::W1_DISCONNECT] => break SessionEnd::Lost,
                        [e, h, c, address, delim, body @ ..] if e.is_empty() && h.as_ref() == MDPW01 && c.as_ref() == [cmd::W1_REQUEST] && delim.is_empty() => {
                            let reply = self.handle(&sock, body.to_vec(), &mut next_hb).await?;
                            let mut f = w1(cmd::W1_REPLY);
                            f.extend([address.clone(), Bytes::new()]);
                            f.extend(reply);
                            sock.send(Message::from_frames(f)).await?;
                            self.stats.handled.fetch_add(1, Ordering::Relaxed);
                            if *stop.borrow() {
                                break SessionEnd::Stopped;
                            }
                        }
                        _ => {} // heartbeats and anything else: liveness only
                    }
                }
                _ = sleep_until(next_hb) => {
                    if Instant::now() >= broker_expiry {
                        break SessionEnd::Lost;
                    }
                    sock.send(Message::from_frames(w1(cmd::W1_HEARTBEAT))).await?;
                    next_hb = Instant::now() + hb;
                }
                _ = stop.changed() => {
                    if *stop.borrow() {
                        break SessionEnd::Stopped;
                    }
                }
            }
        };
        if matches!(end, SessionEnd::Stopped) {
            // Drained (we are between requests): tell the broker we are gone.
            let _ = sock
                .send(Message::from_frames(w1(cmd::W1_DISCONNECT)))
                .await;
        }
        sock.close().await?;
        Ok(end)
    }

    /// Run the handler while heartbeats keep going out.
    async fn handle(
        &self,
        sock: &Socket,
        body: Vec<Bytes>,
        next_hb: &mut Instant,
    ) -> zmesh::Result<Vec<Bytes>> {
        let work = (self.handler)(body);
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => {
                    return Ok(match r {
                        Ok(reply) => reply,
                        Err(e) => vec![Bytes::from_static(b"500"), Bytes::from(e)],
                    });
                }
                _ = sleep_until(*next_hb) => {
                    sock.send(Message::from_frames(w1(cmd::W1_HEARTBEAT))).await?;
                    *next_hb = Instant::now() + self.cfg.heartbeat_interval;
                }
            }
        }
    }
}
