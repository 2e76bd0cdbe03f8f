//! ZMCH02 frames from an untrusted peer: the parser never panics, whatever
//! parses re-encodes to itself, and the receiver core stays in its window.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zmesh_channel::proto::Frame;
use zmesh_channel::receiver::ReceiverCore;

fuzz_target!(|data: &[u8]| {
    let mut frames = vec![Bytes::new(), Bytes::from_static(zmesh_channel::proto::PROTOCOL)];
    frames.extend(data.split(|b| *b == 0xff).map(Bytes::copy_from_slice));
    if let Some(f) = Frame::parse(&frames) {
        assert_eq!(Frame::parse(&f.encode()), Some(f.clone()));
        let mut r = ReceiverCore::new(5, 8);
        if let Frame::Data { seq, .. } = f {
            r.on_data(seq);
        }
        assert!(r.received <= r.committed + r.window);
    }
});
