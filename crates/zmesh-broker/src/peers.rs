//! Which connection each peer (ROUTER routing id) speaks on, so the driver can
//! close a peer's connection and tell the cores when it closed. Bounded by the
//! live connections: entries leave when their connection closes.

use bytes::Bytes;
use foldhash::HashMap;

/// Routing id ↔ connection id, for the live connections that sent something.
#[derive(Default)]
pub struct PeerConnections {
    by_peer: HashMap<Bytes, u64>,
    by_connection: HashMap<u64, Bytes>,
}

impl PeerConnections {
    /// `peer` sent a message on `connection` (cheap when nothing changed).
    pub fn seen(&mut self, peer: &Bytes, connection: u64) {
        if self.by_peer.get(peer) == Some(&connection) {
            return;
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
    }

    /// The connection closed: the peer it spoke for, if it still did.
    pub fn closed(&mut self, connection: u64) -> Option<Bytes> {
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
    fn keep_only_forgets_what_closed_unseen() {
        let mut p = PeerConnections::default();
        p.seen(&Bytes::from_static(b"a"), 1);
        p.seen(&Bytes::from_static(b"b"), 2);
        assert_eq!(p.keep_only(&[2, 3]), vec![Bytes::from_static(b"a")]);
        assert_eq!(p.connection(&Bytes::from_static(b"b")), Some(2));
        assert_eq!(p.connection(&Bytes::from_static(b"a")), None);
    }
}
