//! BATCH: several messages of one zmesh protocol (`ZMDPC1`, `ZMDPW1`) in one
//! ZeroMQ message, so a busy connection pays the per-message cost of the
//! transport once per batch rather than once per request.
//!
//! ```text
//! header | 0x10 BATCH | packed
//! packed = item+                  item  = frame count (4 bytes) | frame+
//!                                 frame = length (4 bytes) | bytes
//! ```
//! Integers are big-endian. Each item is a whole message of the same protocol
//! without its header (its first frame is the command). The items travel
//! packed in one frame: the transport's cost is per frame as well as per
//! message, and on receipt each item's frames are views of that one buffer.
//! Batches do not nest.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::MdpError;
use super::cmd::BATCH;

/// Most items one batch may carry; a longer batch is malformed.
pub const BATCH_ITEMS_MAX: usize = 1024;

/// Bytes a batch may reach before the next message starts another: far
/// below any socket's message size limit, so a batch is never refused where
/// its messages alone would have passed.
pub const BATCH_BYTES_MAX: usize = 1 << 20;

/// Whether `frames` (header first, after any identity) is a BATCH.
pub fn is_batch(frames: &[Bytes]) -> bool {
    matches!(frames, [_, c, ..] if c.as_ref() == [BATCH])
}

/// The items of a BATCH, each as a whole message (header first).
///
/// ```
/// use bytes::Bytes;
/// use zmesh_wire::mdp::batch::{join, split};
/// let a = vec![Bytes::from_static(b"ZMDPC1"), Bytes::from_static(b"\x03"), Bytes::from_static(b"x")];
/// let b = vec![Bytes::from_static(b"ZMDPC1"), Bytes::from_static(b"\x04")];
/// let joined = join(&[a.clone(), b.clone()]);
/// assert_eq!(joined.len(), 3, "header, BATCH, one packed frame");
/// assert_eq!(split(&joined).unwrap(), vec![a, b]);
/// ```
pub fn split(frames: &[Bytes]) -> Result<Vec<Vec<Bytes>>, MdpError> {
    let [header, _batch, packed] = frames else {
        return Err(MdpError::BadBatch("not one packed frame"));
    };
    let mut rest = packed.clone();
    let mut items = Vec::new();
    while rest.has_remaining() {
        if items.len() == BATCH_ITEMS_MAX {
            return Err(MdpError::BadBatch("too many items"));
        }
        if rest.remaining() < 4 {
            return Err(MdpError::BadBatch("truncated frame count"));
        }
        let count = rest.get_u32() as usize;
        if count == 0 {
            return Err(MdpError::BadBatch("an item with no frames"));
        }
        // Each frame takes 4 bytes at least: a larger count is a lie.
        if count > rest.remaining() / 4 {
            return Err(MdpError::BadBatch("truncated frame length"));
        }
        let mut item = Vec::with_capacity(count + 1);
        item.push(header.clone());
        for _ in 0..count {
            if rest.remaining() < 4 {
                return Err(MdpError::BadBatch("truncated frame length"));
            }
            let len = rest.get_u32() as usize;
            if rest.remaining() < len {
                return Err(MdpError::BadBatch("frame longer than the batch"));
            }
            item.push(rest.split_to(len));
        }
        if item[1].as_ref() == [BATCH] {
            return Err(MdpError::BadBatch("batches do not nest"));
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(MdpError::BadBatch("no items"));
    }
    Ok(items)
}

/// `messages` (each header first, one protocol) as few ZeroMQ messages as the
/// limits allow: a lone message as it is, several as BATCHes of at most
/// [`BATCH_ITEMS_MAX`] items and [`BATCH_BYTES_MAX`] bytes; a message larger
/// than that goes alone.
///
/// ```
/// use bytes::Bytes;
/// use zmesh_wire::mdp::batch::pack;
/// let m = |b: &'static [u8]| vec![Bytes::from_static(b"ZMDPC1"), Bytes::from_static(b"\x03"), Bytes::from_static(b)];
/// assert_eq!(pack(vec![m(b"a")]), vec![m(b"a")]);
/// assert_eq!(pack(vec![m(b"a"), m(b"b")]).len(), 1);
/// ```
pub fn pack(messages: Vec<Vec<Bytes>>) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut group: Vec<Vec<Bytes>> = Vec::new();
    let mut bytes = 0;
    let flush = |group: &mut Vec<Vec<Bytes>>, out: &mut Vec<Vec<Bytes>>| match group.len() {
        0 => {}
        1 => out.push(group.pop().expect("one")),
        _ => out.push(join(&std::mem::take(group))),
    };
    for m in messages {
        let size: usize = m.iter().map(Bytes::len).sum();
        if !group.is_empty() && (group.len() == BATCH_ITEMS_MAX || bytes + size > BATCH_BYTES_MAX) {
            flush(&mut group, &mut out);
            bytes = 0;
        }
        bytes += size;
        group.push(m);
    }
    flush(&mut group, &mut out);
    out
}

