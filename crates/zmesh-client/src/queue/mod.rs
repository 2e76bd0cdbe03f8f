//! Async producer and consumer for the durable queues.
//!
//! A publish carries a message id (generated unless given), so a retry after a
//! timeout or a broker restart is stored once. A consumer re-subscribes by
//! itself when the broker falls silent (it restarted, or the link was cut):
//! deliveries continue, and anything that was in flight comes again.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zmesh_client::queue::QueueError> {
//! use zmesh_client::queue::{QueueClient, QueueClientConfig};
//! let client = QueueClient::connect("tcp://127.0.0.1:5555", QueueClientConfig::default()).await?;
//! client.declare("jobs", None).await?;
//! let confirm = client.publish("jobs", "resize photo 42").await?;
//! let mut consumer = client.consume("jobs", 100).await?;
//! let job = consumer.next().await.expect("a delivery");
//! consumer.ack(job.tag).await?;
//! # let _ = confirm; Ok(()) }
//! ```

use foldhash::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use zmesh::{Message, Socket, SocketOptions, SocketType};

use crate::request::{Retry, unless_refused};
use crate::util::{MsgIds, Tasks, link_restored, lock};
use zmesh_wire::queue::options::{QueueOptions, QueueSpec};
use zmesh_wire::queue::proto::PROTOCOL;

mod consumer;
mod tasks;

/// Why a queue operation failed: the error of every queue and stream request.
pub use crate::request::RequestError as QueueError;
pub use consumer::Consumer;
use tasks::{batch_publishes, keep_consumers, read_replies};

fn frames(parts: impl IntoIterator<Item = Bytes>) -> Message {
    crate::util::framed(PROTOCOL, parts)
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct QueueClientConfig {
    /// How long one attempt waits for its reply.
    pub attempt_timeout: Duration,
    /// Attempts after the first (publishes are deduplicated, so retrying is safe).
    pub retries: u32,
    /// First wait between attempts (doubles, with full jitter).
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Requests in flight at once on this client.
    pub in_flight_max: usize,
    /// How often a consuming client says it is alive.
    pub heartbeat: Duration,
    /// Broker silence after which consumers subscribe again.
    pub broker_timeout: Duration,
}

impl Default for QueueClientConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            retries: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            in_flight_max: 100_000,
            heartbeat: Duration::from_secs(1),
            broker_timeout: Duration::from_secs(3),
        }
    }
}

/// A publish confirmed: the message is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// The message's tag (its journal offset).
    pub tag: u64,
    /// The broker already had this message id.
    pub duplicate: bool,
}

/// A message handed to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Queue.
    pub queue: String,
    /// Tag to ack or nack.
    pub tag: u64,
    /// 1 on first delivery, more on redelivery.
    pub deliveries: u32,
    /// The producer's message id.
    pub msg_id: Bytes,
    /// Body.
    pub body: Bytes,
}

enum Reply {
    Ok(Option<Bytes>),
    Error(u16, String),
}

/// One message's outcome in a CONFIRMED reply.
enum Status {
    Stored(Confirm),
    Refused(u16, String),
}

/// A publish waiting for the batcher.
struct PublishReq {
    queue: String,
    msg_id: Bytes,
    body: Bytes,
    tx: oneshot::Sender<Status>,
}

/// Most messages the batcher puts in one BATCH.
const BATCH_SEND_MAX: usize = 1024;

struct Inner {
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    /// BATCH correlation id -> the publishers of its messages, in order.
    batches: Mutex<HashMap<u64, Vec<oneshot::Sender<Status>>>>,
    consumers: Mutex<HashMap<String, (u32, mpsc::UnboundedSender<Delivery>)>>,
    next_corr: AtomicU64,
    last_heard: Mutex<Instant>,
    msg_ids: MsgIds,
}

/// A connection to the broker's queues. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct QueueClient {
    sock: Socket,
    cfg: QueueClientConfig,
    inner: Arc<Inner>,
    publish_tx: mpsc::Sender<PublishReq>,
    /// Set once the engine gives up on the broker (a refused handshake).
    gave_up: watch::Receiver<Option<String>>,
    /// Aborts the reader and keeper tasks when the last clone goes.
    _tasks: Arc<Tasks>,
}

impl QueueClient {
    /// Connect to a broker (the link comes and goes by itself; requests retry).
    pub async fn connect(endpoint: &str, cfg: QueueClientConfig) -> Result<Self, QueueError> {
        Self::connect_with(endpoint, cfg, SocketOptions::default().name("queue-client")).await
    }

