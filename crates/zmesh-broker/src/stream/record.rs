//! A stream message as stored in its log:
//!
//! ```text
//! time_ms u64 | subject_len u16 | subject | body                         (no msg id)
//! time_ms u64 | subject_len u16 + 0x8000 | subject | id_len u8 | msg_id | body
//! ```
//!
//! (integers little-endian). Subjects are at most 255 bytes, so the top bit
//! of `subject_len` is free to say that a producer's message id follows; a
//! record without one keeps the first layout. The log offset is the
//! message's sequence number.

use bytes::{BufMut, Bytes, BytesMut};

/// Set in `subject_len` when a message id follows the subject.
const HAS_MSG_ID: u16 = 0x8000;

/// A stored stream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// Wall-clock time the broker stored it (never decreasing within a stream).
    pub time_ms: u64,
    /// Subject.
    pub subject: Bytes,
    /// The producer's id for deduplication, at most 255 bytes (empty: none).
    pub msg_id: Bytes,
    /// Body.
    pub body: Bytes,
}

impl StreamRecord {
    /// Encode for the log.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use zmesh_broker::stream::record::StreamRecord;
    /// let r = StreamRecord {
    ///     time_ms: 7,
    ///     subject: Bytes::from_static(b"px.eu"),
    ///     msg_id: Bytes::from_static(b"order-17"),
    ///     body: Bytes::from_static(b"101"),
    /// };
    /// assert_eq!(StreamRecord::decode(&r.encode()), Some(r));
    /// ```
    pub fn encode(&self) -> Bytes {
        let id_part = if self.msg_id.is_empty() {
            0
        } else {
            1 + self.msg_id.len()
        };
        let mut b = BytesMut::with_capacity(10 + self.subject.len() + id_part + self.body.len());
        b.put_u64_le(self.time_ms);
        let flag = if self.msg_id.is_empty() {
            0
        } else {
            HAS_MSG_ID
        };
        b.put_u16_le(self.subject.len() as u16 | flag);
        b.put_slice(&self.subject);
        if !self.msg_id.is_empty() {
            b.put_u8(self.msg_id.len() as u8);
            b.put_slice(&self.msg_id);
        }
        b.put_slice(&self.body);
        b.freeze()
    }

    /// Decode; `None` for bytes this version did not write.
    pub fn decode(p: &Bytes) -> Option<StreamRecord> {
        let time_ms = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
        let word = u16::from_le_bytes(p.get(8..10)?.try_into().ok()?);
        let len = (word & !HAS_MSG_ID) as usize;
        let subject = p.get(10..10 + len).map(|_| p.slice(10..10 + len))?;
        let mut at = 10 + len;
        let msg_id = if word & HAS_MSG_ID != 0 {
            let id_len = *p.get(at)? as usize;
            let id = p
                .get(at + 1..at + 1 + id_len)
                .map(|_| p.slice(at + 1..at + 1 + id_len))?;
            at += 1 + id_len;
            id
        } else {
            Bytes::new()
        };
        Some(StreamRecord {
            time_ms,
            subject,
            msg_id,
            body: p.slice(at..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_a_msg_id_and_truncation_fails() {
        for msg_id in [Bytes::new(), Bytes::from_static(b"id-1")] {
            let r = StreamRecord {
                time_ms: 42,
                subject: Bytes::from_static(b"orders.eu"),
                msg_id,
                body: Bytes::from_static(b"{}"),
            };
            let bytes = r.encode();
            assert_eq!(StreamRecord::decode(&bytes), Some(r.clone()));
            // Cut before the body starts: not a record.
            let body_at = bytes.len() - r.body.len();
            for cut in 0..body_at {
                assert_eq!(StreamRecord::decode(&bytes.slice(..cut)), None, "{cut}");
            }
        }
        assert_eq!(StreamRecord::decode(&Bytes::from_static(b"short")), None);
    }

    #[test]
    fn records_without_an_id_keep_the_first_layout() {
        let r = StreamRecord {
            time_ms: 1,
            subject: Bytes::from_static(b"a"),
            msg_id: Bytes::new(),
            body: Bytes::from_static(b"b"),
        };
        assert_eq!(&r.encode()[..], b"\x01\0\0\0\0\0\0\0\x01\0ab");
    }
}