/// One BATCH of `messages`, which all start with the same header.
pub fn join(messages: &[Vec<Bytes>]) -> Vec<Bytes> {
    let mut w = BatchWriter::new(messages.first().and_then(|m| m.first()).cloned());
    for m in messages {
        w.push(m);
    }
    w.finish()
}

/// A BATCH being built, one message at a time.
pub struct BatchWriter {
    header: Option<Bytes>,
    packed: BytesMut,
    items: usize,
}

impl BatchWriter {
    /// An empty batch under `header` (else the first message's).
    pub fn new(header: Option<Bytes>) -> Self {
        Self {
            header,
            packed: BytesMut::new(),
            items: 0,
        }
    }

    /// Append message `m` (header first).
    pub fn push(&mut self, m: &[Bytes]) {
        let Some((header, frames)) = m.split_first() else {
            return;
        };
        self.header.get_or_insert_with(|| header.clone());
        let size: usize = frames.iter().map(|f| 4 + f.len()).sum();
        self.packed.reserve(4 + size);
        // Frame counts and lengths fit in 4 bytes: a ZeroMQ message is far
        // below 4 GiB under any socket's message size limit.
        self.packed.put_u32(frames.len() as u32);
        for f in frames {
            self.packed.put_u32(f.len() as u32);
            self.packed.put_slice(f);
        }
        self.items += 1;
    }

    /// Items so far.
    pub fn items(&self) -> usize {
        self.items
    }

    /// The message: header, BATCH, the packed items.
    pub fn finish(self) -> Vec<Bytes> {
        vec![
            self.header.unwrap_or_default(),
            Bytes::from_static(&[BATCH]),
            self.packed.freeze(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn refuses_truncated_empty_and_nested_batches() {
        let bad = |packed: &[u8]| {
            split(&[
                Bytes::from_static(b"ZMDPW1"),
                Bytes::from_static(b"\x10"),
                Bytes::copy_from_slice(packed),
            ])
            .unwrap_err()
        };
        assert_eq!(bad(b""), MdpError::BadBatch("no items"));
        assert_eq!(bad(b"\0\0"), MdpError::BadBatch("truncated frame count"));
        assert_eq!(
            bad(b"\0\0\0\0"),
            MdpError::BadBatch("an item with no frames")
        );
        assert_eq!(
            bad(b"\0\0\0\x01\0\0"),
            MdpError::BadBatch("truncated frame length")
        );
        assert_eq!(
            bad(b"\xff\xff\xff\xff\0\0\0\0"),
            MdpError::BadBatch("truncated frame length")
        );
        assert_eq!(
            bad(b"\0\0\0\x01\0\0\0\x02\x05"),
            MdpError::BadBatch("frame longer than the batch")
        );
        assert_eq!(
            bad(b"\0\0\0\x01\0\0\0\x01\x10"),
            MdpError::BadBatch("batches do not nest")
        );
        assert_eq!(
            split(&f(&[b"ZMDPW1", b"\x10", b"\0\0\0\x01", b"\0\0\0\x01\x05"])).unwrap_err(),
            MdpError::BadBatch("not one packed frame")
        );
        let mut long = Vec::new();
        for _ in 0..=BATCH_ITEMS_MAX {
            long.extend_from_slice(b"\0\0\0\x01\0\0\0\x01\x05");
        }
        assert_eq!(bad(&long), MdpError::BadBatch("too many items"));
    }

    #[test]
    fn pack_keeps_order_and_stays_within_the_limits() {
        let big = Bytes::from(vec![1u8; BATCH_BYTES_MAX / 2]);
        let m =
            |i: u8, body: Bytes| vec![Bytes::from_static(b"ZMDPC1"), Bytes::from(vec![i]), body];
        let msgs: Vec<_> = (0..5).map(|i| m(i, big.clone())).collect();
        let out = pack(msgs.clone());
        assert!(out.len() >= 3, "1 MiB at most per batch");
        let back: Vec<Vec<Bytes>> = out
            .iter()
            .flat_map(|o| {
                if is_batch(o) {
                    split(o).unwrap()
                } else {
                    vec![o.clone()]
                }
            })
            .collect();
        assert_eq!(back, msgs);
        let huge = m(9, Bytes::from(vec![2u8; 2 * BATCH_BYTES_MAX]));
        assert_eq!(
            pack(vec![huge.clone()]),
            vec![huge],
            "too big for a batch: alone"
        );
        let many: Vec<_> = (0..BATCH_ITEMS_MAX + 1)
            .map(|_| m(1, Bytes::new()))
            .collect();
        assert_eq!(pack(many).len(), 2);
    }

    #[test]
    fn empty_frames_and_large_bodies_survive_the_round_trip() {
        let big = vec![7u8; 100_000];
        let items = vec![
            f(&[b"ZMDPC1", b"\x01", b"12345678", b"svc", b"", &big]),
            f(&[b"ZMDPC1", b"\x01", b"abcdefgh", b"svc"]),
        ];
        assert_eq!(split(&join(&items)).unwrap(), items);
    }
}
