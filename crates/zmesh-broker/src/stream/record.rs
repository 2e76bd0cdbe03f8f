//! A stream message as stored in its log: `time_ms u64 LE | subject_len u16 LE
//! | subject | body`. The log offset is the message's sequence number.

use bytes::{BufMut, Bytes, BytesMut};

/// A stored stream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// Wall-clock time the broker stored it (never decreasing within a stream).
    pub time_ms: u64,
    /// Subject.
    pub subject: Bytes,
    /// Body.
    pub body: Bytes,
}

impl StreamRecord {
    /// Encode for the log.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(10 + self.subject.len() + self.body.len());
        b.put_u64_le(self.time_ms);
        b.put_u16_le(self.subject.len() as u16);
        b.put_slice(&self.subject);
        b.put_slice(&self.body);
        b.freeze()
    }

    /// Decode; `None` for bytes this version did not write.
    pub fn decode(p: &Bytes) -> Option<StreamRecord> {
        let time_ms = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
        let len = u16::from_le_bytes(p.get(8..10)?.try_into().ok()?) as usize;
        if p.len() < 10 + len {
            return None;
        }
        Some(StreamRecord {
            time_ms,
            subject: p.slice(10..10 + len),
            body: p.slice(10 + len..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = StreamRecord {
            time_ms: 42,
            subject: Bytes::from_static(b"orders.eu"),
            body: Bytes::from_static(b"{}"),
        };
        assert_eq!(StreamRecord::decode(&r.encode()), Some(r));
        assert_eq!(StreamRecord::decode(&Bytes::from_static(b"short")), None);
    }
}
