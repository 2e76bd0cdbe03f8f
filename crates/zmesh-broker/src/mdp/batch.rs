//! BATCH: several messages of one zmesh protocol (`ZMDPC1`, `ZMDPW1`) in one
//! ZeroMQ message, so a busy connection pays the per-message cost of the
//! transport once per batch rather than once per request.
//!
//! ```text
//! header | 0x10 BATCH | (frame count, 4 bytes big-endian | command | args...)+
//! ```
//! Each item is a whole message of the same protocol without its header.
//! Batches do not nest.

use bytes::Bytes;

use super::MdpError;
use super::cmd::BATCH;

/// Most items one batch may carry; a longer batch is malformed.
pub const BATCH_ITEMS_MAX: usize = 1024;

/// Whether `frames` (after any identity) is a BATCH of `header`'s protocol.
pub fn is_batch(frames: &[Bytes]) -> bool {
    matches!(frames, [_, c, ..] if c.as_ref() == [BATCH])
}

/// The items of a BATCH, each as a whole message (header first).
///
/// ```
/// use bytes::Bytes;
/// use zmesh_broker::mdp::batch::{join, split};
/// let a = vec![Bytes::from_static(b"ZMDPC1"), Bytes::from_static(b"\x03"), Bytes::from_static(b"x")];
/// let b = vec![Bytes::from_static(b"ZMDPC1"), Bytes::from_static(b"\x04")];
/// let joined = join(&[a.clone(), b.clone()]);
/// assert_eq!(split(&joined).unwrap(), vec![a, b]);
/// ```
pub fn split(frames: &[Bytes]) -> Result<Vec<Vec<Bytes>>, MdpError> {
    let [header, _batch, rest @ ..] = frames else {
        return Err(MdpError::Truncated("BATCH"));
    };
    let mut rest = rest;
    let mut items = Vec::new();
    while let Some((count, tail)) = rest.split_first() {
        let n = <[u8; 4]>::try_from(count.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| MdpError::BadBatch("frame count is not 4 bytes"))?
            as usize;
        if n == 0 || n > tail.len() {
            return Err(MdpError::BadBatch("frame count out of range"));
        }
        if items.len() == BATCH_ITEMS_MAX {
            return Err(MdpError::BadBatch("too many items"));
        }
        if tail[0].as_ref() == [BATCH] {
            return Err(MdpError::BadBatch("batches do not nest"));
        }
        let mut item = Vec::with_capacity(n + 1);
        item.push(header.clone());
        item.extend_from_slice(&tail[..n]);
        items.push(item);
        rest = &tail[n..];
    }
    if items.is_empty() {
        return Err(MdpError::BadBatch("no items"));
    }
    Ok(items)
}

/// One BATCH of `messages`, which all start with the same header.
pub fn join(messages: &[Vec<Bytes>]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for m in messages {
        push_item(&mut out, m);
    }
    out
}

/// Append message `m` (header first) to `batch`, starting the batch if empty.
pub(crate) fn push_item(batch: &mut Vec<Bytes>, m: &[Bytes]) {
    let Some((header, item)) = m.split_first() else {
        return;
    };
    if batch.is_empty() {
        batch.push(header.clone());
        batch.push(Bytes::from_static(&[BATCH]));
    }
    batch.push(Bytes::copy_from_slice(&(item.len() as u32).to_be_bytes()));
    batch.extend_from_slice(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn refuses_bad_counts_empty_and_nested_batches() {
        let bad = |frames: Vec<Bytes>| split(&frames).unwrap_err();
        assert_eq!(
            bad(f(&[b"ZMDPW1", b"\x10"])),
            MdpError::BadBatch("no items")
        );
        assert_eq!(
            bad(f(&[b"ZMDPW1", b"\x10", b"\0\0\0\x02", b"\x05"])),
            MdpError::BadBatch("frame count out of range")
        );
        assert_eq!(
            bad(f(&[b"ZMDPW1", b"\x10", b"\0\0\0\0"])),
            MdpError::BadBatch("frame count out of range")
        );
        assert_eq!(
            bad(f(&[b"ZMDPW1", b"\x10", b"\x01", b"\x05"])),
            MdpError::BadBatch("frame count is not 4 bytes")
        );
        assert_eq!(
            bad(f(&[b"ZMDPW1", b"\x10", b"\0\0\0\x01", b"\x10"])),
            MdpError::BadBatch("batches do not nest")
        );
        let mut long = f(&[b"ZMDPW1", b"\x10"]);
        for _ in 0..=BATCH_ITEMS_MAX {
            long.extend(f(&[b"\0\0\0\x01", b"\x05"]));
        }
        assert_eq!(bad(long), MdpError::BadBatch("too many items"));
    }
}
