//! The whole-state check of the stream core, for tests, simulations and fuzz targets.

use super::StreamCore;

impl StreamCore {
    /// Every rule of the core's state, checked in full; panics on the first
    /// broken one. O(n) in what it holds: for tests, simulations and fuzz
    /// targets, not for a running broker.
    pub fn check_invariants(&self) {
        self.subs.check();
        for (id, s) in &self.streams {
            assert_eq!(
                self.names.get(&s.spec.name),
                Some(id),
                "stream {id} by name"
            );
            assert!(
                s.first_seq <= s.visible_end,
                "stream {id}: first past the end"
            );
        }
        assert_eq!(self.names.len(), self.streams.len());
    }
}
