//! Reading single records by offset, cheaply when the offsets asked for
//! ascend: a queue reads the bodies it keeps on disk back in line order,
//! on a thread of its own ([`RecordRead`]).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::files::{Files, LogFile, OpenMode};
use crate::record::{self, Decoded, HEADER_LEN, MAGIC};
use crate::segment::SegmentMeta;
use crate::{Log, LogError, Record, Result};

/// Where the last [`Log::read_at`] left off: its segment, kept open, and the
/// byte position after the record it returned. The next read of a later
/// offset in that segment goes on from there, hopping from header to header,
/// instead of starting again from the sparse index.
///
/// ```
/// # fn main() -> Result<(), zmesh_log::LogError> {
/// let dir = std::env::temp_dir().join(format!("zmesh-log-cursor-doc-{}", std::process::id()));
/// let (mut log, _) = zmesh_log::Log::open(&dir, zmesh_log::LogConfig::default())?;
/// for word in ["a", "b", "c"] {
///     log.append(word.as_bytes())?;
/// }
/// log.flush()?;
/// let mut cursor = zmesh_log::ReadCursor::default();
/// assert_eq!(&log.read_at(&mut cursor, 0)?.unwrap().payload[..], b"a");
/// assert_eq!(&log.read_at(&mut cursor, 2)?.unwrap().payload[..], b"c");
/// assert!(log.read_at(&mut cursor, 3)?.is_none()); // not written
/// # drop(log); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct ReadCursor {
    at: Option<Place>,
}

struct Place {
    /// The log's truncation count when this place was found: after a
    /// failed write, offsets are reused at other positions.
    truncations: u64,
    base: u64,
    file: Arc<dyn LogFile>,
    position: u64,
    next_offset: u64,
}

impl Log {
    /// The written record at `offset`, or `None` when it is not in the log
    /// (removed, lost to damage, or not written yet). Fast for ascending
    /// offsets within a segment; see [`ReadCursor`].
    pub fn read_at(&self, cursor: &mut ReadCursor, offset: u64) -> Result<Option<Record>> {
        match self.plan_read(offset) {
            Some(read) => read.run(cursor),
            None => Ok(None),
        }
    }

    /// What reading the record at `offset` takes, to be done off the log's
    /// owner (another thread), or `None` when it is not in the log. The
    /// read stays valid while the segment it names is kept: the caller
    /// must not remove segments from `offset` on until it has run.
    pub fn plan_read(&self, offset: u64) -> Option<RecordRead> {
        if offset < self.first_offset() || offset >= self.written_offset() {
            return None;
        }
        let i = self.segments.partition_point(|s| s.base <= offset) - 1;
        let segment = self.segments[i].clone();
        // Bytes below the readable length never change (a failed write is
        // cut back above it), so the read sees what the log sees now.
        Some(RecordRead {
            offset,
            truncations: self.truncations,
            active: (i + 1 == self.segments.len()).then(|| self.file.clone()),
            damaged: self
                .damaged
                .iter()
                .filter(|d| d.path == segment.path)
                .map(|d| d.bytes.clone())
                .collect(),
            segment,
            files: self.config.files.clone(),
            record_bytes_max: self.config.record_bytes_max,
        })
    }
}

/// One record's read, planned by [`Log::plan_read`] where the log lives
/// and run anywhere: a queue reads message bodies back on a thread of its
/// own, so a slow disk never stalls the broker's loop.
pub struct RecordRead {
    offset: u64,
    /// The log's truncation count when planned (see [`Place`]).
    truncations: u64,
    /// The segment as it was when planned: its readable length bounds the read.
    segment: SegmentMeta,
    /// The active segment's file; a sealed one is opened by path.
    active: Option<Arc<dyn LogFile>>,
    /// Damaged byte ranges of the segment, skipped.
    damaged: Vec<Range<u64>>,
    files: Files,
    record_bytes_max: u32,
}

impl RecordRead {
    /// The offset this reads.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Read the record, going on from `cursor` when it can; `None` when it
    /// is not there (lost to damage).
    pub fn run(&self, cursor: &mut ReadCursor) -> Result<Option<Record>> {
        let offset = self.offset;
        let meta = &self.segment;
        let place = match cursor.at.take() {
            Some(p)
                if p.truncations == self.truncations
                    && p.base == meta.base
                    && p.next_offset <= offset =>
            {
                p
            }
            _ => {
                let file = match &self.active {
                    Some(file) => file.clone(),
                    None => self
                        .files
                        .open(&meta.path, OpenMode::Read)
                        .map_err(LogError::io(&meta.path))?,
                };
                Place {
                    truncations: self.truncations,
                    base: meta.base,
                    file,
                    position: meta.start_of(&*self.files, offset)?,
                    next_offset: meta.base,
                }
            }
        };
        let corrupt = |position| LogError::Corrupt {
            path: meta.path.clone(),
            position,
        };
        let mut position = place.position;
        let mut header = [0u8; HEADER_LEN];
        while position + HEADER_LEN as u64 <= meta.bytes {
            if let Some(d) = self.damaged.iter().find(|d| d.contains(&position)) {
                position = d.end;
                continue;
            }
            place
                .file
                .read_exact_at(&mut header, position)
                .map_err(LogError::io(&meta.path))?;
            let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let found = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            let size = HEADER_LEN as u64 + u64::from(len);
            if header[..4] != MAGIC || len > self.record_bytes_max || position + size > meta.bytes {
                return Err(corrupt(position));
            }
            if found < offset {
                // Someone else's record: hop over it unread.
                position += size;
                continue;
            }
            if found > offset {
                break;
            }
            let mut buf = vec![0u8; size as usize];
            place
                .file
                .read_exact_at(&mut buf, position)
                .map_err(LogError::io(&meta.path))?;
            let Decoded::Record { payload, .. } = record::decode(&buf, self.record_bytes_max)
            else {
                return Err(corrupt(position));
            };
            cursor.at = Some(Place {
                position: position + size,
                next_offset: offset + 1,
                ..place
            });
            return Ok(Some(Record {
                offset,
                payload: Bytes::from(buf).slice(payload),
            }));
        }
        Ok(None)
    }
}

// A read is planned on the log's owner and run on another thread.
const _: fn() = || {
    fn send<T: Send + 'static>() {}
    send::<RecordRead>();
};
