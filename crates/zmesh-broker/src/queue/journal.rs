//! What the queues write to the storage log, one record per event.
//!
//! ```text
//! PUBLISH  01 | queue u32 | published_ms u64 | msg_id_len u16 | msg_id | body
//! SETTLE   02 | queue u32 | reason u8 | count u32 | offset u64 × count
//! REQUEUE  03 | queue u32 | offset u64 | deliveries u32
//! ```
//! (integers little-endian). A message is identified by the log offset of its
//! PUBLISH record. Replaying the log in order rebuilds every queue: a PUBLISH
//! adds a message, a SETTLE removes it, a REQUEUE restores its delivery count.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a message left its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SettleReason {
    /// A consumer acknowledged it.
    Acked = 1,
    /// Copied to the dead-letter queue.
    DeadLettered = 2,
    /// Dropped: expired, rejected or over max deliveries with no dead-letter queue.
    Dropped = 3,
    /// Removed by a purge.
    Purged = 4,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A message stored.
    Publish {
        /// Queue id.
        queue: u32,
        /// Wall-clock time of the publish, for TTL across restarts.
        published_ms: u64,
        /// Producer's id for deduplication (may be empty).
        msg_id: Bytes,
        /// Body.
        body: Bytes,
    },
    /// Messages gone for good.
    Settle {
        /// Queue id.
        queue: u32,
        /// Why.
        reason: SettleReason,
        /// Their offsets.
        offsets: Vec<u64>,
    },
    /// A message back in its queue after `deliveries` deliveries.
    Requeue {
        /// Queue id.
        queue: u32,
        /// Its offset.
        offset: u64,
        /// Deliveries so far.
        deliveries: u32,
    },
}

/// Largest SETTLE record, in offsets (keeps records far below the log's limit).
pub const SETTLE_BATCH_MAX: usize = 65_536;

impl Entry {
    /// Encode for the log.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Entry::Publish {
                queue,
                published_ms,
                msg_id,
                body,
            } => {
                b.reserve(19 + msg_id.len() + body.len());
                b.put_u8(1);
                b.put_u32_le(*queue);
                b.put_u64_le(*published_ms);
                b.put_u16_le(msg_id.len() as u16);
                b.put_slice(msg_id);
                b.put_slice(body);
            }
            Entry::Settle {
                queue,
                reason,
                offsets,
            } => {
                b.put_u8(2);
                b.put_u32_le(*queue);
                b.put_u8(*reason as u8);
                b.put_u32_le(offsets.len() as u32);
                for o in offsets {
                    b.put_u64_le(*o);
                }
            }
            Entry::Requeue {
                queue,
                offset,
                deliveries,
            } => {
                b.put_u8(3);
                b.put_u32_le(*queue);
                b.put_u64_le(*offset);
                b.put_u32_le(*deliveries);
            }
        }
        b.freeze()
    }

    /// Decode a record; `None` for bytes this version did not write.
    pub fn decode(p: &Bytes) -> Option<Entry> {
        let u32_at = |i: usize| Some(u32::from_le_bytes(p.get(i..i + 4)?.try_into().ok()?));
        let u64_at = |i: usize| Some(u64::from_le_bytes(p.get(i..i + 8)?.try_into().ok()?));
        match *p.first()? {
            1 => {
                let id_len = u16::from_le_bytes(p.get(13..15)?.try_into().ok()?) as usize;
                if p.len() < 15 + id_len {
                    return None;
                }
                Some(Entry::Publish {
                    queue: u32_at(1)?,
                    published_ms: u64_at(5)?,
                    msg_id: p.slice(15..15 + id_len),
                    body: p.slice(15 + id_len..),
                })
            }
            2 => {
                let reason = match *p.get(5)? {
                    1 => SettleReason::Acked,
                    2 => SettleReason::DeadLettered,
                    3 => SettleReason::Dropped,
                    4 => SettleReason::Purged,
                    _ => return None,
                };
                let n = u32_at(6)? as usize;
                if p.len() != 10 + n * 8 {
                    return None;
                }
                Some(Entry::Settle {
                    queue: u32_at(1)?,
                    reason,
                    offsets: (0..n).map(|i| u64_at(10 + i * 8)).collect::<Option<_>>()?,
                })
            }
            3 if p.len() == 17 => Some(Entry::Requeue {
                queue: u32_at(1)?,
                offset: u64_at(5)?,
                deliveries: u32_at(13)?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let entries = [
            Entry::Publish {
                queue: 3,
                published_ms: 99,
                msg_id: Bytes::from_static(b"id-1"),
                body: Bytes::from_static(b"body"),
            },
            Entry::Settle {
                queue: 3,
                reason: SettleReason::Acked,
                offsets: vec![1, 5, 9],
            },
            Entry::Requeue {
                queue: 3,
                offset: 5,
                deliveries: 2,
            },
        ];
        for e in entries {
            let bytes = e.encode();
            assert_eq!(Entry::decode(&bytes), Some(e.clone()));
            for cut in 0..bytes.len() {
                let short = bytes.slice(..cut);
                // A PUBLISH cut inside its body is still a (shorter) publish; nothing else decodes.
                if let Some(d) = Entry::decode(&short) {
                    assert!(matches!(d, Entry::Publish { .. }), "{d:?} from {cut} bytes");
                }
            }
        }
    }
}
