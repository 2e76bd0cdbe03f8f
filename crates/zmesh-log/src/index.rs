//! The sparse offset index of one segment: a file of fixed 16-byte entries
//! `(offset u64 LE, byte position u64 LE)`, one per `index_interval_bytes` of
//! records, ascending. Lookups binary-search the file with positioned reads,
//! so memory does not grow with the log. The index is derived data: recovery
//! rebuilds it from the segment.

use std::path::Path;

use crate::files::{FileSystem, OpenMode};
use crate::{LogError, Result};

const ENTRY: u64 = 16;

pub(crate) fn entry(offset: u64, position: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[..8].copy_from_slice(&offset.to_le_bytes());
    e[8..].copy_from_slice(&position.to_le_bytes());
    e
}

/// Write a whole index file from its entries.
pub(crate) fn write(files: &dyn FileSystem, path: &Path, entries: &[(u64, u64)]) -> Result<()> {
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY as usize);
    for &(o, p) in entries {
        bytes.extend_from_slice(&entry(o, p));
    }
    files
        .open(path, OpenMode::Truncate)
        .and_then(|f| f.append(&bytes))
        .map_err(LogError::io(path))
}

/// Byte position to start reading from to find `offset`: the greatest indexed
/// entry at or below it, or 0.
pub(crate) fn lookup(files: &dyn FileSystem, path: &Path, offset: u64) -> Result<u64> {
    let Ok(f) = files.open(path, OpenMode::Read) else {
        return Ok(0);
    };
    let n = f.size_bytes().map_err(LogError::io(path))? / ENTRY;
    let read = |i: u64| -> Result<(u64, u64)> {
        let mut e = [0u8; 16];
        f.read_exact_at(&mut e, i * ENTRY)
            .map_err(LogError::io(path))?;
        Ok((
            u64::from_le_bytes(e[..8].try_into().expect("8")),
            u64::from_le_bytes(e[8..].try_into().expect("8")),
        ))
    };
    let (mut lo, mut hi) = (0u64, n);
    let mut best = 0;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (o, p) = read(mid)?;
        if o <= offset {
            best = p;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(best)
}
