//! Which connection each peer (ROUTER routing id) speaks on, so the driver can
//! close a peer's connection and tell the cores when it closed. Bounded by the
//! live connections: entries leave when their connection closes.

use std::collections::VecDeque;

use bytes::Bytes;
use foldhash::{HashMap, HashSet};

/// Closed connections remembered, for messages read after their close.
const CLOSED_REMEMBERED_MAX: usize = 4096;

/// Routing id ↔ connection id, for the live connections that sent something.
#[derive(Default)]
pub struct PeerConnections {
    by_peer: HashMap<Bytes, u64>,
    by_connection: HashMap<u64, Bytes>,
    /// The newest closes (a message and its connection's close travel apart,
    /// so a message may be read after the close was reported).
    closed: HashSet<u64>,
    closed_order: VecDeque<u64>,
}

impl PeerConnections {
    /// `peer` sent a message on `connection` (cheap when nothing changed).
    /// `false` when that connection has already closed: the message was its
    /// peer's last words, and the peer is gone once it is handled.
    pub fn seen(&mut self, peer: &Bytes, connection: u64) -> bool {
        if self.by_peer.get(peer) == Some(&connection) {
            return true;
        }
        if self.closed.contains(&connection) {
            return false;
        }
        // A routing id taken over by a new connection (a reconnect with a fixed
        // identity): the old connection no longer speaks for it.
        if let Some(old) = self.by_peer.insert(peer.clone(), connection) {
            self.by_connection.remove(&old);
        }
        if let Some(old_peer) = self.by_connection.insert(connection, peer.clone())
            && old_peer != *peer
        {
            self.by_peer.remove(&old_peer);
        }
        self.check();
        true
    }

    /// The connection closed: the peer it spoke for, if it still did.
    pub fn closed(&mut self, connection: u64) -> Option<Bytes> {
        if self.closed.insert(connection) {
            self.closed_order.push_back(connection);
            if self.closed_order.len() > CLOSED_REMEMBERED_MAX
                && let Some(oldest) = self.closed_order.pop_front()
            {
                self.closed.remove(&oldest);
            }
        }
        let peer = self.by_connection.remove(&connection)?;
        self.by_peer.remove(&peer);
        self.check();
        Some(peer)
    }

    /// Closes were missed: forget every connection not in `live`; returns
    /// the peers they spoke for.
    pub fn keep_only(&mut self, live: &[u64]) -> Vec<Bytes> {
        let live: foldhash::HashSet<u64> = live.iter().copied().collect();
        let gone: Vec<u64> = self
            .by_connection
            .keys()
            .filter(|c| !live.contains(c))
            .copied()
            .collect();
        gone.into_iter().filter_map(|c| self.closed(c)).collect()
    }

    /// The connection `peer` last spoke on.
    pub fn connection(&self, peer: &Bytes) -> Option<u64> {
        self.by_peer.get(peer).copied()
    }

    fn check(&self) {
        debug_assert_eq!(self.by_peer.len(), self.by_connection.len());
        debug_assert_eq!(self.closed.len(), self.closed_order.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_under_the_same_identity_moves_the_peer() {
        let mut p = PeerConnections::default();
        let w = Bytes::from_static(b"worker-1");
        p.seen(&w, 1);
        p.seen(&w, 2);
        assert_eq!(p.connection(&w), Some(2));
        assert_eq!(p.closed(1), None, "the old connection speaks for no one");
        assert_eq!(p.closed(2), Some(w.clone()));
        assert!(p.by_peer.is_empty() && p.by_connection.is_empty());
    }

    #[test]
    fn a_message_read_after_its_connection_closed_is_known_as_last_words() {
        let mut p = PeerConnections::default();
        let w = Bytes::from_static(b"w");
        assert!(p.seen(&w, 1));
        assert_eq!(p.closed(1), Some(w.clone()));
        assert!(!p.seen(&w, 1), "not tracked again");
        assert_eq!(p.connection(&w), None);
        // The memory of closes is bounded.
        for c in 100..100 + CLOSED_REMEMBERED_MAX as u64 {
            p.closed(c);
        }
        assert!(
            p.seen(&w, 1),
            "forgotten after CLOSED_REMEMBERED_MAX newer closes"
        );
        assert_eq!(p.closed_order.len(), CLOSED_REMEMBERED_MAX);
    }

    #[test]
    fn keep_only_forgets_what_closed_unseen() {
        let mut p = PeerConnections::default();
        p.seen(&Bytes::from_static(b"a"), 1);
        p.seen(&Bytes::from_static(b"b"), 2);
        assert_eq!(p.keep_only(&[2, 3]), vec![Bytes::from_static(b"a")]);
        assert_eq!(p.connection(&Bytes::from_static(b"b")), Some(2));
        assert_eq!(p.connection(&Bytes::from_static(b"a")), None);
    }
}
