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
/// The newest message ids, at most a window of them. An id is kept as a
/// 128-bit hash under two random per-process keys, not as bytes: no heap
/// allocation per id (a window of 100 k ids would otherwise fragment the
/// heap the broker's hot path allocates from), and a fixed 16 bytes however
/// long the id. Two different ids are taken for one with a chance of about
/// one in 2^128 per pair; the keys change with every start, and the window
/// is rebuilt from the journal then.
#[derive(Debug, Default)]
pub struct DedupWindow {
    keys: (foldhash::fast::RandomState, foldhash::fast::RandomState),
    /// Id hash -> (state, the sequence number of its entry in `order`).
    ids: HashMap<u128, (Dedup, u64)>,
    /// Oldest first, for forgetting past the window. An entry whose
    /// sequence number no longer matches its id's (forgotten, or forgotten
    /// and remembered again) is stale and skipped, so forgetting is O(1).
    order: VecDeque<(u128, u64)>,
    next_seq: u64,
}

impl DedupWindow {
    fn key(&self, id: &[u8]) -> u128 {
        use std::hash::BuildHasher;
        (u128::from(self.keys.0.hash_one(id)) << 64) | u128::from(self.keys.1.hash_one(id))
    }

    /// What became of `id`, if it is remembered.
    pub fn get(&self, id: &[u8]) -> Option<Dedup> {
        if id.is_empty() {
            return None;
        }
        self.ids.get(&self.key(id)).map(|(state, _)| *state)
    }

    /// Remember `id` as `state` (or update it), forgetting the oldest ids
    /// past `window`. Empty ids and a zero window remember nothing.
    pub fn remember(&mut self, id: Bytes, state: Dedup, window: usize) {
        if id.is_empty() || window == 0 {
            return;
        }
        let key = self.key(&id);
        if let Some(entry) = self.ids.get_mut(&key) {
            entry.0 = state;
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ids.insert(key, (state, seq));
        self.order.push_back((key, seq));
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
                .retain(|(k, seq)| ids.get(k).is_some_and(|(_, s)| s == seq));
        }
    }

    /// Change the state of `id` only if it is still remembered.
    pub fn update(&mut self, id: &[u8], state: Dedup) {
        if id.is_empty() {
            return;
        }
        let key = self.key(id);
        if let Some(entry) = self.ids.get_mut(&key) {
            entry.0 = state;
        }
    }

    /// Forget `id` (its message was refused, so a repeat may try again).
    pub fn forget(&mut self, id: &[u8]) {
        if !id.is_empty() {
            let key = self.key(id);
            self.ids.remove(&key);
        }
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
