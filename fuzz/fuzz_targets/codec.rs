//! The codecs on untrusted payloads: decoding arbitrary bytes as JSON or
//! MessagePack returns an error or a value, never panics; values re-encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmesh::codec::{Decode, Encode, Format, Json, MsgPack};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = <serde_json::Value as Decode<Json>>::decode(data) {
        let _ = <serde_json::Value as Encode<MsgPack>>::encode(&v);
    }
    if let Ok(v) = <serde_json::Value as Decode<MsgPack>>::decode(data) {
        let _ = <serde_json::Value as Encode<Json>>::encode(&v);
    }
    let _ = Format::MsgPack.transcode(Format::Json, data);
});
