//! JSON through serde_json.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::{Codec, CodecError, Decode, Encode, Format};

/// JSON (UTF-8 text, RFC 8259).
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    const FORMAT: Format = Format::Json;
}

impl<T: Serialize> Encode<Json> for T {
    fn encode(&self) -> Result<Bytes, CodecError> {
        serde_json::to_vec(self)
            .map(Bytes::from)
            .map_err(|e| CodecError::Encode {
                format: "json",
                reason: e.to_string(),
            })
    }
}

impl<T: DeserializeOwned> Decode<Json> for T {
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Decode {
            format: "json",
            len: bytes.len(),
            reason: e.to_string(),
        })
    }
}
