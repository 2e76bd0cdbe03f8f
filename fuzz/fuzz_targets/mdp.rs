//! Majordomo frames from untrusted peers, into the broker core: never a panic,
//! and the broker stays within its bounds whatever arrives.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zmesh_broker::mdp::{Broker, BrokerConfig};

fuzz_target!(|data: &[u8]| {
    // Frames separated by 0xff; the first byte picks the sending peer.
    let Some((&who, rest)) = data.split_first() else { return };
    let frames: Vec<Bytes> = rest.split(|b| *b == 0xff).map(Bytes::copy_from_slice).collect();
    let _ = zmesh_wire::mdp::parse(&frames);
    let mut broker = Broker::new(BrokerConfig { queue_max: 4, requests_max: 8, ..Default::default() });
    let t = Instant::now();
    for i in 0..4u8 {
        let peer = Bytes::from(vec![who.wrapping_add(i % 2)]);
        broker.handle(t, &peer, &frames);
        broker.tick(t + Duration::from_secs(u64::from(i) * 5));
        broker.check_invariants();
    }
    assert!(broker.requests_held() <= 8);
});
