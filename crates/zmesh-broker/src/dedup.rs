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
    ids: HashMap<Bytes, Dedup>,
    /// Oldest first, for forgetting past the window.
    order: VecDeque<Bytes>,
}

impl DedupWindow {
    /// What became of `id`, if it is remembered.
    pub fn get(&self, id: &[u8]) -> Option<Dedup> {
        self.ids.get(id).copied()
    }

    /// Remember `id` as `state` (or update it), forgetting the oldest ids
    /// past `window`. Empty ids and a zero window remember nothing.
    pub fn remember(&mut self, id: Bytes, state: Dedup, window: usize) {
        if id.is_empty() || window == 0 {
            return;
        }
        if self.ids.insert(id.clone(), state).is_none() {
            self.order.push_back(id);
            while self.order.len() > window {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    /// Forget `id` (its message was refused, so a repeat may try again).
    pub fn forget(&mut self, id: &[u8]) {
        if self.ids.remove(id).is_some() {
            self.order.retain(|m| m != id);
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
