//! The receiving half, sans-IO: accept the next expected message only,
//! drop duplicates and anything out of order, acknowledge cumulatively.

/// What to do with an arriving DATA.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next in order: hand it to the application.
    Deliver,
    /// Seen before, or ahead of a missing one: drop it, but acknowledge (the
    /// ACK tells the sender where to resume).
    Drop,
}

/// One channel's receiving state.
#[derive(Debug, Clone)]
pub struct ReceiverCore {
    /// Everything below this is processed and persisted.
    pub committed: u64,
    /// Everything below this has been accepted.
    pub received: u64,
    /// Messages accepted past `committed` at most (the application's buffer).
    pub window: u64,
    /// Duplicates and out-of-order messages dropped.
    pub dropped: u64,
}

impl ReceiverCore {
    /// A receiver that has processed everything below `committed`.
    pub fn new(committed: u64, window: u64) -> ReceiverCore {
        ReceiverCore {
            committed,
            received: committed,
            window,
            dropped: 0,
        }
    }

    /// A DATA with `seq` arrived.
    pub fn on_data(&mut self, seq: u64) -> Verdict {
        if seq == self.received && self.received < self.committed + self.window {
            self.received += 1;
            Verdict::Deliver
        } else {
            self.dropped += 1;
            Verdict::Drop
        }
    }

    /// The application processed everything below `seq`.
    pub fn commit(&mut self, seq: u64) {
        self.committed = self.committed.max(seq.min(self.received));
    }

    /// How many more the sender may send past `received`.
    pub fn window_left(&self) -> u64 {
        (self.committed + self.window).saturating_sub(self.received)
    }
}
