//! Journal compaction: when the journal is mostly dead records, each batch
//! moves a bounded number of live messages out of its oldest segment
//! (`core/compact.rs` decides which), pausing after a failed move.

use std::time::Duration;

use super::super::core::CompactLimits;
use super::{QueueStore, Sends};

/// Messages one batch may move for compaction: the pause it adds to a batch
/// stays small, and it still outpaces the traffic that makes dead records.
const COMPACT_MOVES_MAX: usize = 1024;

/// Body bytes one batch may move for compaction.
const COMPACT_BYTES_MAX: u64 = 4 << 20;

/// After a move fails (a full disk, most likely), compaction rests this long
/// at first, doubling up to `COMPACT_BACKOFF_MAX`: it needs free space to free
/// space, and must not retry on every batch meanwhile.
const COMPACT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const COMPACT_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl QueueStore {
    /// Compact when the journal is mostly dead records: move live messages
    /// out of its oldest segment (bounded per batch). True when it wrote.
    pub(super) fn compact(&mut self, sends: &mut Sends) -> bool {
        // In a cluster the journal holds no messages to move.
        if self.draining || self.replicated.is_some() {
            return false;
        }
        let failures = self.core.move_failures();
        if failures > self.compact_failures_seen {
            self.compact_failures_seen = failures;
            self.compact_backoff =
                (self.compact_backoff * 2).clamp(COMPACT_BACKOFF_INITIAL, COMPACT_BACKOFF_MAX);
            self.compact_resume_mono_ms =
                Some(self.now().mono_ms + self.compact_backoff.as_millis() as u64);
            tracing::warn!(pause = ?self.compact_backoff, "journal compaction pauses after a failed move");
        }
        if self
            .compact_resume_mono_ms
            .is_some_and(|t| self.now().mono_ms < t)
        {
            return false;
        }
        let Some(oldest_end) = self.log().oldest_sealed_end() else {
            return false;
        };
        // Rewriting a journal that is mostly live would only copy it; with
        // half dead, each byte moved frees at least one more. (`live_bytes`
        // counts each message's largest record, so a journal that is all
        // live never passes.)
        let slack = 2 * self.segment_bytes_max;
        if self.log().bytes() <= 2 * self.core.live_bytes() + slack {
            return false;
        }
        let limits = CompactLimits {
            moves_max: COMPACT_MOVES_MAX,
            bytes_max: COMPACT_BYTES_MAX,
            record_bytes_max: self.record_bytes_max,
        };
        let actions = self.core.compact(self.now(), oldest_end, limits);
        if actions.is_empty() {
            return false;
        }
        self.carry_out(actions, sends);
        true
    }
}
