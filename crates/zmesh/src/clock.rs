//! The one clock every core reads its time from, passed in so tests control it.
//!
//! A core is given two times, kept apart: a **monotonic** reading for every
//! timer (ack deadlines, heartbeats, peer timeouts, resends, TTL while the
//! process runs), which never steps, and the **wall clock** only for times
//! that are stored (a message's publish time), from which a TTL is derived
//! again after a restart. So an operator's clock stepped by NTP or a resumed
//! VM neither expires, redelivers nor drops anything.
//!
//! ```
//! use std::time::Duration;
//! use zmesh::clock::{Clock, ManualClock};
//! let clock = ManualClock::new();
//! let before = clock.now();
//! clock.step_wall_ms(-300_000); // the wall clock steps back 5 minutes
//! clock.advance(Duration::from_secs(1));
//! let after = clock.now();
//! assert_eq!(after.mono_ms - before.mono_ms, 1_000);
//! assert_eq!(before.wall_ms - after.wall_ms, 299_000);
//! ```

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A moment as a core sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds from an arbitrary origin: only differences
    /// between two readings of one clock mean anything. Never goes back.
    pub mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch, as the machine says:
    /// may step either way. Only for times that are stored.
    pub wall_ms: u64,
}

/// Where the cores get their time.
pub trait Clock: Send + Sync + Debug {
    /// The time now.
    fn now(&self) -> Now;

    /// The monotonic reading as an [`Instant`], for a core that measures
    /// finer than milliseconds (request latencies): it moves exactly as
    /// [`Now::mono_ms`] does. Only for arithmetic between readings — a
    /// manual clock's instants are not the machine's, so never sleep until one.
    fn instant(&self) -> Instant;
}

/// The machine's clocks: `Instant` for the monotonic reading, `SystemTime`
/// for the wall clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    /// The monotonic reading at `origin`: the wall clock then, so readings
    /// are far from zero and a stored age can be taken off one safely.
    origin_mono_ms: u64,
}

impl SystemClock {
    /// A clock whose monotonic readings start at the wall clock's now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            origin_mono_ms: wall_ms(),
        }
    }

    /// A shared system clock, as the stores and drivers take it.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        let elapsed_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Now {
            mono_ms: self.origin_mono_ms.saturating_add(elapsed_ms),
            wall_ms: wall_ms(),
        }
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A clock that moves only when told: for tests and simulations. Clones
/// share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Now>>,
    /// The instant [`Clock::instant`] gives at `anchor_mono_ms`.
    anchor: Instant,
    anchor_mono_ms: u64,
}

impl ManualClock {
    /// Starts at the machine's wall clock (both readings), so stored stamps
    /// look like real ones.
    pub fn new() -> Self {
        let wall = wall_ms();
        Self::starting_at(Now {
            mono_ms: wall,
            wall_ms: wall,
        })
    }

    /// Starts at `now`.
    pub fn starting_at(now: Now) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
            anchor: Instant::now(),
            anchor_mono_ms: now.mono_ms,
        }
    }

    /// Time passes: both readings move by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut now = self.lock();
        now.mono_ms = now.mono_ms.saturating_add(ms);
        now.wall_ms = now.wall_ms.saturating_add(ms);
    }

    /// The wall clock steps by `delta_ms` (either way); the monotonic reading
    /// does not move.
    pub fn step_wall_ms(&self, delta_ms: i64) {
        let mut now = self.lock();
        now.wall_ms = now.wall_ms.saturating_add_signed(delta_ms);
    }

    /// As a shared clock for a store or driver; this handle still steers it.
    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Now> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        *self.lock()
    }

    fn instant(&self) -> Instant {
        let since_anchor_ms = self.lock().mono_ms.saturating_sub(self.anchor_mono_ms);
        self.anchor + Duration::from_millis(since_anchor_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_never_goes_back_and_starts_far_from_zero() {
        let clock = SystemClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b.mono_ms >= a.mono_ms);
        // Far from zero: an age of years can be taken off a reading.
        assert!(a.mono_ms > 365 * 24 * 3_600_000);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_share_it() {
        let clock = ManualClock::starting_at(Now {
            mono_ms: 1_000,
            wall_ms: 5_000,
        });
        let other = clock.clone();
        other.advance(Duration::from_millis(250));
        other.step_wall_ms(-4_000);
        assert_eq!(
            clock.now(),
            Now {
                mono_ms: 1_250,
                wall_ms: 1_250
            }
        );
        let at = clock.instant();
        other.advance(Duration::from_millis(40));
        other.step_wall_ms(600_000);
        assert_eq!(
            clock.instant() - at,
            Duration::from_millis(40),
            "moves as mono_ms does"
        );
        other.step_wall_ms(i64::MIN);
        assert_eq!(clock.now().wall_ms, 0, "saturates, never wraps");
    }
}
