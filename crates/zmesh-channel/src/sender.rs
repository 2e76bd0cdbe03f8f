//! The sending half, sans-IO: which sequence numbers to transmit, when to go
//! back and resend, when to ping, what the outbox may forget.
//!
//! ```text
//!  outbox:  [ committed ... received ... next ... end )
//!            └ forgettable  └ resend from here on timeout
//!  transmit [next, min(end, received + window, received + window_max))
//! ```
//! Go-back-N: the receiver accepts only the next expected message, so after
//! `rto_ms` without progress the sender starts again at `received`. Its timers
//! run on the monotonic reading of the [`Now`] it is given.

use zmesh::clock::Now;

/// Sender settings.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Messages in flight past the receiver's `received` at most.
    pub window_max: u64,
    /// Resend from `received` after this long without progress.
    pub rto_ms: u64,
    /// Ping when nothing was heard for this long.
    pub ping_ms: u64,
    /// The link is down when nothing was heard for this long.
    pub dead_ms: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            window_max: 1024,
            rto_ms: 500,
            ping_ms: 1000,
            dead_ms: 5000,
        }
    }
}

/// The sender's state machine.
#[derive(Debug)]
pub struct SenderCore {
    config: SenderConfig,
    committed: u64,
    received: u64,
    next: u64,
    end: u64,
    window: u64,
    /// Whether the receiver's state is known (an ACK came since start).
    synced: bool,
    last_heard_ms: Option<u64>,
    last_progress_ms: u64,
    last_ping_ms: u64,
    /// Go-back-N rounds, for metrics and tests.
    pub resends: u64,
}

impl SenderCore {
    /// A sender whose outbox holds offsets `first..end`.
    pub fn new(config: SenderConfig, first: u64, end: u64, now: Now) -> SenderCore {
        SenderCore {
            committed: first,
            received: first,
            next: first,
            end,
            window: config.window_max,
            config,
            synced: false,
            last_heard_ms: None,
            last_progress_ms: now.mono_ms,
            last_ping_ms: 0,
            resends: 0,
        }
    }

    /// Messages appended to the outbox: it now ends at `end`.
    pub fn appended(&mut self, end: u64) {
        self.end = end;
    }

    /// An ACK arrived. ACKs come in order over one connection, so each says
    /// where the receiver is now — also backwards, when it restarted and lost
    /// what it had received but not yet processed.
    pub fn on_ack(&mut self, now: Now, committed: u64, received: u64, window: u64) {
        self.last_heard_ms = Some(now.mono_ms);
        // Below the outbox's start the sender has nothing left to send: those
        // were processed by the receiver before (its state is older than ours).
        let received = received.clamp(self.committed, self.end);
        if received > self.received {
            self.last_progress_ms = now.mono_ms;
        }
        if !self.synced || received < self.received {
            self.next = received;
        }
        self.synced = true;
        self.received = received;
        self.next = self.next.max(self.received);
        self.committed = self.committed.max(committed.min(received));
        self.window = window.min(self.config.window_max);
    }

    /// The send queue is full: `seq` and after were not sent after all.
    pub fn rewind(&mut self, seq: u64) {
        self.next = self.next.min(seq.max(self.received));
    }

    /// The range of sequence numbers to send now (possibly empty); the caller
    /// sends them and so moves `next` to the range's end.
    pub fn transmit(&mut self, now: Now) -> std::ops::Range<u64> {
        if !self.synced {
            return self.next..self.next;
        }
        let limit = self.end.min(self.received + self.window);
        let range = self.next..limit.max(self.next);
        if !range.is_empty() && self.next == self.received {
            // Nothing was in flight: the resend timer starts now, not at the
            // last progress (which may be long ago after an idle spell).
            self.last_progress_ms = now.mono_ms;
        }
        self.next = range.end;
        range
    }

    /// Timers: go back after `rto_ms` without progress; ping when quiet.
    /// Returns true when a PING (or HELLO before the first ACK) is due.
    pub fn tick(&mut self, now: Now) -> bool {
        if self.next > self.received && now.mono_ms >= self.last_progress_ms + self.config.rto_ms {
            self.next = self.received;
            self.last_progress_ms = now.mono_ms;
            self.resends += 1;
        }
        let quiet = self
            .last_heard_ms
            .is_none_or(|h| now.mono_ms >= h + self.config.ping_ms);
        if quiet && now.mono_ms >= self.last_ping_ms + self.config.ping_ms.min(self.config.rto_ms) {
            self.last_ping_ms = now.mono_ms;
            return true;
        }
        false
    }

    /// Everything below this is processed: the outbox may drop it.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Messages written but not yet processed by the receiver.
    pub fn pending(&self) -> u64 {
        self.end - self.committed
    }

    /// Whether the receiver's state is known.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Whether the receiver was heard from recently.
    pub fn link_up(&self, now: Now) -> bool {
        self.last_heard_ms
            .is_some_and(|h| now.mono_ms < h + self.config.dead_ms)
    }
}
