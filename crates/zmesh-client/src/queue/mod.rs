//! Async producer and consumer for the durable queues.
//!
//! A publish carries a message id (generated unless given), so a retry after a
//! timeout or a broker restart is stored once. A consumer re-subscribes by
//! itself when the broker falls silent (it restarted, or the link was cut):
//! deliveries continue, and anything that was in flight comes again. Given
//! a cluster's nodes ([`QueueClient::connect_any`]), it moves to another at
//! once when one goes away, and follows a queue's consumers to the node
//! serving it (`docs/protocol/queues.md`, "In a cluster").
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
use zmesh::{Message, SocketOptions};

use crate::request::{Retry, unless_refused};
use crate::util::{MsgIds, lock};
use zmesh_wire::queue::options::{QueueOptions, QueueSpec};
use zmesh_wire::queue::proto::PROTOCOL;

mod consumer;
mod links;
mod routing;
mod tasks;

/// Why a queue operation failed: the error of every queue and stream request.
pub use crate::request::RequestError as QueueError;
pub use consumer::Consumer;
pub use links::LINKS_MAX;
use links::{Link, Links, TaskSet, spawn_in};
use tasks::{batch_publishes, keep_links, read_replies};

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
    /// 421: another node serves the request; where, when known.
    Misdirected(String, Option<String>),
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

/// Redirects one request follows before it counts as an attempt.
const REDIRECTS_MAX: u32 = 8;

/// Short waits (up to `backoff_initial` each) a request makes for a node
/// to serve its queue while none is known (an election), before each such
/// answer counts as an attempt: about 50 × 50 ms on average, longer than an
/// election takes.
const LEADERLESS_WAITS_MAX: u32 = 50;

/// Queues whose serving node the client remembers.
const SERVED_AT_MAX: usize = 10_000;

/// The publishers of a BATCH's messages, in order.
type Publishers = Vec<oneshot::Sender<Status>>;

/// The answer to NODES: each node's client endpoint, by node id.
#[derive(serde::Deserialize)]
struct NodesReply {
    nodes: std::collections::BTreeMap<String, String>,
}

/// A consumer, as the client keeps it subscribed.
struct Subscription {
    prefetch: u32,
    tx: mpsc::UnboundedSender<Delivery>,
    /// The link it subscribed through: its acks go there.
    link: usize,
    /// A CONSUME for it is out: no other is started meanwhile.
    subscribing: bool,
}

struct Inner {
    cfg: QueueClientConfig,
    links: Links,
    tasks: std::sync::Weak<TaskSet>,
    /// Correlation id -> the link the request went to, and its waiter.
    pending: Mutex<HashMap<u64, (usize, oneshot::Sender<Reply>)>>,
    /// BATCH correlation id -> its link and the publishers of its messages, in order.
    batches: Mutex<HashMap<u64, (usize, Publishers)>>,
    subscriptions: Mutex<HashMap<String, Subscription>>,
    /// The link each queue was last served through (CONSUME, PURGE).
    served_at: Mutex<HashMap<String, usize>>,
    next_corr: AtomicU64,
    msg_ids: MsgIds,
}

