//! Reading single records by offset, cheaply when the offsets asked for
//! ascend: a queue reads the bodies it keeps on disk back in line order.

use std::sync::Arc;

use bytes::Bytes;

use crate::files::{LogFile, OpenMode};
use crate::record::{self, Decoded, HEADER_LEN, MAGIC};
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
        if offset < self.first_offset() || offset >= self.written_offset() {
            return Ok(None);
        }
        let i = self.segments.partition_point(|s| s.base <= offset) - 1;
        let meta = &self.segments[i];
        let place = match cursor.at.take() {
            Some(p)
                if p.truncations == self.truncations
                    && p.base == meta.base
                    && p.next_offset <= offset =>
            {
                p
            }
            _ => {
                let file = if i + 1 == self.segments.len() {
                    self.file.clone()
                } else {
                    self.config
                        .files
                        .open(&meta.path, OpenMode::Read)
                        .map_err(LogError::io(&meta.path))?
                };
                Place {
                    truncations: self.truncations,
                    base: meta.base,
                    file,
                    position: meta.start_of(&*self.config.files, offset)?,
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
            if header[..4] != MAGIC
                || len > self.config.record_bytes_max
                || position + size > meta.bytes
            {
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
            let Decoded::Record { payload, .. } =
                record::decode(&buf, self.config.record_bytes_max)
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