    /// Connect with explicit socket options (security, heartbeats...).
    pub async fn connect_with(
        endpoint: &str,
        cfg: QueueClientConfig,
        options: SocketOptions,
    ) -> Result<Self, QueueError> {
        let sock = Socket::new(SocketType::Dealer, options)?;
        sock.connect(endpoint).await?;
        let inner = Arc::new(Inner {
            pending: Mutex::new(HashMap::default()),
            batches: Mutex::new(HashMap::default()),
            consumers: Mutex::new(HashMap::default()),
            next_corr: AtomicU64::new(1),
            last_heard: Mutex::new(Instant::now()),
            msg_ids: MsgIds::new(),
        });
        let reader = tokio::spawn(read_replies(sock.clone(), inner.clone()));
        let keeper = tokio::spawn(keep_consumers(sock.clone(), inner.clone(), cfg.clone()));
        let (publish_tx, publish_rx) = mpsc::channel(cfg.in_flight_max.max(1));
        let batcher = tokio::spawn(batch_publishes(
            sock.clone(),
            inner.clone(),
            publish_rx,
            cfg.attempt_timeout,
        ));
        Ok(Self {
            gave_up: sock.gave_up(),
            sock,
            cfg,
            inner,
            publish_tx,
            _tasks: Arc::new(Tasks(vec![reader, keeper, batcher])),
        })
    }

