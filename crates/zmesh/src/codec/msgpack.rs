//! MessagePack through rmp-serde, structs as maps with field names.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::{Codec, CodecError, Decode, Encode, Format};

/// MessagePack. Structs are encoded as maps keyed by field name — what Python's
/// `msgpack.packb(dict)` and Go's msgpack libraries produce and expect.
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgPack;

impl Codec for MsgPack {
    const FORMAT: Format = Format::MsgPack;
}

impl<T: Serialize> Encode<MsgPack> for T {
    fn encode(&self) -> Result<Bytes, CodecError> {
        rmp_serde::to_vec_named(self)
            .map(Bytes::from)
            .map_err(|e| CodecError::Encode {
                format: "msgpack",
                reason: e.to_string(),
            })
    }
}

impl<T: DeserializeOwned> Decode<MsgPack> for T {
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode {
            format: "msgpack",
            len: bytes.len(),
            reason: e.to_string(),
        })
    }
}
