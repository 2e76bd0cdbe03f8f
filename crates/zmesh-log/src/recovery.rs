//! Scanning a segment at open: what is valid, what is damaged, where it ends.
//!
//! The rules (see docs/storage.md):
//! - A record is valid when its magic, length bound, CRC and offset check out
//!   and its offset is above the previous valid record's.
//! - After an invalid or incomplete record, the scan looks for the next valid
//!   record. If there is one, the bytes between are **damage**: reported, kept
//!   on disk, skipped by readers. If there is none, the bytes are a **torn
//!   tail**: in the last segment they are what a crash interrupted and are
//!   truncated; in an older segment they are damage.

use std::ops::Range;
use std::path::PathBuf;

use crate::record::{self, Decoded, MAGIC};

/// A stretch of a segment that holds no readable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Segment file.
    pub path: PathBuf,
    /// Bytes skipped.
    pub bytes: Range<u64>,
    /// Offsets that were expected there and are missing (empty when the
    /// damage only hit bytes between records).
    pub offsets_lost: Range<u64>,
}

/// What opening the log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments scanned.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// Bytes cut from the end of the last segment (a write a crash interrupted).
    pub torn_tail_bytes: u64,
    /// Damage in the middle of the log, kept on disk and skipped.
    pub damaged: Vec<Damage>,
}

/// One valid record found by [`scan`].
pub(crate) struct Found {
    pub offset: u64,
    pub position: u64,
    pub size: u64,
}

/// Result of scanning one segment's bytes.
pub(crate) struct Scan {
    /// End of the last valid record.
    pub valid_end: u64,
    /// Offset after the last valid record (or `base` when there is none).
    pub next_offset: u64,
    /// Damage between valid records: (bytes, offsets lost).
    pub damaged: Vec<(Range<u64>, Range<u64>)>,
}

/// Walk `buf` (a whole segment) from its start, calling `on_record` for every valid record.
pub(crate) fn scan(
    buf: &[u8],
    base_offset: u64,
    record_bytes_max: u32,
    mut on_record: impl FnMut(Found),
) -> Scan {
    let mut pos = 0usize;
    let mut expected = base_offset;
    let mut damaged = Vec::new();
    let mut valid_end = 0usize;
    while pos < buf.len() {
        match record::decode(&buf[pos..], record_bytes_max) {
            Decoded::Record { offset, size, .. } if offset >= expected => {
                if offset > expected || pos > valid_end {
                    damaged.push((valid_end as u64..pos as u64, expected..offset));
                }
                on_record(Found {
                    offset,
                    position: pos as u64,
                    size: size as u64,
                });
                pos += size;
                valid_end = pos;
                expected = offset + 1;
            }
            _ => match resync(buf, pos + 1, expected, record_bytes_max) {
                Some(next) => pos = next,
                None => break,
            },
        }
    }
    Scan {
        valid_end: valid_end as u64,
        next_offset: expected,
        damaged,
    }
}

/// The position of the next valid record at or after `from`, if any.
fn resync(buf: &[u8], from: usize, expected: u64, record_bytes_max: u32) -> Option<usize> {
    let mut p = from;
    while p + MAGIC.len() <= buf.len() {
        let hit = buf[p..].windows(MAGIC.len()).position(|w| w == MAGIC)?;
        p += hit;
        if let Decoded::Record { offset, .. } = record::decode(&buf[p..], record_bytes_max)
            && offset >= expected
        {
            return Some(p);
        }
        p += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(buf.len());
            record::encode(100 + i, format!("record {i}").as_bytes(), &mut buf);
        }
        (buf, starts)
    }

    #[test]
    fn clean_segment_has_no_damage() {
        let (buf, _) = segment(10);
        let mut seen = 0;
        let s = scan(&buf, 100, 1024, |_| seen += 1);
        assert_eq!(
            (seen, s.next_offset, s.valid_end),
            (10, 110, buf.len() as u64)
        );
        assert!(s.damaged.is_empty());
    }

    #[test]
    fn torn_tail_is_not_damage() {
        let (buf, starts) = segment(10);
        for cut in starts[9] + 1..buf.len() {
            let s = scan(&buf[..cut], 100, 1024, |_| {});
            assert_eq!(s.next_offset, 109);
            assert_eq!(s.valid_end, starts[9] as u64);
            assert!(s.damaged.is_empty(), "cut {cut}");
        }
    }

    #[test]
    fn middle_damage_is_reported_and_later_records_kept() {
        let (mut buf, starts) = segment(10);
        buf[starts[4] + 22] ^= 0xff; // inside record 104's payload
        let mut seen = Vec::new();
        let s = scan(&buf, 100, 1024, |f| seen.push(f.offset));
        assert_eq!(seen, vec![100, 101, 102, 103, 105, 106, 107, 108, 109]);
        assert_eq!(
            s.damaged,
            vec![(starts[4] as u64..starts[5] as u64, 104..105)]
        );
    }

    #[test]
    fn damaged_length_that_points_past_the_end_is_damage_not_a_tail() {
        let (mut buf, starts) = segment(10);
        buf[starts[2] + 6] = 0x7f; // length now huge: looks incomplete
        let s = scan(&buf, 100, u32::MAX, |_| {});
        assert_eq!(s.next_offset, 110);
        assert_eq!(s.damaged.len(), 1);
    }
}
