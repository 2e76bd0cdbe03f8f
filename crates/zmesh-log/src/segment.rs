//! Segment files: naming, and reading records back from one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::files::{FileSystem, LogFile, OpenMode};
use crate::record::{self, Decoded, HEADER_LEN, MAGIC};
use crate::{LogError, Record, Result};

/// One segment as the log tracks it.
#[derive(Clone, Debug)]
pub(crate) struct SegmentMeta {
    /// Offset of its first record (also its file name).
    pub base: u64,
    /// Offset after its last record.
    pub end: u64,
    /// Bytes of valid records (the readable length).
    pub bytes: u64,
    /// The `.log` file.
    pub path: PathBuf,
    /// False once a failed index write could not be cut back: entries after
    /// the torn one would be misaligned, so lookups scan the segment instead
    /// (until a reopen rebuilds the index).
    pub index_ok: bool,
}

impl SegmentMeta {
    pub fn new(dir: &Path, base: u64) -> SegmentMeta {
        SegmentMeta {
            base,
            end: base,
            bytes: 0,
            path: dir.join(format!("{base:020}.log")),
            index_ok: true,
        }
    }

    pub fn index_path(&self) -> PathBuf {
        self.path.with_extension("idx")
    }

    /// Byte position to start reading from to find `offset`.
    pub fn start_of(&self, files: &dyn FileSystem, offset: u64) -> Result<u64> {
        if self.index_ok {
            crate::index::lookup(files, &self.index_path(), offset)
        } else {
            Ok(0)
        }
    }
}

/// The base offset in a segment file name, if it is one.
pub(crate) fn parse_name(path: &Path) -> Option<u64> {
    if path.extension()? != "log" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    (stem.len() == 20).then(|| stem.parse().ok())?
}

/// Sequential reads within one segment, up to its readable length, through
/// a read-ahead buffer filled by positioned reads.
pub(crate) struct SegmentReader<'a> {
    meta: &'a SegmentMeta,
    file: Arc<dyn LogFile>,
    /// Bytes of the file from `buf_start` on.
    buf: Vec<u8>,
    buf_start: u64,
    position: u64,
    record_bytes_max: u32,
}

/// Bytes read ahead at a time.
const READ_AHEAD_BYTES: u64 = 64 << 10;

impl<'a> SegmentReader<'a> {
    pub fn open(
        files: &dyn FileSystem,
        meta: &'a SegmentMeta,
        position: u64,
        record_bytes_max: u32,
    ) -> Result<Self> {
        let file = files
            .open(&meta.path, OpenMode::Read)
            .map_err(LogError::io(&meta.path))?;
        Ok(SegmentReader {
            meta,
            file,
            buf: Vec::new(),
            buf_start: position,
            position,
            record_bytes_max,
        })
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Skip to `position` (the end of a known damaged range).
    pub fn skip_to(&mut self, position: u64) {
        debug_assert!(position >= self.position, "readers only move forward");
        self.position = position;
    }

    /// The `len` bytes from the current position, reading ahead when the
    /// buffer does not hold them. The caller checked they lie within the
    /// readable length.
    fn bytes(&mut self, len: u64) -> Result<&[u8]> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.position < self.buf_start || self.position + len > buf_end {
            let want = len
                .max(READ_AHEAD_BYTES)
                .min(self.meta.bytes - self.position);
            self.buf.resize(want as usize, 0);
            self.buf_start = self.position;
            if let Err(e) = self.file.read_exact_at(&mut self.buf, self.position) {
                self.buf.clear();
                return Err(LogError::Io {
                    path: self.meta.path.clone(),
                    source: e,
                });
            }
        }
        let at = (self.position - self.buf_start) as usize;
        Ok(&self.buf[at..at + len as usize])
    }

    /// The next record, `Ok(None)` at the readable end, `Err(Corrupt)` when
    /// the bytes here are not a valid record.
    pub fn next(&mut self) -> Result<Option<Record>> {
        if self.position >= self.meta.bytes {
            return Ok(None);
        }
        let corrupt = LogError::Corrupt {
            path: self.meta.path.clone(),
            position: self.position,
        };
        if self.position + HEADER_LEN as u64 > self.meta.bytes {
            return Err(corrupt);
        }
        let header = self.bytes(HEADER_LEN as u64)?;
        if header[..4] != MAGIC {
            return Err(corrupt);
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let size = HEADER_LEN as u64 + u64::from(len);
        if len > self.record_bytes_max || self.position + size > self.meta.bytes {
            return Err(corrupt);
        }
        let record_bytes_max = self.record_bytes_max;
        let bytes = self.bytes(size)?;
        match record::decode(bytes, record_bytes_max) {
            Decoded::Record {
                offset,
                payload,
                size,
            } => {
                let payload = Bytes::copy_from_slice(&bytes[payload]);
                self.position += size as u64;
                Ok(Some(Record { offset, payload }))
            }
            _ => Err(corrupt),
        }
    }
}
