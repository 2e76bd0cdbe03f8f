//! Streams read off the loop: while the disk holds a subscriber's fetch, the
//! store goes on storing publishes; an answer to a fetch of a subscription
//! that was since replaced under the same id is no one's (it would move the
//! new one's cursor past messages it never got).

mod common;

use std::time::{Duration, Instant};

use common::{Streams, peer, temp_dir};
use zmesh::clock::ManualClock;
use zmesh_broker::stream::{StreamStore, StreamStoreConfig};
use zmesh_log::LogConfig;
use zmesh_log::faulty::{Faults, Op};

/// Hand the store what the disk finishes until `done` holds.
async fn until(s: &mut Streams, what: &str, done: impl Fn(&Streams) -> bool) {
    while !done(s) {
        let d = tokio::time::timeout(Duration::from_secs(20), s.store.disk_done())
            .await
            .unwrap_or_else(|_| panic!("waiting for {what}"));
        let sent = s.store.on_disk_done(d);
        s.sent.extend(sent);
        let sent = s.store.end_batch();
        s.sent.extend(sent);
    }
}

fn stored(s: &Streams) -> usize {
    s.sent
        .iter()
        .filter(|(p, f)| *p == peer("p") && f[2] == "STORED")
        .count()
}

#[tokio::test]
async fn a_held_fetch_stalls_its_subscriber_only_and_a_replaced_one_ignores_it() {
    let dir = temp_dir("stream-reads");
    let faults = Faults::default();
    let clock = ManualClock::new();
    let config = StreamStoreConfig {
        data_dir: dir.clone(),
        log: LogConfig {
            files: faults.files(),
            ..LogConfig::default()
        },
        clock: clock.shared(),
        ..StreamStoreConfig::default()
    };
    let (store, _) = StreamStore::open(config).expect("open the streams");
    let mut s = Streams {
        store,
        clock,
        sent: Vec::new(),
    };
    s.send("admin", &["CREATE", "c", "ev", ""]);
    for i in 0..10 {
        s.send(
            "p",
            &["PUBLISH", &i.to_string(), "ev", "ev.x", &format!("m{i}")],
        );
    }
    s.sync().await;
    assert_eq!(stored(&s), 10);

    // The disk stops answering reads: the subscriber's first fetch waits.
    faults.hold(Op::Read);
    s.send(
        "sub",
        &["SUBSCRIBE", "a", "ev", "s1", "ev.>", "seq:8", "1000"],
    );
    let sent = s.store.end_batch();
    s.sent.extend(sent);
    let deadline = Instant::now() + Duration::from_secs(20);
    while faults.held(Op::Read) == 0 {
        assert!(Instant::now() < deadline, "no fetch started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Meanwhile publishes are stored and answered.
    s.send("p", &["PUBLISH", "10", "ev", "ev.x", "m10"]);
    let sent = s.store.end_batch();
    s.sent.extend(sent);
    until(&mut s, "STORED of m10", |s| stored(s) == 11).await;
    assert!(s.messages("sub").is_empty(), "the fetch is still held");

    // The subscription is replaced under the same id, from the first
    // message on: the held fetch (from 8) must not move it past 0..7.
    s.send("sub", &["UNSUBSCRIBE", "b", "s1"]);
    s.send(
        "sub",
        &["SUBSCRIBE", "c", "ev", "s1", "ev.>", "first", "1000"],
    );
    faults.release(Op::Read);
    s.sync().await;
    s.send("p", &["PUBLISH", "11", "ev", "ev.x", "m11"]);
    s.sync().await;
    let got: Vec<(u64, String)> = s.messages("sub").into_iter().map(|m| (m.0, m.2)).collect();
    let expected: Vec<(u64, String)> = (0..12).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(got, expected, "every message once, in order");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
