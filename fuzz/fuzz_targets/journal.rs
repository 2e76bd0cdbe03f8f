//! Bytes read back from disk: the log's record decoder and the queue journal
//! decoder never panic, and whatever decodes re-encodes to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zmesh_broker::queue::journal::Entry;
use zmesh_log::record::{Decoded, decode};

fuzz_target!(|data: &[u8]| {
    if let Decoded::Record { payload, .. } = decode(data, 1 << 20) {
        assert!(payload.end <= data.len());
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Some(e) = Entry::decode(&bytes) {
        assert_eq!(Entry::decode(&e.encode()), Some(e));
    }
});
