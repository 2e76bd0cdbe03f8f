//! [`SocketOptions`]: every connection setting, with defaults chosen to be safe.
//!
//! | setting | default | why |
//! |---|---|---|
//! | heartbeat interval / timeout / TTL | 1 s / 5 s / 5 s | a peer that vanished without a FIN (power loss, SIGSTOP, a cut cable) is noticed within 5 s; five missed PINGs before giving up avoids flapping on a busy host; the TTL tells libzmq peers to drop us as fast |
//! | reconnect | exponential 100 ms → 5 s, ±10 % jitter | fast first retry, no storm when a thousand clients lose one server |
//! | linger | 1 s | `close()` flushes what is queued but never hangs an exit (libzmq waits forever by default, the engine drops at once) |
//! | send / receive HWM | 1000 messages each | memory stays bounded behind a slow peer |
//! | handshake timeout | 5 s | a peer that connects and says nothing cannot hold a slot |
//! | pending handshakes | 128 | bounded pre-authentication state per socket |
//! | max message size | 16 MiB | a peer cannot make us allocate without bound |

use std::time::Duration;

use bytes::Bytes;

use crate::error::Error;

/// ZMTP heartbeat settings (PING/PONG, RFC 37).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often we PING an otherwise quiet peer.
    pub interval: Duration,
    /// Close the connection when nothing at all arrived for this long.
    pub timeout: Duration,
    /// Time-to-live announced in our PINGs: how long the peer should wait for us.
    pub ttl: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(5),
        }
    }
}

/// How a connecting socket retries after a lost or refused connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconnect {
    /// Never retry.
    Disabled,
    /// Double the wait after each failed attempt, from `initial` up to `max`,
    /// each wait jittered by ±10 % so that peers do not retry in lockstep.
    Exponential {
        /// First wait.
        initial: Duration,
        /// Cap on the wait.
        max: Duration,
    },
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Settings for one socket. Build with [`SocketOptions::default`] and the
/// setters, which validate when the socket is created.
///
/// ```
/// use std::time::Duration;
/// let opts = zmesh::SocketOptions::default()
///     .heartbeat_interval(Duration::from_millis(200))
///     .heartbeat_timeout(Duration::from_secs(1))
///     .send_hwm(10_000)
///     .max_message_size(Some(1 << 20));
/// assert!(opts.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// ZMTP heartbeats; `None` turns them off (not recommended).
    pub heartbeat: Option<Heartbeat>,
    /// Reconnect policy for `connect`ed endpoints.
    pub reconnect: Reconnect,
    /// How long `close` waits for queued messages to go out.
    pub linger: Duration,
    /// Outgoing queue limit, in messages, per peer pipe.
    pub send_hwm: u32,
    /// Incoming queue limit, in messages.
    pub recv_hwm: u32,
    /// Deadline for one connection's handshake (ZMTP greeting to READY).
    pub handshake_timeout: Duration,
    /// Limit on connections still handshaking at once.
    pub max_pending_handshakes: usize,
    /// Largest accepted incoming message; a peer sending more is disconnected.
    pub max_message_size: Option<usize>,
    /// Routing identity announced to ROUTER peers; `None` lets the peer pick one.
    pub identity: Option<Bytes>,
    /// Keep only the newest message in each queue (for state updates).
    pub conflate: bool,
    /// Deadline for a `send` that waits at the high-water mark; `None` waits
    /// as long as ZeroMQ would (until the peer drains or the socket closes).
    pub send_timeout: Option<Duration>,
    /// ROUTER only: a send to a peer whose pipe is full hands the message back
    /// ([`crate::TrySendError::Full`]) and a send to a gone peer fails with
    /// [`Error::Unroutable`], instead of both being dropped silently. With it on,
    /// use [`crate::Socket::try_send`]: an awaited `send` waits behind the one
    /// full peer.
    pub router_mandatory: bool,
    /// Human-readable name shown in the connection registry.
    pub name: Option<String>,
    /// Encryption and authentication (NULL, CURVE, PLAIN).
    pub security: crate::security::Security,
    /// Sign every outgoing message (an extra last frame; see [`crate::security::signing`]).
    pub signer: Option<std::sync::Arc<crate::security::Signer>>,
    /// Verify every incoming message; failures are counted and never delivered.
    pub verifier: Option<std::sync::Arc<std::sync::Mutex<crate::security::Verifier>>>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            heartbeat: Some(Heartbeat::default()),
            reconnect: Reconnect::default(),
            linger: Duration::from_secs(1),
            send_hwm: 1000,
            recv_hwm: 1000,
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 128,
            max_message_size: Some(16 * 1024 * 1024),
            identity: None,
            conflate: false,
            send_timeout: None,
            router_mandatory: false,
            name: None,
            security: crate::security::Security::Null,
            signer: None,
            verifier: None,
        }
    }
}

