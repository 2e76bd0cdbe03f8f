//! Producer message ids remembered for deduplication, shared by queues and
//! streams: the newest ids up to a window, each with what became of its
//! message. A repeat of an id still remembered is answered with the first
//! message's outcome instead of being stored again.

use std::collections::VecDeque;

use bytes::Bytes;
use foldhash::HashMap;

/// Where a message with a remembered id stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dedup {
    /// Being stored under this ticket: repeats wait for its outcome.
    Storing(u64),
    /// Stored at this offset (tag or sequence number).
    Stored(u64),
}

/// The newest message ids, at most a window of them.
///
/// ```
/// use bytes::Bytes;
/// use zmesh_broker::dedup::{Dedup, DedupWindow};
/// let mut w = DedupWindow::default();
/// for i in 0..3u64 {
///     w.remember(Bytes::from(format!("id{i}")), Dedup::Stored(i), 2);
/// }
/// assert_eq!(w.get(b"id0"), None); // the oldest went past the window
/// assert_eq!(w.get(b"id2"), Some(Dedup::Stored(2)));
/// ```
#[derive(Debug, Default)]
pub struct DedupWindow {
    /// Id -> (state, the sequence number of its entry in `order`).
    ids: HashMap<Bytes, (Dedup, u64)>,
    /// Oldest first, for forgetting past the window. An entry whose
    /// sequence number no longer matches its id's (forgotten, or forgotten
    /// and remembered again) is stale and skipped, so forgetting is O(1).
    order: VecDeque<(Bytes, u64)>,
    next_seq: u64,
}

impl DedupWindow {
    /// What became of `id`, if it is remembered.
    pub fn get(&self, id: &[u8]) -> Option<Dedup> {
        self.ids.get(id).map(|(state, _)| *state)
    }

    /// Remember `id` as `state` (or update it), forgetting the oldest ids
    /// past `window`. Empty ids and a zero window remember nothing. The id
    /// is copied, so a slice of a larger buffer (a whole record read back
    /// from the log) does not keep that buffer alive.
    pub fn remember(&mut self, id: Bytes, state: Dedup, window: usize) {
        if id.is_empty() || window == 0 {
            return;
        }
        if let Some(entry) = self.ids.get_mut(&id) {
            entry.0 = state;
            return;
        }
        let id = Bytes::copy_from_slice(&id);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ids.insert(id.clone(), (state, seq));
        self.order.push_back((id, seq));
        while self.ids.len() > window {
            let Some((old, old_seq)) = self.order.pop_front() else {
                break;
            };
            if self.ids.get(&old).is_some_and(|(_, s)| *s == old_seq) {
                self.ids.remove(&old);
            }
        }
        // Stale entries left by forget() go when they reach the front; keep
        // the queue from holding many more entries than live ids.
        if self.order.len() > 2 * window.max(self.ids.len()) {
            let ids = &self.ids;
            self.order
                .retain(|(id, seq)| ids.get(id).is_some_and(|(_, s)| s == seq));
        }
    }

    /// Change the state of `id` only if it is still remembered.
    pub fn update(&mut self, id: &[u8], state: Dedup) {
        if let Some(entry) = self.ids.get_mut(id) {
            entry.0 = state;
        }
    }

    /// Forget `id` (its message was refused, so a repeat may try again).
    pub fn forget(&mut self, id: &[u8]) {
        self.ids.remove(id);
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_is_cheap_and_a_forgotten_id_can_come_back() {
        let mut w = DedupWindow::default();
        for i in 0..4u64 {
            w.remember(Bytes::from(format!("id{i}")), Dedup::Stored(i), 3);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.get(b"id0"), None);
        w.forget(b"id2");
        assert_eq!(w.get(b"id2"), None);
        w.remember(Bytes::from_static(b"id2"), Dedup::Storing(9), 3);
        assert_eq!(w.get(b"id2"), Some(Dedup::Storing(9)));
        // The stale entry of the first id2 must not evict the new one.
        w.remember(Bytes::from_static(b"id4"), Dedup::Stored(4), 3);
        w.remember(Bytes::from_static(b"id5"), Dedup::Stored(5), 3);
        assert_eq!(w.get(b"id2"), Some(Dedup::Storing(9)));
        assert_eq!(w.get(b"id1"), None);
        assert_eq!(w.get(b"id3"), None);
        assert_eq!(w.len(), 3);
        w.update(b"id3", Dedup::Stored(1));
        assert_eq!(w.get(b"id3"), None, "update never adds");
    }
}
