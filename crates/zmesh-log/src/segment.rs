//! Segment files: naming, and reading records back from one.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

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
}

impl SegmentMeta {
    pub fn new(dir: &Path, base: u64) -> SegmentMeta {
        SegmentMeta {
            base,
            end: base,
            bytes: 0,
            path: dir.join(format!("{base:020}.log")),
        }
    }

    pub fn index_path(&self) -> PathBuf {
        self.path.with_extension("idx")
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

/// Sequential reads within one segment, up to its readable length.
pub(crate) struct SegmentReader<'a> {
    meta: &'a SegmentMeta,
    reader: BufReader<File>,
    position: u64,
    record_bytes_max: u32,
}

impl<'a> SegmentReader<'a> {
    pub fn open(meta: &'a SegmentMeta, position: u64, record_bytes_max: u32) -> Result<Self> {
        let mut file = File::open(&meta.path).map_err(LogError::io(&meta.path))?;
        file.seek(SeekFrom::Start(position))
            .map_err(LogError::io(&meta.path))?;
        Ok(SegmentReader {
            meta,
            reader: BufReader::with_capacity(64 << 10, file),
            position,
            record_bytes_max,
        })
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Skip to `position` (the end of a known damaged range).
    pub fn skip_to(&mut self, position: u64) -> Result<()> {
        let delta = i64::try_from(position - self.position).expect("segment sizes fit i64");
        self.reader
            .seek_relative(delta)
            .map_err(LogError::io(&self.meta.path))?;
        self.position = position;
        Ok(())
    }

    /// The next record, `Ok(None)` at the readable end, `Err(Corrupt)` when
    /// the bytes here are not a valid record.
    pub fn next(&mut self) -> Result<Option<Record>> {
        if self.position >= self.meta.bytes {
            return Ok(None);
        }
        let corrupt = || LogError::Corrupt {
            path: self.meta.path.clone(),
            position: self.position,
        };
        let mut buf = vec![0u8; HEADER_LEN];
        self.reader
            .read_exact(&mut buf)
            .map_err(LogError::io(&self.meta.path))?;
        if buf[..4] != MAGIC {
            return Err(corrupt());
        }
        let len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        if len > self.record_bytes_max
            || self.position + (HEADER_LEN as u64) + u64::from(len) > self.meta.bytes
        {
            return Err(corrupt());
        }
        buf.resize(HEADER_LEN + len as usize, 0);
        self.reader
            .read_exact(&mut buf[HEADER_LEN..])
            .map_err(LogError::io(&self.meta.path))?;
        match record::decode(&buf, self.record_bytes_max) {
            Decoded::Record {
                offset,
                payload,
                size,
            } => {
                self.position += size as u64;
                let payload = Bytes::from(buf).slice(payload);
                Ok(Some(Record { offset, payload }))
            }
            _ => Err(corrupt()),
        }
    }
}
