//! One record on disk: a fixed header, then the payload.
//!
//! ```text
//!  0        4        8                16       20
//!  ┌────────┬────────┬────────────────┬────────┬───────────────┐
//!  │ magic  │ len    │ offset         │ crc32c │ payload (len) │
//!  │ "ZLR1" │ u32 LE │ u64 LE         │ u32 LE │               │
//!  └────────┴────────┴────────────────┴────────┴───────────────┘
//! ```
//!
//! The CRC (Castagnoli) covers `len`, `offset` and the payload, so a flipped
//! length or offset is caught as surely as a flipped payload byte. The magic
//! lets recovery find the next record after a damaged one; the offset lets it
//! tell a real record from payload bytes that happen to look like a header.

use bytes::Bytes;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 20;
/// Marks the start of every record.
pub const MAGIC: [u8; 4] = *b"ZLR1";

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the log: records are numbered 0, 1, 2, … without gaps when written.
    pub offset: u64,
    /// What was appended.
    pub payload: Bytes,
}

fn crc(len: u32, offset: u64, payload: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&len.to_le_bytes());
    c = crc32c::crc32c_append(c, &offset.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

/// Append the encoded record to `out`.
pub fn encode(offset: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&crc(len, offset, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record of `size` bytes (header included).
    Record {
        /// The record's offset.
        offset: u64,
        /// Payload range within the buffer.
        payload: std::ops::Range<usize>,
        /// Header plus payload.
        size: usize,
    },
    /// The buffer ends inside a record that may still be valid.
    Incomplete,
    /// Not a valid record: wrong magic, impossible length or a CRC mismatch.
    Invalid,
}

/// Decode the record at the start of `buf`; lengths above `max_payload` are invalid.
pub fn decode(buf: &[u8], max_payload: u32) -> Decoded {
    if buf.len() < HEADER_LEN {
        // A torn header still has to start with as much of the magic as it has.
        let n = buf.len().min(4);
        return if buf[..n] == MAGIC[..n] {
            Decoded::Incomplete
        } else {
            Decoded::Invalid
        };
    }
    if buf[..4] != MAGIC {
        return Decoded::Invalid;
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > max_payload {
        return Decoded::Invalid;
    }
    let offset = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let stored = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes"));
    let end = HEADER_LEN + len as usize;
    if buf.len() < end {
        return Decoded::Incomplete;
    }
    if crc(len, offset, &buf[HEADER_LEN..end]) != stored {
        return Decoded::Invalid;
    }
    Decoded::Record {
        offset,
        payload: HEADER_LEN..end,
        size: end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_split_point() {
        let mut buf = Vec::new();
        encode(7, b"hello", &mut buf);
        assert_eq!(
            decode(&buf, 1024),
            Decoded::Record {
                offset: 7,
                payload: HEADER_LEN..HEADER_LEN + 5,
                size: HEADER_LEN + 5
            }
        );
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut], 1024),
                Decoded::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(42, b"payload bytes", &mut buf);
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(decode(&bad, 1024), Decoded::Record { offset: 42, .. }),
                "bit {i} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn oversize_length_is_invalid_not_incomplete() {
        let mut buf = Vec::new();
        encode(1, &[0; 100], &mut buf);
        assert_eq!(decode(&buf, 99), Decoded::Invalid);
    }
}