/// A connection to the broker's queues (one broker, or the nodes of a
/// cluster). Cheap to clone; clones share it.
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<Inner>,
    publish_tx: mpsc::Sender<PublishReq>,
    /// Aborts the background tasks when the last clone goes.
    _tasks: Arc<TaskSet>,
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
        Self::connect_any_with(&[endpoint], cfg, options).await
    }

    /// Connect to the nodes of a cluster (or one broker): requests go to
    /// one at a time, moving on at once when its connection drops; a
    /// queue's consumers follow the node that serves it (the cluster names
    /// it, and the client connects there too). One endpoint is enough
    /// while that node is up; each one given is another way in.
    pub async fn connect_any<S: AsRef<str>>(
        endpoints: &[S],
        cfg: QueueClientConfig,
    ) -> Result<Self, QueueError> {
        Self::connect_any_with(
            endpoints,
            cfg,
            SocketOptions::default().name("queue-client"),
        )
        .await
    }

    /// [`QueueClient::connect_any`] with explicit socket options.
    pub async fn connect_any_with<S: AsRef<str>>(
        endpoints: &[S],
        cfg: QueueClientConfig,
        options: SocketOptions,
    ) -> Result<Self, QueueError> {
        if endpoints.is_empty() {
            return Err(QueueError::Protocol("no broker endpoint given".into()));
        }
        let tasks = TaskSet::new();
        let inner = Arc::new(Inner {
            links: Links::new(options),
            tasks: Arc::downgrade(&tasks),
            pending: Mutex::new(HashMap::default()),
            batches: Mutex::new(HashMap::default()),
            subscriptions: Mutex::new(HashMap::default()),
            served_at: Mutex::new(HashMap::default()),
            next_corr: AtomicU64::new(1),
            msg_ids: MsgIds::new(),
            cfg: cfg.clone(),
        });
        // Watching before the first connection, so no state change is missed.
        tasks.spawn(keep_links(inner.clone()));
        for endpoint in endpoints {
            inner.link_to(endpoint.as_ref()).await?;
        }
        let (publish_tx, publish_rx) = mpsc::channel(cfg.in_flight_max.max(1));
        tasks.spawn(batch_publishes(inner.clone(), publish_rx));
        Ok(Self {
            inner,
            publish_tx,
            _tasks: tasks,
        })
    }

    /// Send a command (its first part is the command, the correlation id is
    /// added), retrying on silence, following redirects for `queue`.
    async fn request(&self, parts: Vec<Bytes>, queue: Option<&str>) -> Result<Reply, QueueError> {
        let start = self.inner.link_for(queue);
        self.inner
            .request(parts, queue, start)
            .await
            .map(|(r, _)| r)
    }

    fn retry(&self) -> Retry {
        self.inner.retry()
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
            .request(vec!["DECLARE".into(), queue.to_owned().into(), opts], None)
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
        // PURGE goes where the queue is served; DELETE anywhere.
        let served = (cmd == "PURGE").then_some(queue);
        match self
            .request(vec![cmd.into(), queue.to_owned().into()], served)
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
        match self.request(vec!["STATS".into(), q], None).await? {
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
            // Where the batch goes, unless the link moves before it is sent.
            let link = self.inner.links.pick();
            if self.publish_tx.send(req).await.is_err() {
                return Err(QueueError::Protocol(
                    "the client's publisher stopped".into(),
                ));
            }
            let gave_up = self.inner.links.get(link).gave_up.clone();
            let outcome = unless_refused(
                &gave_up,
                tokio::time::timeout(self.inner.cfg.attempt_timeout, rx),
            )
            .await
            .map_err(|reason| QueueError::HandshakeRefused { reason })?;
            match outcome {
                Ok(Ok(Status::Stored(c))) => return Ok(c),
                Ok(Ok(Status::Refused(code, reason))) => {
                    return Err(QueueError::Refused { code, reason });
                }
                // Its connection dropped (the batch is failed at once): try
                // again with the same id, on the link requests moved to.
                Ok(Err(_)) => {}
                // Silence: that broker may be frozen; try the next.
                Err(_) => {
                    self.inner.links.move_off(link);
                }
            }
        }
        Err(QueueError::Timeout(retry.attempts()))
    }

    /// Consume `queue` with at most `prefetch` messages unacknowledged. In
    /// a cluster the consumer follows the node serving the queue: through
    /// a redirect now, and again whenever that node goes away.
    pub async fn consume(&self, queue: &str, prefetch: u32) -> Result<Consumer, QueueError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let start = self.inner.link_for(Some(queue));
        lock(&self.inner.subscriptions).insert(
            queue.to_owned(),
            Subscription {
                prefetch,
                tx,
                link: start,
                subscribing: true,
            },
        );
        let answered = self
            .inner
            .request(consume_parts(queue, prefetch), Some(queue), start)
            .await;
        match answered {
            Ok((_, link)) => {
                if let Some(sub) = lock(&self.inner.subscriptions).get_mut(queue) {
                    sub.link = link;
                    sub.subscribing = false;
                }
            }
            Err(e) => {
                lock(&self.inner.subscriptions).remove(queue);
                return Err(e);
            }
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

    /// Sent to the node serving `queue`, as far as the client knows.
    async fn settle(
        &self,
        cmd: &'static str,
        queue: &str,
        flag: Option<&'static str>,
        tags: &[u64],
    ) -> Result<(), QueueError> {
        let link = self.inner.links.get(self.inner.link_for(Some(queue)));
        for chunk in tags.chunks(zmesh_wire::queue::proto::TAGS_MAX) {
            let parts = [Bytes::from(cmd), Bytes::from(queue.to_owned())]
                .into_iter()
                .chain(flag.map(Bytes::from))
                .chain(chunk.iter().map(|t| Bytes::from(t.to_string())));
            tokio::time::timeout(
                self.inner.cfg.attempt_timeout,
                link.sock.send(frames(parts)),
            )
            .await
            .map_err(|_| QueueError::Timeout(1))??;
        }
        Ok(())
    }

    /// Leave: the brokers hand this client's unacknowledged messages to
    /// others now.
    pub async fn disconnect(&self) -> Result<(), QueueError> {
        lock(&self.inner.subscriptions).clear();
        for link in self.inner.links.all() {
            let _ = link.sock.try_send(frames([Bytes::from("DISCONNECT")]));
        }
        Ok(())
    }
}

fn consume_parts(queue: &str, prefetch: u32) -> Vec<Bytes> {
    vec![
        "CONSUME".into(),
        queue.to_owned().into(),
        prefetch.to_string().into(),
    ]
}
