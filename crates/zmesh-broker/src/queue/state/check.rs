//! The whole-state check of a queue, for tests, simulations and fuzz targets.

use bytes::Bytes;
use foldhash::{HashMap, HashSet};

use super::{Body, Queue};

impl Queue {
    /// Every rule of the queue's state, checked in full (O(n): for tests,
    /// simulations and fuzz targets). Panics on the first broken one.
    pub fn check(&self) {
        let name = &self.spec.name;
        let (mut in_memory, mut on_disk, mut lens, mut id_bytes) = (0, 0, 0, 0);
        let mut held_by: HashMap<u64, &Bytes> = HashMap::default();
        for c in &self.consumers {
            for tag in &c.held {
                assert!(
                    held_by.insert(*tag, &c.peer).is_none(),
                    "{name}: {tag} held twice"
                );
            }
        }
        let deadlines: HashSet<(u64, u64)> =
            self.ack_deadlines.entries().map(|(d, t)| (d, *t)).collect();
        for (tag, m) in &self.messages {
            lens += m.body.len();
            id_bytes += m.msg_id.len() as u64;
            match m.body {
                Body::InMemory(ref b) => in_memory += b.len() as u64,
                Body::OnDisk { .. } => on_disk += 1,
            }
            let ready = self.ready.contains(&(m.order, *tag));
            match &m.holder {
                Some((peer, deadline)) => {
                    assert!(!ready, "{name}: {tag} both held and in line");
                    let detached = self.detached.contains(tag);
                    match held_by.get(tag) {
                        Some(p) => {
                            assert!(*p == peer && !detached, "{name}: {tag} held by another")
                        }
                        None => {
                            assert!(detached, "{name}: {tag} has a holder that does not hold it")
                        }
                    }
                    assert!(
                        deadlines.contains(&(*deadline, *tag)),
                        "{name}: held {tag} has no ack deadline entry"
                    );
                }
                None => {
                    assert!(!held_by.contains_key(tag) && !self.detached.contains(tag));
                    assert!(
                        m.delivered_as.is_none(),
                        "{name}: {tag} not held but aliased"
                    );
                }
            }
            if let Some(known) = m.delivered_as {
                assert_eq!(
                    self.aliases.get(&known),
                    Some(tag),
                    "{name}: alias of {tag}"
                );
            }
        }
        for tag in held_by.keys().chain(self.detached.iter()) {
            assert!(
                self.messages.contains_key(tag),
                "{name}: held {tag} is not stored"
            );
        }
        for (order, tag) in &self.ready {
            let m = self.messages.get(tag);
            assert!(
                m.is_some_and(|m| m.order == *order),
                "{name}: in line, {tag} is not stored"
            );
        }
        assert_eq!(
            self.aliases.len(),
            self.messages
                .values()
                .filter(|m| m.delivered_as.is_some())
                .count()
        );
        assert_eq!(in_memory, self.in_memory, "{name}: bytes in memory");
        assert_eq!(on_disk, self.on_disk, "{name}: messages on disk");
        assert_eq!(id_bytes, self.id_bytes, "{name}: id bytes");
        assert!(
            lens <= self.bytes,
            "{name}: stored bytes {lens} over the count {}",
            self.bytes
        );
    }

    /// The earliest ack deadline of a held message (O(n): for checks).
    pub fn earliest_held_deadline(&self) -> Option<u64> {
        self.messages
            .values()
            .filter_map(|m| m.holder.as_ref().map(|(_, d)| *d))
            .min()
    }
}
