//! How every client here retries, and what a failed request to the queues
//! or streams says. One mechanism, so the Majordomo, queue and stream clients
//! back off, stop on a refused handshake and report alike.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::util::jitter;

/// Why a request to the broker's queues or streams failed, and who is at
/// fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Environment: no reply in any attempt.
    #[error("no reply from the broker after {0} attempts")]
    Timeout(u32),
    /// The broker refused: `code` says why (400 bad request, 404 no queue,
    /// 409 other options, 429 queue full, 503 broker limit, 507 storage).
    #[error("broker refused ({code}): {reason}")]
    Refused {
        /// Error code.
        code: u16,
        /// The broker's reason.
        reason: String,
    },
    /// Configuration: the broker refused the handshake (a wrong CURVE key,
    /// a policy's denial). Final: the engine no longer dials it.
    #[error("the broker refused the connection: {reason}")]
    HandshakeRefused {
        /// What the engine was told.
        reason: String,
    },
    /// Caller: too many requests in flight on this client.
    #[error("too many requests in flight ({0})")]
    Busy(usize),
    /// The broker's reply made no sense.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The socket failed.
    #[error(transparent)]
    Socket(#[from] zmesh::Error),
}

impl RequestError {
    /// The broker's error code, if it refused.
    pub fn code(&self) -> Option<u16> {
        match self {
            RequestError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A bounded number of attempts with full-jitter exponential backoff
/// between them: no wait before the first, then a random wait up to
/// `backoff_initial`, doubling up to `backoff_max`.
#[derive(Debug)]
pub(crate) struct Retry {
    attempts: u32,
    made: u32,
    wait: Duration,
    wait_max: Duration,
}

impl Retry {
    /// `retries` attempts after the first.
    pub fn new(retries: u32, backoff_initial: Duration, backoff_max: Duration) -> Self {
        Self {
            attempts: retries.saturating_add(1),
            made: 0,
            wait: backoff_initial,
            wait_max: backoff_max,
        }
    }

    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the attempt begun last was the last one allowed.
    pub fn is_last(&self) -> bool {
        self.made >= self.attempts
    }

    /// Begin the next attempt, after its wait: `false` when none is left.
    pub async fn next(&mut self) -> bool {
        if self.is_last() {
            return false;
        }
        if self.made > 0 {
            tokio::time::sleep(jitter(self.wait)).await;
            self.wait = (self.wait * 2).min(self.wait_max);
        }
        self.made += 1;
        debug_assert!(self.made <= self.attempts);
        true
    }
}

/// Run `attempt` unless the engine gives up on the broker first (a refused
/// handshake, after which no attempt can get through): then `Err(reason)`.
pub(crate) async fn unless_refused<F: Future>(
    gave_up: &watch::Receiver<Option<String>>,
    attempt: F,
) -> Result<F::Output, String> {
    let mut gave_up = gave_up.clone();
    tokio::select! {
        out = attempt => Ok(out),
        Ok(why) = gave_up.wait_for(Option::is_some) => Err(why.clone().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_allows_exactly_its_attempts_with_growing_bounded_waits() {
        let mut retry = Retry::new(3, Duration::from_millis(100), Duration::from_millis(250));
        let start = tokio::time::Instant::now();
        let mut begun = Vec::new();
        while retry.next().await {
            begun.push(start.elapsed());
        }
        assert_eq!(begun.len(), 4);
        assert_eq!(retry.attempts(), 4);
        assert_eq!(begun[0], Duration::ZERO, "the first attempt does not wait");
        // Full jitter: each wait is at most 100, 200, then 250 (capped) ms.
        let waits: Vec<Duration> = begun.windows(2).map(|w| w[1] - w[0]).collect();
        for (wait, max) in waits.iter().zip([100, 200, 250]) {
            assert!(*wait <= Duration::from_millis(max), "{waits:?}");
        }
        assert!(!retry.next().await, "no attempt past the last");
    }

    #[tokio::test]
    async fn an_attempt_runs_to_its_end_while_the_handshake_stands() {
        let (_tx, rx) = watch::channel(None);
        assert_eq!(unless_refused(&rx, async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_refused_handshake_ends_the_attempt() {
        let (tx, rx) = watch::channel(None);
        let pending = unless_refused(&rx, std::future::pending::<()>());
        tx.send(Some("CURVE key not allowed".to_owned())).unwrap();
        assert_eq!(pending.await, Err("CURVE key not allowed".to_owned()));
    }
}
