//! Subscriptions by key, and indexed by stream and by peer, so serving one
//! stream or one peer costs its own subscriptions, not every one the broker has.

use bytes::Bytes;
use foldhash::{HashMap, HashSet};

use super::{Sub, SubKey};

#[derive(Default)]
pub(super) struct Subs {
    by_key: HashMap<SubKey, Sub>,
    /// Keys of each stream's subscriptions.
    by_stream: HashMap<u32, HashSet<SubKey>>,
    /// Subscription names of each peer.
    by_peer: HashMap<Bytes, HashSet<Bytes>>,
    /// Subscriptions whose last fetch could not be read, to be pumped again
    /// at the next heartbeat tick; a subset of the subscriptions.
    retries: HashSet<SubKey>,
}

impl Subs {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn contains_key(&self, key: &SubKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn get(&self, key: &SubKey) -> Option<&Sub> {
        self.by_key.get(key)
    }

    pub fn get_mut(&mut self, key: &SubKey) -> Option<&mut Sub> {
        self.by_key.get_mut(key)
    }

    /// Add `sub` under `key`, replacing (and unindexing) one of the same key.
    pub fn insert(&mut self, key: SubKey, sub: Sub) {
        self.remove(&key);
        self.by_stream
            .entry(sub.stream)
            .or_default()
            .insert(key.clone());
        self.by_peer
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone());
        self.by_key.insert(key, sub);
    }

    pub fn remove(&mut self, key: &SubKey) -> Option<Sub> {
        let sub = self.by_key.remove(key)?;
        self.retries.remove(key);
        if let Some(keys) = self.by_stream.get_mut(&sub.stream) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_stream.remove(&sub.stream);
            }
        }
        if let Some(names) = self.by_peer.get_mut(&key.0) {
            names.remove(&key.1);
            if names.is_empty() {
                self.by_peer.remove(&key.0);
            }
        }
        Some(sub)
    }

    /// Pump `key` again at the next heartbeat tick (its read failed).
    pub fn retry_later(&mut self, key: &SubKey) {
        if self.by_key.contains_key(key) {
            self.retries.insert(key.clone());
        }
    }

    /// The subscriptions to pump again, taken.
    pub fn take_retries(&mut self) -> HashSet<SubKey> {
        std::mem::take(&mut self.retries)
    }

    /// Keys of `stream`'s subscriptions.
    pub fn keys_of_stream(&self, stream: u32) -> Vec<SubKey> {
        self.by_stream
            .get(&stream)
            .map_or_else(Vec::new, |keys| keys.iter().cloned().collect())
    }

    /// Keys of `peer`'s subscriptions.
    pub fn keys_of_peer(&self, peer: &Bytes) -> Vec<SubKey> {
        self.by_peer.get(peer).map_or_else(Vec::new, |names| {
            names.iter().map(|n| (peer.clone(), n.clone())).collect()
        })
    }

    /// `stream`'s subscriptions.
    pub fn of_stream(&self, stream: u32) -> impl Iterator<Item = &Sub> {
        self.by_stream
            .get(&stream)
            .into_iter()
            .flatten()
            .filter_map(|k| self.by_key.get(k))
    }

    /// End every subscription of `stream`.
    pub fn remove_stream(&mut self, stream: u32) {
        for key in self.keys_of_stream(stream) {
            self.remove(&key);
        }
    }

    /// End every subscription of `peer`.
    pub fn remove_peer(&mut self, peer: &Bytes) {
        for key in self.keys_of_peer(peer) {
            self.remove(&key);
        }
    }

    /// The indexes hold exactly the subscriptions there are (O(n): for tests
    /// and simulations).
    pub fn check(&self) {
        let indexed: usize = self.by_stream.values().map(HashSet::len).sum();
        assert_eq!(indexed, self.by_key.len(), "by_stream");
        let indexed: usize = self.by_peer.values().map(HashSet::len).sum();
        assert_eq!(indexed, self.by_key.len(), "by_peer");
        assert!(
            self.retries.iter().all(|k| self.by_key.contains_key(k)),
            "a retry of no subscription"
        );
        for (key, sub) in &self.by_key {
            assert!(self.by_stream[&sub.stream].contains(key));
            assert!(self.by_peer[&key.0].contains(&key.1));
        }
    }
}
