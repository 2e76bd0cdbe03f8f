//! Frames from cluster peers: requests and replies never panic the decoder,
//! and whatever decodes encodes to bytes that decode and encode to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zmesh_cluster::{Reply, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        let once = request.encode().expect("a decoded request encodes");
        let twice = Request::decode(&once).expect("re-decodes").encode().unwrap();
        assert_eq!(once, twice);
    }
    if let Ok(reply) = Reply::decode(data) {
        let once = reply.encode().expect("a decoded reply encodes");
        let twice = Reply::decode(&once).expect("re-decodes").encode().unwrap();
        assert_eq!(once, twice);
    }
});
