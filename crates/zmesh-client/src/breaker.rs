//! A circuit breaker per service, sans-IO.
//!
//! ```text
//!   Closed ──(threshold consecutive failures)──► Open ──(cooldown over)──► HalfOpen
//!     ▲                                           ▲                          │
//!     └──────────────(trial succeeds)─────────────┼──────────────────────────┤
//!                                                 └─────(trial fails)────────┘
//! ```
//! While open, calls fail at once instead of piling onto a service that is down;
//! half-open lets one trial call through.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail fast until the cooldown ends.
    Open,
    /// One trial call is allowed.
    HalfOpen,
}

/// Counters of a breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BreakerCounters {
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls refused because the breaker was open.
    pub rejected: u64,
    /// Times it opened.
    pub opened: u64,
}

/// The breaker.
///
/// ```
/// use std::time::{Duration, Instant};
/// use zmesh_client::breaker::{CircuitBreaker, BreakerState};
/// let t = Instant::now();
/// let mut b = CircuitBreaker::new(2, Duration::from_secs(5));
/// b.on_failure(t);
/// b.on_failure(t);
/// assert_eq!(b.state(), BreakerState::Open);
/// assert!(!b.allow(t));
/// assert!(b.allow(t + Duration::from_secs(5)), "half-open trial");
/// b.on_success();
/// assert_eq!(b.state(), BreakerState::Closed);
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    state: BreakerState,
    consecutive_failures: u32,
    threshold: u32,
    cooldown: Duration,
    open_until: Option<Instant>,
    trial_in_flight: bool,
    counters: BreakerCounters,
}

impl CircuitBreaker {
    /// Open after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            threshold: threshold.max(1),
            cooldown,
            open_until: None,
            trial_in_flight: false,
            counters: BreakerCounters::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Counters.
    pub fn counters(&self) -> BreakerCounters {
        self.counters
    }

    /// May a call go out at `now`?
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open if self.open_until.is_some_and(|t| now >= t) => {
                self.state = BreakerState::HalfOpen;
                self.trial_in_flight = true;
                true
            }
            BreakerState::HalfOpen if !self.trial_in_flight => {
                self.trial_in_flight = true;
                true
            }
            _ => {
                self.counters.rejected += 1;
                false
            }
        }
    }

    /// The call succeeded.
    pub fn on_success(&mut self) {
        self.counters.successes += 1;
        self.consecutive_failures = 0;
        self.trial_in_flight = false;
        self.state = BreakerState::Closed;
        self.open_until = None;
    }

    /// The call failed at `now`.
    pub fn on_failure(&mut self, now: Instant) {
        self.counters.failures += 1;
        self.consecutive_failures += 1;
        self.trial_in_flight = false;
        if self.state == BreakerState::HalfOpen || self.consecutive_failures >= self.threshold {
            if self.state != BreakerState::Open {
                self.counters.opened += 1;
            }
            self.state = BreakerState::Open;
            self.open_until = Some(now + self.cooldown);
        }
    }
}