impl SocketOptions {
    /// ROUTER: report full and gone peers instead of dropping (see the field).
    pub fn router_mandatory(mut self, on: bool) -> Self {
        self.router_mandatory = on;
        self
    }

    /// Set the heartbeat interval (keeps the other heartbeat settings, turning heartbeats on).
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat
            .get_or_insert_with(Heartbeat::default)
            .interval = d;
        self
    }

    /// Set the heartbeat timeout and TTL (turning heartbeats on).
    pub fn heartbeat_timeout(mut self, d: Duration) -> Self {
        let hb = self.heartbeat.get_or_insert_with(Heartbeat::default);
        hb.timeout = d;
        hb.ttl = d;
        self
    }

    /// Turn ZMTP heartbeats off.
    pub fn no_heartbeat(mut self) -> Self {
        self.heartbeat = None;
        self
    }

    /// Set the reconnect policy.
    pub fn reconnect(mut self, r: Reconnect) -> Self {
        self.reconnect = r;
        self
    }

    /// Set the exponential backoff bounds.
    pub fn backoff(self, initial: Duration, max: Duration) -> Self {
        self.reconnect(Reconnect::Exponential { initial, max })
    }

    /// Set the linger on close.
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Set the outgoing high-water mark (messages).
    pub fn send_hwm(mut self, n: u32) -> Self {
        self.send_hwm = n;
        self
    }

    /// Set the incoming high-water mark (messages).
    pub fn recv_hwm(mut self, n: u32) -> Self {
        self.recv_hwm = n;
        self
    }

    /// Set the handshake deadline.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// Set the largest accepted incoming message; `None` for no limit.
    pub fn max_message_size(mut self, n: Option<usize>) -> Self {
        self.max_message_size = n;
        self
    }

    /// Set the routing identity.
    pub fn identity(mut self, id: impl Into<Bytes>) -> Self {
        self.identity = Some(id.into());
        self
    }

    /// Set the deadline for a send that waits at the high-water mark.
    pub fn send_timeout(mut self, d: Option<Duration>) -> Self {
        self.send_timeout = d;
        self
    }

    /// Keep only the newest message per queue.
    pub fn conflate(mut self, on: bool) -> Self {
        self.conflate = on;
        self
    }

    /// Name the socket in the connection registry.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Set how connections are secured.
    pub fn security(mut self, s: crate::security::Security) -> Self {
        self.security = s;
        self
    }

    /// Sign outgoing messages.
    pub fn sign_with(mut self, signer: crate::security::Signer) -> Self {
        self.signer = Some(std::sync::Arc::new(signer));
        self
    }

    /// Verify incoming messages.
    pub fn verify_with(mut self, verifier: crate::security::Verifier) -> Self {
        self.verifier = Some(std::sync::Arc::new(std::sync::Mutex::new(verifier)));
        self
    }

    /// Check that the settings make sense together.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |s: &str| Err(Error::InvalidOption(s.to_owned()));
        if let Some(hb) = &self.heartbeat {
            if hb.interval.is_zero() {
                return bad("heartbeat interval must be above zero");
            }
            if hb.timeout < hb.interval {
                return bad("heartbeat timeout must be at least the heartbeat interval");
            }
        }
        if let Reconnect::Exponential { initial, max } = self.reconnect
            && (initial.is_zero() || max < initial)
        {
            return bad("reconnect backoff needs 0 < initial <= max");
        }
        if self.send_hwm == 0 || self.recv_hwm == 0 {
            return bad("high-water marks must be at least 1 (0 would mean unbounded)");
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake timeout must be above zero");
        }
        if self.max_pending_handshakes == 0 {
            return bad("max_pending_handshakes must be at least 1");
        }
        if self.max_message_size == Some(0) {
            return bad("max_message_size must be above zero");
        }
        if matches!(&self.identity, Some(id) if id.is_empty() || id.len() > 255 || id[0] == 0) {
            return bad("identity must be 1..=255 bytes and not start with a zero byte");
        }
        Ok(())
    }
}
