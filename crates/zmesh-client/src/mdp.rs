//! The client: requests with a deadline, retries with backoff and jitter, a
//! circuit breaker per service, and many requests in flight on one connection
//! (the zmesh client protocol, `ZMDPC1`, carries a request id). Requests made
//! while the connection is busy go out together as one BATCH, and the broker
//! answers a busy client in batches too, so tasks sharing a client share the
//! transport's per-message cost.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zmesh_client::mdp::ClientError> {
//! use zmesh_client::mdp::{Client, ClientConfig};
//! let client = Client::connect("tcp://127.0.0.1:5555", ClientConfig::default()).await?;
//! let reply = client.request("echo", vec!["hello".into()]).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use zmesh::codec::{Codec, Decode, Encode};
use zmesh::{Message, Socket, SocketOptions, SocketType};

use crate::breaker::{BreakerState, CircuitBreaker};
use crate::request::{Retry, unless_refused};
use crate::util::Tasks;
use zmesh_wire::mdp::batch::{self, BATCH_ITEMS_MAX};
use zmesh_wire::mdp::{ZMDPC1, cmd};

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// First wait between attempts (doubles, full jitter).
    pub backoff_initial: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Consecutive failures that open a service's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit stays open.
    pub breaker_cooldown: Duration,
    /// Requests in flight at once on this client.
    pub in_flight_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_millis(2500),
            retries: 3,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(5),
            in_flight_max: 1024,
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Environment: no reply in any attempt.
    #[error("{service}: no reply after {attempts} attempts")]
    Timeout {
        /// Service.
        service: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Environment: the service failed repeatedly; calls fail fast for a while.
    #[error("{service}: circuit open after repeated failures; failing fast")]
    CircuitOpen {
        /// Service.
        service: String,
    },
    /// The broker or the service answered with an error status.
    #[error("{service}: {code} {reason}")]
    Status {
        /// Service.
        service: String,
        /// Status code ("429", "503"...).
        code: String,
        /// Reason.
        reason: String,
    },
    /// Caller: the service name is not one the broker accepts (1 to 255
    /// printable ASCII characters, no spaces); nothing was sent.
    #[error("{0:?} is not a valid service name (1-255 printable ASCII characters, no spaces)")]
    InvalidService(String),
    /// Peer or caller: the broker refused the connection's handshake (a wrong
    /// CURVE server key, a key or address its policy denies); the client
    /// does not dial again.
    #[error("the broker refused the connection: {reason}")]
    Refused {
        /// The engine's reason, with the endpoint.
        reason: String,
    },
    /// Caller: too many requests in flight on this client.
    #[error("too many requests in flight ({0})")]
    Busy(usize),
    /// The socket failed.
    #[error(transparent)]
    Socket(#[from] zmesh::Error),
    /// A typed payload did not encode or decode.
    #[error(transparent)]
    Codec(#[from] zmesh::codec::CodecError),
}

enum Answer {
    Final(Vec<Bytes>),
    Error(String, String),
}

struct Pending {
    partials: Vec<Vec<Bytes>>,
    tx: Option<oneshot::Sender<(Vec<Vec<Bytes>>, Answer)>>,
}

struct Inner {
    pending: Mutex<HashMap<u64, Pending>>,
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
    next_id: AtomicU64,
}

/// A reply with the partial replies that came before it (18/MDP workers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Partial replies, in order.
    pub partials: Vec<Vec<Bytes>>,
    /// The final reply body.
    pub body: Vec<Bytes>,
}

/// A broker client. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    cfg: ClientConfig,
    inner: Arc<Inner>,
    /// Requests for the writer task (bounded by `in_flight_max`).
    outbox: mpsc::Sender<Vec<Bytes>>,
    /// Set once the engine gave up on the broker (a refused handshake).
    gave_up: tokio::sync::watch::Receiver<Option<String>>,
    _tasks: Arc<Tasks>,
}

