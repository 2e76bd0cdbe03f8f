//! Packed BATCH bytes from untrusted peers: never a panic; what splits joins
//! back to the same bytes; the broker stays within its bounds.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zmesh_broker::mdp::{Broker, BrokerConfig, coalesce};
use zmesh_wire::mdp::batch::{join, split};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the protocol and the sending peer; the rest is the packed frame.
    let Some((&sel, packed)) = data.split_first() else { return };
    let header: &'static [u8] = if sel & 1 == 0 { b"ZMDPC1" } else { b"ZMDPW1" };
    let frames = vec![
        Bytes::from_static(header),
        Bytes::from_static(&[0x10]),
        Bytes::copy_from_slice(packed),
    ];
    if let Ok(items) = split(&frames) {
        assert_eq!(join(&items), frames, "split and join are inverses");
    }
    let mut broker = Broker::new(BrokerConfig {
        queue_max: 4,
        requests_max: 8,
        slots_max: 16,
        services_max: 4,
        ..Default::default()
    });
    let t = Instant::now();
    for i in 0..3u8 {
        let peer = Bytes::from(vec![sel.wrapping_add(i % 2)]);
        let _ = coalesce(broker.handle(t, &peer, &frames));
        let _ = coalesce(broker.tick(t + Duration::from_secs(u64::from(i) * 5)));
    }
    assert!(broker.requests_held() <= 8);
});