    async fn attempt(&self, parts: &[Bytes]) -> Result<Option<Reply>, QueueError> {
        let corr = self.inner.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.inner.pending);
            if pending.len() >= self.cfg.in_flight_max {
                return Err(QueueError::Busy(self.cfg.in_flight_max));
            }
            pending.insert(corr, tx);
        }
        let msg = frames(
            std::iter::once(parts[0].clone())
                .chain(std::iter::once(Bytes::from(corr.to_string())))
                .chain(parts[1..].iter().cloned()),
        );
        let sent = self.sock.send(msg).await;
        let result = match sent {
            Ok(()) => tokio::time::timeout(self.cfg.attempt_timeout, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(e) => {
                lock(&self.inner.pending).remove(&corr);
                return Err(e.into());
            }
        };
        if result.is_none() {
            lock(&self.inner.pending).remove(&corr);
        }
        Ok(result)
    }

    /// Send a command (its first part is the command, the correlation id is
    /// added), retrying on silence.
    async fn request(&self, parts: Vec<Bytes>) -> Result<Reply, QueueError> {
        let mut retry = self.retry();
        while retry.next().await {
            match self.unless_refused(self.attempt(&parts)).await?? {
                Some(Reply::Error(code, reason)) => {
                    return Err(QueueError::Refused { code, reason });
                }
                Some(reply) => return Ok(reply),
                None => {}
            }
        }
        Err(QueueError::Timeout(retry.attempts()))
    }

    fn retry(&self) -> Retry {
        Retry::new(
            self.cfg.retries,
            self.cfg.backoff_initial,
            self.cfg.backoff_max,
        )
    }

    /// `attempt`, unless the broker refuses the handshake first.
    async fn unless_refused<T>(&self, attempt: impl Future<Output = T>) -> Result<T, QueueError> {
        unless_refused(&self.gave_up, attempt)
            .await
            .map_err(|reason| QueueError::HandshakeRefused { reason })
    }

    /// Create `queue` (or check it exists with these options; `None` accepts any).
    pub async fn declare(
        &self,
        queue: &str,
        options: Option<&QueueOptions>,
    ) -> Result<QueueSpec, QueueError> {
        let opts = options.map_or_else(Bytes::new, |o| {
            serde_json::to_vec(o).expect("options serialize").into()
        });
        match self
            .request(vec!["DECLARE".into(), queue.to_owned().into(), opts])
            .await?
        {
            Reply::Ok(Some(spec)) => serde_json::from_slice(&spec)
                .map_err(|e| QueueError::Protocol(format!("queue spec: {e}"))),
            _ => Err(QueueError::Protocol("DECLARE without a spec".into())),
        }
    }

    async fn count_reply(
        &self,
        cmd: &'static str,
        queue: &str,
        key: &str,
    ) -> Result<u64, QueueError> {
        match self
            .request(vec![cmd.into(), queue.to_owned().into()])
            .await?
        {
            Reply::Ok(Some(body)) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get(key)?.as_u64())
                .ok_or_else(|| QueueError::Protocol(format!("{cmd} reply without {key}"))),
            _ => Err(QueueError::Protocol(format!("{cmd} reply without a body"))),
        }
    }

    /// Delete `queue` and its messages; returns how many were dropped.
    pub async fn delete(&self, queue: &str) -> Result<u64, QueueError> {
        self.count_reply("DELETE", queue, "deleted_messages").await
    }

    /// Drop `queue`'s ready messages; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u64, QueueError> {
        self.count_reply("PURGE", queue, "purged").await
    }

    /// Counters of one queue or all, as JSON objects.
    pub async fn stats(&self, queue: Option<&str>) -> Result<Vec<serde_json::Value>, QueueError> {
        let q = queue.map_or_else(Bytes::new, |q| q.to_owned().into());
        match self.request(vec!["STATS".into(), q]).await? {
            Reply::Ok(Some(body)) => serde_json::from_slice(&body)
                .map_err(|e| QueueError::Protocol(format!("stats: {e}"))),
            _ => Err(QueueError::Protocol("STATS reply without a body".into())),
        }
    }

    /// Publish `body`; resolves once the broker has it durably.
    pub async fn publish(
        &self,
        queue: &str,
        body: impl Into<Bytes>,
    ) -> Result<Confirm, QueueError> {
        self.publish_with_id(queue, self.inner.msg_ids.next(), body)
            .await
    }

    /// Publish with the caller's message id (deduplicated by the broker within its window).
    ///
    /// Concurrent publishes on one client travel together: whatever is waiting
    /// when the connection is free goes in one BATCH, confirmed by one reply.
    pub async fn publish_with_id(
        &self,
        queue: &str,
        msg_id: impl Into<Bytes>,
        body: impl Into<Bytes>,
    ) -> Result<Confirm, QueueError> {
        let (msg_id, body) = (msg_id.into(), body.into());
        let mut retry = self.retry();
        while retry.next().await {
            let (tx, rx) = oneshot::channel();
            let req = PublishReq {
                queue: queue.to_owned(),
                msg_id: msg_id.clone(),
                body: body.clone(),
                tx,
            };
            if self.publish_tx.send(req).await.is_err() {
                return Err(QueueError::Protocol(
                    "the client's publisher stopped".into(),
                ));
            }
            let outcome = self
                .unless_refused(tokio::time::timeout(self.cfg.attempt_timeout, rx))
                .await?;
            match outcome {
                Ok(Ok(Status::Stored(c))) => return Ok(c),
                Ok(Ok(Status::Refused(code, reason))) => {
                    return Err(QueueError::Refused { code, reason });
                }
                // Silence, or the batch could not be sent: try again with the same id.
                _ => {}
            }
        }
        Err(QueueError::Timeout(retry.attempts()))
    }

    /// Consume `queue` with at most `prefetch` messages unacknowledged.
    pub async fn consume(&self, queue: &str, prefetch: u32) -> Result<Consumer, QueueError> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.consumers).insert(queue.to_owned(), (prefetch, tx));
        let r = self
            .request(vec![
                "CONSUME".into(),
                queue.to_owned().into(),
                prefetch.to_string().into(),
            ])
            .await;
        if let Err(e) = r {
            lock(&self.inner.consumers).remove(queue);
            return Err(e);
        }
        Ok(Consumer {
            client: self.clone(),
            queue: queue.to_owned(),
            rx,
            stopped: false,
        })
    }

    /// Acknowledge messages by tag (from any connection).
    pub async fn ack(&self, queue: &str, tags: &[u64]) -> Result<(), QueueError> {
        self.settle("ACK", queue, None, tags).await
    }

    /// Give messages back: to the queue (`requeue`) or to the dead letters.
    pub async fn nack(&self, queue: &str, tags: &[u64], requeue: bool) -> Result<(), QueueError> {
        let flag = if requeue { "1" } else { "0" };
        self.settle("NACK", queue, Some(flag), tags).await
    }

    async fn settle(
        &self,
        cmd: &'static str,
        queue: &str,
        flag: Option<&'static str>,
        tags: &[u64],
    ) -> Result<(), QueueError> {
        for chunk in tags.chunks(zmesh_wire::queue::proto::TAGS_MAX) {
            let parts = [Bytes::from(cmd), Bytes::from(queue.to_owned())]
                .into_iter()
                .chain(flag.map(Bytes::from))
                .chain(chunk.iter().map(|t| Bytes::from(t.to_string())));
            self.sock.send(frames(parts)).await?;
        }
        Ok(())
    }

    /// Leave: the broker hands this client's unacknowledged messages to others now.
    pub async fn disconnect(&self) -> Result<(), QueueError> {
        lock(&self.inner.consumers).clear();
        self.sock.send(frames([Bytes::from("DISCONNECT")])).await?;
        Ok(())
    }
}
