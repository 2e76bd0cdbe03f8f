//! Codecs: typed payloads in the formats other languages speak.
//!
//! - [`Json`] — `serde_json`, UTF-8 JSON text (Python `json`, Go `encoding/json`).
//! - [`MsgPack`] — `rmp-serde` with named fields, i.e. maps (Python `msgpack`,
//!   Go `vmihailenco/msgpack`), so field order and additions don't break peers.
//! - [`Protobuf`] — `prost` messages (any protobuf runtime).
//!
//! The codec is a type parameter, so it can be fixed per socket
//! ([`crate::TypedSocket`]) or picked per message
//! ([`crate::Socket::send_as`] / [`crate::Socket::recv_as`]). [`Format`]
//! names a codec at run time (config files, the CLI).
//!
//! ```
//! use zmesh::codec::{Encode, Decode, Json, MsgPack};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Order { id: u64, item: String }
//! let o = Order { id: 7, item: "tea".into() };
//! let bytes = <Order as Encode<Json>>::encode(&o).unwrap();
//! assert_eq!(&bytes[..], br#"{"id":7,"item":"tea"}"#);
//! let back = <Order as Decode<MsgPack>>::decode(&<Order as Encode<MsgPack>>::encode(&o).unwrap()).unwrap();
//! assert_eq!(back, o);
//! ```

mod json;
mod msgpack;
mod protobuf;

use bytes::Bytes;

pub use json::Json;
pub use msgpack::MsgPack;
pub use protobuf::Protobuf;

/// A payload that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Caller: the value cannot be represented in the format.
    #[error("cannot encode as {format}: {reason}")]
    Encode {
        /// The format's name.
        format: &'static str,
        /// Why.
        reason: String,
    },
    /// Peer: the bytes received are not a valid value of the expected type.
    #[error("cannot decode {len} bytes as {format}: {reason}")]
    Decode {
        /// The format's name.
        format: &'static str,
        /// Size of the input.
        len: usize,
        /// Why.
        reason: String,
    },
    /// Caller: a format name that zmesh does not know.
    #[error("unknown format {0:?} (expected json, msgpack or protobuf)")]
    UnknownFormat(String),
}

/// A wire format. Implemented by the zero-sized markers [`Json`], [`MsgPack`], [`Protobuf`].
pub trait Codec: Send + Sync + 'static {
    /// The format's short name.
    const FORMAT: Format;
}

/// Encode a value in codec `C`.
pub trait Encode<C: Codec> {
    /// The value's bytes in format `C`.
    fn encode(&self) -> Result<Bytes, CodecError>;
}

/// Decode a value from codec `C`.
pub trait Decode<C: Codec>: Sized {
    /// Parse bytes in format `C`.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

/// A format chosen at run time.
///
/// ```
/// let f: zmesh::codec::Format = "msgpack".parse().unwrap();
/// assert_eq!(f.as_str(), "msgpack");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON text.
    Json,
    /// MessagePack.
    MsgPack,
    /// Protocol Buffers.
    Protobuf,
}

impl Format {
    /// The format's short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MsgPack => "msgpack",
            Self::Protobuf => "protobuf",
        }
    }

    /// Convert a self-describing payload (JSON or MessagePack) to another
    /// self-describing format, through a dynamic value. Protobuf is not
    /// self-describing and is refused.
    pub fn transcode(self, to: Format, bytes: &[u8]) -> Result<Bytes, CodecError> {
        let value: serde_json::Value = match self {
            Self::Json => <serde_json::Value as Decode<Json>>::decode(bytes)?,
            Self::MsgPack => <serde_json::Value as Decode<MsgPack>>::decode(bytes)?,
            Self::Protobuf => {
                return Err(CodecError::Decode {
                    format: "protobuf",
                    len: bytes.len(),
                    reason: "protobuf needs a schema; it cannot be transcoded dynamically".into(),
                });
            }
        };
        match to {
            Self::Json => <serde_json::Value as Encode<Json>>::encode(&value),
            Self::MsgPack => <serde_json::Value as Encode<MsgPack>>::encode(&value),
            Self::Protobuf => Err(CodecError::Encode {
                format: "protobuf",
                reason: "protobuf needs a schema; it cannot be transcoded dynamically".into(),
            }),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "msgpack" | "messagepack" | "mpk" => Ok(Self::MsgPack),
            "protobuf" | "proto" | "pb" => Ok(Self::Protobuf),
            _ => Err(CodecError::UnknownFormat(s.to_owned())),
        }
    }
}
