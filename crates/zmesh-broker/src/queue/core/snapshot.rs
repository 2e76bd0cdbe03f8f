//! A queue's state as a cluster's shard snapshot keeps it, and restoring a
//! queue from one.
//!
//! A snapshot holds what replaying the shard's log would build: each
//! message with its body, id, publish time, place in line and delivery
//! count, and the ids the queue remembers as stored. Not who holds what
//! (consumers are the serving node's own): restored, every message is in
//! line. Taken on the node serving the queue, it includes the decisions
//! that node took and has not yet seen committed (acks, deliveries); those
//! are applied again harmlessly when they commit (`docs/cluster.md`).

use serde::{Deserialize, Serialize};

use super::*;
use crate::dedup::{DedupSnapshot, DedupWindow};

/// One queue in a shard snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub name: String,
    /// Which declaration of the queue (the catalog index that declared it;
    /// 0 when not known): filled in by the cluster link.
    pub declared_at: u64,
    /// In offset order.
    pub messages: Vec<SnapshotMessage>,
    pub dedup: DedupSnapshot,
}

/// One stored message in a shard snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMessage {
    /// Its tag: the offset of the publish in the shard's log.
    pub offset: u64,
    /// Its place in line.
    pub order: u64,
    pub published_ms: u64,
    pub deliveries: u32,
    pub msg_id: Bytes,
    pub body: Bytes,
}

/// A queue could not be put in a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("queue {queue:?}: the body of the message at {offset} is not in memory")]
pub struct NotInMemory {
    pub queue: String,
    pub offset: u64,
}

impl QueueCore {
    /// The names of the queues, in no order.
    pub fn queue_names(&self) -> impl Iterator<Item = &str> {
        self.queues.keys().map(String::as_str)
    }

    /// The state of queue `name` for a shard snapshot; `None` when there is
    /// no such queue.
    pub fn queue_snapshot(&self, name: &str) -> Option<Result<QueueSnapshot, NotInMemory>> {
        let q = self.queues.get(name)?;
        let mut messages = Vec::with_capacity(q.messages.len());
        for (offset, m) in &q.messages {
            // A cluster keeps every body in memory: there is no journal to
            // read one back from.
            let Body::InMemory(body) = &m.body else {
                return Some(Err(NotInMemory {
                    queue: name.to_owned(),
                    offset: *offset,
                }));
            };
            messages.push(SnapshotMessage {
                offset: *offset,
                order: m.order,
                published_ms: m.published_ms,
                deliveries: m.deliveries,
                msg_id: m.msg_id.clone(),
                body: body.clone(),
            });
        }
        Some(Ok(QueueSnapshot {
            name: name.to_owned(),
            declared_at: 0,
            messages,
            dedup: q.dedup.snapshot(),
        }))
    }

    /// Replaces what queue `name` holds with what `snapshot` holds (nothing
    /// when `None`): the messages, their counts and the ids remembered. A
    /// queue this node serves delivers at once.
    pub fn restore_queue(
        &mut self,
        now: Now,
        name: &str,
        snapshot: Option<&QueueSnapshot>,
    ) -> Vec<QueueAction> {
        let Some(q) = self.queues.get_mut(name) else {
            return Vec::new();
        };
        let offsets: Vec<u64> = q.messages.keys().copied().collect();
        for offset in offsets {
            q.release(offset);
            if q.remove(offset).is_some() {
                self.messages -= 1;
            }
        }
        let window = q.options().dedup_window as usize;
        q.dedup = match snapshot {
            Some(s) => DedupWindow::restored(&s.dedup, window),
            None => DedupWindow::default(),
        };
        for m in snapshot.map_or(&[][..], |s| &s.messages[..]) {
            let mut msg = Msg::replayed(
                m.body.clone(),
                m.msg_id.clone(),
                m.published_ms,
                now,
                m.order,
            );
            msg.deliveries = m.deliveries;
            q.insert(m.offset, msg);
            self.messages += 1;
        }
        if q.serving {
            self.dispatch(now, name);
        }
        std::mem::take(&mut self.out)
    }
}
