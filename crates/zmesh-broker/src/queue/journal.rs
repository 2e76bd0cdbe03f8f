//! What the queues write to the storage log, one record per event.
//!
//! ```text
//! PUBLISH  01 | queue u32 | published_ms u64 | msg_id_len u16 | msg_id | body
//! SETTLE   02 | queue u32 | reason u8 | count u32 | offset u64 × count
//! REQUEUE  03 | queue u32 | offset u64 | deliveries u32
//! MOVE     04 | queue u32 | from u64 | order u64 | published_ms u64 | deliveries u32
//!             | msg_id_len u16 | msg_id | body
//! ```
//! (integers little-endian). A message is identified by the log offset of the
//! record that stores it: its PUBLISH, or the MOVE that compaction wrote when
//! it copied the message forward so that old segments can go. Replaying the
//! log in order rebuilds every queue: a PUBLISH adds a message, a SETTLE
//! removes it, a REQUEUE restores its delivery count, a MOVE replaces the
//! message at `from` with itself (one record, so a crash leaves either the
//! old copy or the new one, never both).

use bytes::{BufMut, Bytes, BytesMut};

/// Why a message left its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// A message copied forward by compaction; it replaces the one at `from`.
    Move {
        /// Queue id.
        queue: u32,
        /// The tag it had.
        from: u64,
        /// Its place in the queue (the offset of its first PUBLISH).
        order: u64,
        /// Wall-clock time of the original publish.
        published_ms: u64,
        /// Deliveries so far.
        deliveries: u32,
        /// Producer's id for deduplication (may be empty).
        msg_id: Bytes,
        /// Body.
        body: Bytes,
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
    /// Messages delivered once more. Only a cluster writes it (its shard's
    /// leader delivers, and a new leader must know how often); a single
    /// broker counts deliveries in memory and journals them with a REQUEUE.
    Deliver {
        /// Queue id.
        queue: u32,
        /// Their offsets.
        offsets: Vec<u64>,
    },
}

/// The body stored by a PUBLISH or MOVE record; `None` for other records.
///
/// ```
/// use bytes::Bytes;
/// use zmesh_broker::queue::journal::{Entry, body};
/// let record = Entry::Publish { queue: 1, published_ms: 0, msg_id: Bytes::new(), body: Bytes::from("hi") }.encode();
/// assert_eq!(body(&record), Some(Bytes::from("hi")));
/// ```
pub fn body(record: &Bytes) -> Option<Bytes> {
    match Entry::decode(record)? {
        Entry::Publish { body, .. } | Entry::Move { body, .. } => Some(body),
        Entry::Settle { .. } | Entry::Requeue { .. } | Entry::Deliver { .. } => None,
    }
}

/// The body stored by the journal record at `offset`, from the result of
/// reading it back, or why there is none (for the log and the refusal).
pub fn body_read_back(
    offset: u64,
    read: Result<Option<zmesh_log::Record>, zmesh_log::LogError>,
) -> Result<Bytes, String> {
    match read {
        Ok(Some(r)) => {
            body(&r.payload).ok_or_else(|| format!("journal record {offset} stores no message"))
        }
        Ok(None) => Err(format!("journal record {offset} is missing")),
        Err(e) => Err(e.refusal()),
    }
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
            Entry::Move {
                queue,
                from,
                order,
                published_ms,
                deliveries,
                msg_id,
                body,
            } => {
                b.reserve(35 + msg_id.len() + body.len());
                b.put_u8(4);
                b.put_u32_le(*queue);
                b.put_u64_le(*from);
                b.put_u64_le(*order);
                b.put_u64_le(*published_ms);
                b.put_u32_le(*deliveries);
                b.put_u16_le(msg_id.len() as u16);
                b.put_slice(msg_id);
                b.put_slice(body);
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
            Entry::Deliver { queue, offsets } => {
                b.put_u8(5);
                b.put_u32_le(*queue);
                b.put_u32_le(offsets.len() as u32);
                for o in offsets {
                    b.put_u64_le(*o);
                }
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
            4 => {
                let id_len = u16::from_le_bytes(p.get(33..35)?.try_into().ok()?) as usize;
                if p.len() < 35 + id_len {
                    return None;
                }
                Some(Entry::Move {
                    queue: u32_at(1)?,
                    from: u64_at(5)?,
                    order: u64_at(13)?,
                    published_ms: u64_at(21)?,
                    deliveries: u32_at(29)?,
                    msg_id: p.slice(35..35 + id_len),
                    body: p.slice(35 + id_len..),
                })
            }
            5 => {
                let n = u32_at(5)? as usize;
                if p.len() != 9 + n * 8 {
                    return None;
                }
                Some(Entry::Deliver {
                    queue: u32_at(1)?,
                    offsets: (0..n).map(|i| u64_at(9 + i * 8)).collect::<Option<_>>()?,
                })
            }
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
            Entry::Deliver {
                queue: 3,
                offsets: vec![5, 9],
            },
            Entry::Move {
                queue: 3,
                from: 5,
                order: 4,
                published_ms: 99,
                deliveries: 2,
                msg_id: Bytes::from_static(b"id-1"),
                body: Bytes::from_static(b"body"),
            },
        ];
        for e in entries {
            let bytes = e.encode();
            assert_eq!(Entry::decode(&bytes), Some(e.clone()));
            for cut in 0..bytes.len() {
                let short = bytes.slice(..cut);
                // A PUBLISH or MOVE cut inside its body is still one (the log's
                // checksum is what catches that); nothing else decodes.
                if let Some(d) = Entry::decode(&short) {
                    assert!(
                        matches!(d, Entry::Publish { .. } | Entry::Move { .. }),
                        "{d:?} from {cut} bytes"
                    );
                }
            }
        }
    }
}
