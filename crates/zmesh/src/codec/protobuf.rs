//! Protocol Buffers through prost.
//!
//! Generate message types with `prost-build` and `protox` in a build script —
//! no system `protoc` is needed (see `crates/zmesh-cli/build.rs`).

use bytes::Bytes;

use super::{Codec, CodecError, Decode, Encode, Format};

/// Protocol Buffers (proto3 wire format).
#[derive(Clone, Copy, Debug, Default)]
pub struct Protobuf;

impl Codec for Protobuf {
    const FORMAT: Format = Format::Protobuf;
}

impl<T: prost::Message> Encode<Protobuf> for T {
    fn encode(&self) -> Result<Bytes, CodecError> {
        Ok(Bytes::from(self.encode_to_vec()))
    }
}

impl<T: prost::Message + Default> Decode<Protobuf> for T {
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        <T as prost::Message>::decode(bytes).map_err(|e| CodecError::Decode {
            format: "protobuf",
            len: bytes.len(),
            reason: e.to_string(),
        })
    }
}
