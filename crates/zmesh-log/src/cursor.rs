//! Reading single records by offset, cheaply when the offsets asked for
//! ascend: a queue reads the bodies it keeps on disk back in line order,
//! on a thread of its own (through a [`LogView`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::files::{FileSystem, Files, LogFile, OpenMode};
use crate::record::{self, Decoded, HEADER_LEN, MAGIC};
use crate::segment::{SegmentMeta, SegmentReader};
use crate::{Damage, Log, LogError, Record, Result};

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
    /// Which log ([`Log`]'s id): one cursor may serve several.
    log: u64,
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
        self.layout().read_at(cursor, offset)
    }

    /// The segments that hold the next `records` records from `from` on
    /// (or all the rest), as they are now, to be read off the log's owner
    /// (another thread): see [`LogView`]. Offsets lost to damage are not
    /// counted, so a read of `records` from `from` finds in the view all it
    /// would find in the log. The caller must not remove those segments
    /// until the view's reads are done.
    pub fn view(&self, from: u64, records: u64) -> LogView {
        let last = self.segments.len() - 1;
        let i = self
            .segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        let mut j = i;
        let mut held = 0u64;
        loop {
            let s = &self.segments[j];
            let start = s.base.max(from);
            let lost: u64 = self
                .damaged
                .iter()
                .filter(|d| d.path == s.path)
                .map(|d| {
                    let (a, b) = (
                        d.offsets_lost.start.max(start),
                        d.offsets_lost.end.min(s.end),
                    );
                    b.saturating_sub(a)
                })
                .sum();
            held += s.end.saturating_sub(start).saturating_sub(lost);
            if held >= records || j == last {
                break;
            }
            j += 1;
        }
        let segments = self.segments[i..=j].to_vec();
        LogView {
            active: (j == last).then(|| self.file.clone()),
            damaged: self
                .damaged
                .iter()
                .filter(|d| segments.iter().any(|s| s.path == d.path))
                .cloned()
                .collect(),
            segments,
            files: self.config.files.clone(),
            record_bytes_max: self.config.record_bytes_max,
            truncations: self.truncations,
            log: self.id,
        }
    }

    pub(crate) fn layout(&self) -> Layout<'_> {
        Layout {
            segments: &self.segments,
            active: Some(&self.file),
            damaged: &self.damaged,
            files: &*self.config.files,
            record_bytes_max: self.config.record_bytes_max,
            truncations: self.truncations,
            log: self.id,
        }
    }
}

/// Some of a log's segments as they were when taken ([`Log::view`]), read
/// anywhere: a queue reads message bodies back, and a stream serves its
/// subscribers, on a thread of their own, so a slow disk never stalls the
/// broker's loop. Bytes below a segment's readable length never change (a
/// failed write is cut back above it), so a view reads what the log held
/// when it was taken, and nothing written after.
pub struct LogView {
    /// Oldest first, as in the log.
    segments: Vec<SegmentMeta>,
    /// The log's active segment's file, when it is the view's last segment
    /// (a sealed one is opened by path).
    active: Option<Arc<dyn LogFile>>,
    damaged: Vec<Damage>,
    files: Files,
    record_bytes_max: u32,
    truncations: u64,
    log: u64,
}

impl LogView {
    /// The first offset the view holds.
    pub fn first_offset(&self) -> u64 {
        self.segments[0].base
    }

    /// The offset after the last record the view holds.
    pub fn written_offset(&self) -> u64 {
        self.segments.last().expect("a view holds a segment").end
    }

    /// As [`Log::read`], within the view.
    pub fn read(&self, from: u64, records_max: usize, bytes_max: usize) -> Result<Vec<Record>> {
        self.layout().read(from, records_max, bytes_max)
    }

    /// As [`Log::read_at`], within the view.
    pub fn read_at(&self, cursor: &mut ReadCursor, offset: u64) -> Result<Option<Record>> {
        self.layout().read_at(cursor, offset)
    }

    fn layout(&self) -> Layout<'_> {
        Layout {
            segments: &self.segments,
            active: self.active.as_ref(),
            damaged: &self.damaged,
            files: &*self.files,
            record_bytes_max: self.record_bytes_max,
            truncations: self.truncations,
            log: self.log,
        }
    }
}

/// What reading needs, borrowed from a [`Log`] or a [`LogView`]: one
/// implementation of reads for both.
pub(crate) struct Layout<'a> {
    /// Oldest first; never empty.
    pub segments: &'a [SegmentMeta],
    /// The file of the last segment, when it is the log's active one.
    pub active: Option<&'a Arc<dyn LogFile>>,
    pub damaged: &'a [Damage],
    pub files: &'a dyn FileSystem,
    pub record_bytes_max: u32,
    pub truncations: u64,
    /// The log's id (see [`Place`]).
    pub log: u64,
}

impl Layout<'_> {
    fn first_offset(&self) -> u64 {
        self.segments[0].base
    }

    fn written_offset(&self) -> u64 {
        self.segments.last().expect("never empty").end
    }

    /// See [`Log::read`].
    pub fn read(&self, from: u64, records_max: usize, bytes_max: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut offset = from.max(self.first_offset());
        let end = self.written_offset();
        while out.len() < records_max && offset < end && (bytes < bytes_max || out.is_empty()) {
            let i = self.segments.partition_point(|s| s.base <= offset) - 1;
            let meta = &self.segments[i];
            let start = meta.start_of(self.files, offset)?;
            let mut reader = SegmentReader::open(self.files, meta, start, self.record_bytes_max)?;
            loop {
                let pos = reader.position();
                if let Some(d) = self
                    .damaged
                    .iter()
                    .find(|d| d.path == meta.path && d.bytes.start == pos && d.bytes.end > pos)
                {
                    reader.skip_to(d.bytes.end);
                    continue;
                }
                let Some(rec) = reader.next()? else { break };
                if rec.offset < offset {
                    continue;
                }
                offset = rec.offset + 1;
                bytes += rec.payload.len();
                out.push(rec);
                if out.len() >= records_max || bytes >= bytes_max {
                    return Ok(out);
                }
            }
            // On to the next segment; a gap between segments (lost offsets) is skipped.
            match self.segments.get(i + 1) {
                Some(next) => offset = offset.max(next.base),
                None => break,
            }
        }
        Ok(out)
    }

    /// See [`Log::read_at`].
    pub fn read_at(&self, cursor: &mut ReadCursor, offset: u64) -> Result<Option<Record>> {
        if offset < self.first_offset() || offset >= self.written_offset() {
            return Ok(None);
        }
        let i = self.segments.partition_point(|s| s.base <= offset) - 1;
        let meta = &self.segments[i];
        let place = match cursor.at.take() {
            Some(p)
                if p.log == self.log
                    && p.truncations == self.truncations
                    && p.base == meta.base
                    && p.next_offset <= offset =>
            {
                p
            }
            _ => {
                let file = match self.active {
                    Some(file) if i + 1 == self.segments.len() => file.clone(),
                    _ => self
                        .files
                        .open(&meta.path, OpenMode::Read)
                        .map_err(LogError::io(&meta.path))?,
                };
                Place {
                    log: self.log,
                    truncations: self.truncations,
                    base: meta.base,
                    file,
                    position: meta.start_of(self.files, offset)?,
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
            if let Some(d) = self
                .damaged
                .iter()
                .find(|d| d.path == meta.path && d.bytes.contains(&position))
            {
                position = d.bytes.end;
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

// A view is taken on the log's owner and read on another thread.
const _: fn() = || {
    fn send<T: Send + 'static>() {}
    send::<LogView>();
};