impl Client {
    /// Connect to a broker (the link comes and goes by itself; requests retry).
    pub async fn connect(endpoint: &str, cfg: ClientConfig) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, cfg, SocketOptions::default().name("mdp-client")).await
    }

    /// Connect with explicit socket options (security, heartbeats...).
    pub async fn connect_with(
        endpoint: &str,
        cfg: ClientConfig,
        options: SocketOptions,
    ) -> Result<Self, ClientError> {
        let sock = Socket::new(SocketType::Dealer, options)?;
        let gave_up = sock.gave_up();
        sock.connect(endpoint).await?;
        // A random start keeps ids from two client runs apart at the broker.
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("OS random number generator unavailable");
        let inner = Arc::new(Inner {
            pending: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(u64::from_be_bytes(seed) >> 1),
        });
        let reader = tokio::spawn(read_replies(sock.clone(), inner.clone()));
        let (outbox, requests) = mpsc::channel(cfg.in_flight_max.max(1));
        let writer = tokio::spawn(write_requests(sock, requests));
        Ok(Self {
            cfg,
            inner,
            outbox,
            gave_up,
            _tasks: Arc::new(Tasks(vec![reader, writer])),
        })
    }

    /// The state of a service's circuit.
    pub fn breaker_state(&self, service: &str) -> BreakerState {
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(service)
            .map_or(BreakerState::Closed, |b| b.state())
    }

    /// Send `body` to `service`; the final reply's body.
    pub async fn request(
        &self,
        service: &str,
        body: Vec<Bytes>,
    ) -> Result<Vec<Bytes>, ClientError> {
        Ok(self.request_full(service, body).await?.body)
    }

    /// Send a typed value; decode the typed reply (both in codec `C`).
    pub async fn call<C: Codec, Req: Encode<C>, Resp: Decode<C>>(
        &self,
        service: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        let body = self.request(service, vec![req.encode()?]).await?;
        Ok(Resp::decode(
            body.last().map(|b| b.as_ref()).unwrap_or_default(),
        )?)
    }

    /// Like [`Self::request`], with the partial replies.
    pub async fn request_full(
        &self,
        service: &str,
        body: Vec<Bytes>,
    ) -> Result<Reply, ClientError> {
        // Checked here: a bad name would cost its whole batch a round trip.
        if !zmesh_wire::mdp::is_service_name(service.as_bytes()) {
            return Err(ClientError::InvalidService(service.to_owned()));
        }
        let mut retry = Retry::new(
            self.cfg.retries,
            self.cfg.backoff_initial,
            self.cfg.backoff_max,
        );
        while retry.next().await {
            if !self.with_breaker(service, |b| b.allow(Instant::now())) {
                return Err(ClientError::CircuitOpen {
                    service: service.to_owned(),
                });
            }
            // A refused handshake is final: no attempt can get through.
            let outcome = unless_refused(&self.gave_up, self.attempt(service, &body))
                .await
                .map_err(|reason| ClientError::Refused { reason })?;
            match outcome {
                Ok((partials, Answer::Final(body))) => {
                    self.with_breaker(service, |b| b.on_success());
                    return Ok(Reply { partials, body });
                }
                Ok((_, Answer::Error(code, reason))) => {
                    // 5xx: the service is unwell (retry, count against it); 4xx: the request is.
                    if !code.starts_with('5') {
                        self.with_breaker(service, |b| b.on_success());
                        return Err(ClientError::Status {
                            service: service.to_owned(),
                            code,
                            reason,
                        });
                    }
                    self.with_breaker(service, |b| b.on_failure(Instant::now()));
                    if retry.is_last() {
                        return Err(ClientError::Status {
                            service: service.to_owned(),
                            code,
                            reason,
                        });
                    }
                }
                Err(AttemptError::Timeout) => {
                    self.with_breaker(service, |b| b.on_failure(Instant::now()))
                }
                Err(AttemptError::Other(e)) => return Err(e),
            }
        }
        Err(ClientError::Timeout {
            service: service.to_owned(),
            attempts: retry.attempts(),
        })
    }

    fn with_breaker<T>(&self, service: &str, f: impl FnOnce(&mut CircuitBreaker) -> T) -> T {
        let mut breakers = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Looked up before inserting: no allocation per request once known.
        if let Some(b) = breakers.get_mut(service) {
            return f(b);
        }
        let b = breakers.entry(service.to_owned()).or_insert_with(|| {
            CircuitBreaker::new(self.cfg.breaker_threshold, self.cfg.breaker_cooldown)
        });
        f(b)
    }

    async fn attempt(
        &self,
        service: &str,
        body: &[Bytes],
    ) -> Result<(Vec<Vec<Bytes>>, Answer), AttemptError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= self.cfg.in_flight_max {
                return Err(AttemptError::Other(ClientError::Busy(
                    self.cfg.in_flight_max,
                )));
            }
            pending.insert(
                id,
                Pending {
                    partials: Vec::new(),
                    tx: Some(tx),
                },
            );
        }
        let mut frames = vec![
            Bytes::from_static(ZMDPC1),
            Bytes::from_static(&[cmd::C2_REQUEST]),
            Bytes::copy_from_slice(&id.to_be_bytes()),
            Bytes::from(service.to_owned()),
        ];
        frames.extend_from_slice(body);
        // The common case queues at once; only a full outbox waits, within the attempt's deadline.
        let closed = || Err(zmesh::Error::Closed);
        let sent = match self.outbox.try_send(frames) {
            Ok(()) => Ok(Ok(())),
            Err(mpsc::error::TrySendError::Full(f)) => {
                let send = self.outbox.send(f);
                tokio::time::timeout(self.cfg.attempt_timeout, send)
                    .await
                    .map(|r| r.or_else(|_| closed()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(closed()),
        };
        let result = match sent {
            Ok(Ok(())) => match tokio::time::timeout(self.cfg.attempt_timeout, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                _ => Err(AttemptError::Timeout),
            },
            Ok(Err(e)) => Err(AttemptError::Other(e.into())),
            Err(_) => Err(AttemptError::Timeout),
        };
        // A reply arriving after this is dropped: no request is answered twice.
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        result
    }
}

enum AttemptError {
    Timeout,
    Other(ClientError),
}

/// Send the requests waiting in the outbox: one alone, several as one BATCH.
async fn write_requests(sock: Socket, mut requests: mpsc::Receiver<Vec<Bytes>>) {
    let mut waiting = Vec::new();
    while requests.recv_many(&mut waiting, BATCH_ITEMS_MAX).await > 0 {
        for frames in batch::pack(std::mem::take(&mut waiting)) {
            if let Err(e) = sock.send(Message::from_frames(frames)).await {
                // Requests then time out and are retried by their callers.
                tracing::warn!(error = %e, "client send failed");
            }
        }
    }
}

async fn read_replies(sock: Socket, inner: Arc<Inner>) {
    while let Ok(m) = sock.recv().await {
        let frames = m.frames();
        if frames.first().is_none_or(|h| h.as_ref() != ZMDPC1) {
            continue;
        }
        if batch::is_batch(&frames) {
            for item in batch::split(&frames).unwrap_or_default() {
                take_reply(&inner, &item);
            }
        } else {
            take_reply(&inner, &frames);
        }
    }
}

/// One ZMDPC1 reply (header first) to the request waiting for it, if any.
fn take_reply(inner: &Inner, frames: &[Bytes]) {
    let [_header, code, rid, _service, body @ ..] = frames else {
        return;
    };
    let (Some(code), Ok(rid)) = (code.first(), <[u8; 8]>::try_from(rid.as_ref())) else {
        return;
    };
    let id = u64::from_be_bytes(rid);
    let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
    let Some(p) = pending.get_mut(&id) else {
        return;
    };
    let answer = match *code {
        cmd::C2_PARTIAL => {
            p.partials.push(body.to_vec());
            return;
        }
        cmd::C2_FINAL => Answer::Final(body.to_vec()),
        cmd::Z_ERROR => {
            let text = |i: usize| {
                body.get(i)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            };
            Answer::Error(text(0), text(1))
        }
        _ => return,
    };
    if let Some(tx) = p.tx.take() {
        let _ = tx.send((std::mem::take(&mut p.partials), answer));
    }
}
