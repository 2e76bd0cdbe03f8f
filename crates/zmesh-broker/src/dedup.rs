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
#[derive(Debug)]
pub struct DedupWindow {
    /// The seeds of the two keys: random, or those of the window a
    /// [`DedupSnapshot`] was taken of (its hashes are under them).
    seeds: (u64, u64),
    keys: (foldhash::fast::FixedState, foldhash::fast::FixedState),
    /// Id hash -> (state, the sequence number of its entry in `order`).
    ids: HashMap<u128, (Dedup, u64)>,
    /// Oldest first, for forgetting past the window. An entry whose
    /// sequence number no longer matches its id's (forgotten, or forgotten
    /// and remembered again) is stale and skipped, so forgetting is O(1).
    order: VecDeque<(u128, u64)>,
    next_seq: u64,
}

impl Default for DedupWindow {
    fn default() -> Self {
        use std::hash::BuildHasher;
        // Random per window: foldhash's per-process randomness, drawn twice.
        let random = || foldhash::fast::RandomState::default().hash_one(0u64);
        DedupWindow::with_seeds((random(), random()))
    }
}

/// The ids a window holds stored, oldest first, as hashes under its seeds:
/// what a cluster's shard snapshot keeps, so that every node restored from
/// it takes the same repeats for repeats.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupSnapshot {
    pub seeds: (u64, u64),
    /// (hash high, hash low, offset stored at).
    pub stored: Vec<(u64, u64, u64)>,
}

impl DedupWindow {
    fn with_seeds(seeds: (u64, u64)) -> DedupWindow {
        DedupWindow {
            seeds,
            keys: (
                foldhash::fast::FixedState::with_seed(seeds.0),
                foldhash::fast::FixedState::with_seed(seeds.1),
            ),
            ids: HashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// The ids stored (those still being stored are not: their fate is not
    /// known yet), oldest first.
    pub fn snapshot(&self) -> DedupSnapshot {
        let stored = self
            .order
            .iter()
            .filter_map(|(key, seq)| match self.ids.get(key) {
                Some((Dedup::Stored(offset), s)) if s == seq => {
                    Some(((key >> 64) as u64, *key as u64, *offset))
                }
                _ => None,
            })
            .collect();
        DedupSnapshot {
            seeds: self.seeds,
            stored,
        }
    }

    /// A window holding what `snapshot` does, the newest `window` of it.
    pub fn restored(snapshot: &DedupSnapshot, window: usize) -> DedupWindow {
        let mut w = DedupWindow::with_seeds(snapshot.seeds);
        let skip = snapshot.stored.len().saturating_sub(window);
        for &(high, low, offset) in &snapshot.stored[skip..] {
            let key = (u128::from(high) << 64) | u128::from(low);
            let seq = w.next_seq;
            w.next_seq += 1;
            if w.ids.insert(key, (Dedup::Stored(offset), seq)).is_none() {
                w.order.push_back((key, seq));
            }
        }
        w
    }

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

    #[test]
    fn a_snapshot_restores_the_stored_ids_in_order() {
        let mut w = DedupWindow::default();
        for i in 0..5u64 {
            w.remember(Bytes::from(format!("id{i}")), Dedup::Stored(i), 4);
        }
        w.remember(Bytes::from_static(b"new"), Dedup::Storing(7), 4);
        w.forget(b"id3");
        let snapshot = w.snapshot();
        assert_eq!(snapshot.stored.len(), 2, "id1 went past the window");
        let mut r = DedupWindow::restored(&snapshot, 4);
        assert_eq!(r.get(b"id2"), Some(Dedup::Stored(2)));
        assert_eq!(r.get(b"id4"), Some(Dedup::Stored(4)));
        assert_eq!(r.get(b"id3"), None);
        assert_eq!(r.get(b"new"), None, "not stored yet: not kept");
        // The oldest goes first, as in the window it was taken of.
        r.remember(Bytes::from_static(b"a"), Dedup::Stored(10), 2);
        assert_eq!(r.get(b"id2"), None);
        assert_eq!(r.get(b"id4"), Some(Dedup::Stored(4)));
        // A smaller window keeps the newest.
        let small = DedupWindow::restored(&snapshot, 1);
        assert_eq!(
            (small.get(b"id2"), small.get(b"id4")),
            (None, Some(Dedup::Stored(4)))
        );
        // Two windows hash apart, so a restored one must keep the seeds.
        assert_ne!(DedupWindow::default().seeds, w.seeds);
    }
}
