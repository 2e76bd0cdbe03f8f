//! A stream whose disk fills while publishes wait in the write buffer: a
//! failed write must fail every record it lost, and no sequence number may
//! be answered STORED that is not on disk with that message. Its own test
//! binary: the file size limit standing in for a full disk is the
//! process's.

mod common;

use std::collections::BTreeMap;

use common::{Streams, largest_file, limit_file_size, temp_dir};
use zmesh::clock::ManualClock;
use zmesh_broker::stream::{StreamStore, StreamStoreConfig};
use zmesh_log::LogConfig;

fn open(config: &StreamStoreConfig, clock: &ManualClock) -> Streams {
    let (store, _) = StreamStore::open(config.clone()).expect("open the streams");
    Streams {
        store,
        clock: clock.clone(),
        sent: Vec::new(),
    }
}

/// Each STORED answer to `p`: the message (by its corr) and its sequence.
fn stored(s: &mut Streams) -> BTreeMap<String, u64> {
    s.take("p", "STORED")
        .iter()
        .map(|f| {
            let text = |i: usize| String::from_utf8(f[i].to_vec()).unwrap();
            (text(3), text(4).parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_failed_flush_fails_every_record_it_lost_and_stores_nothing_twice() {
    // With a handler installed, a write past the limit fails with EFBIG
    // instead of SIGXFSZ ending the process.
    let _xfsz =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
            .unwrap();
    let dir = temp_dir("stream-failed-flush");
    let clock = ManualClock::new();
    let config = StreamStoreConfig {
        data_dir: dir.clone(),
        log: LogConfig {
            write_buffer_bytes: 4096,
            ..LogConfig::default()
        },
        clock: clock.shared(),
        ..StreamStoreConfig::default()
    };
    let mut s = open(&config, &clock);
    s.send("admin", &["CREATE", "c", "ev", ""]);
    let body = |i: usize| format!("m{i:03}-{}", "x".repeat(500));
    let mut answered = BTreeMap::new();
    for i in 0..3 {
        s.send(
            "p",
            &["PUBLISH", &format!("m{i:03}"), "ev", "ev.x", &body(i)],
        );
    }
    s.sync().await;
    answered.extend(stored(&mut s));
    assert_eq!(answered.len(), 3);

    // Room for 3,000 more bytes: each append that fills the 4 KiB buffer
    // (the 8th and 16th of this window) writes past it and fails; the last
    // 4, written at the end of the batch, fit.
    limit_file_size(Some(largest_file(&dir) + 3_000));
    for i in 3..23 {
        s.send(
            "p",
            &["PUBLISH", &format!("m{i:03}"), "ev", "ev.x", &body(i)],
        );
    }
    s.sync().await;
    limit_file_size(None);
    let window = stored(&mut s);
    let refused = s.take("p", "ERROR");
    assert_eq!(
        window.len() + refused.len(),
        20,
        "each publish answered once"
    );
    assert!(!refused.is_empty(), "the limit bit");
    answered.extend(window);

    // The disk frees up: publishing goes on.
    for i in 23..26 {
        s.send(
            "p",
            &["PUBLISH", &format!("m{i:03}"), "ev", "ev.x", &body(i)],
        );
    }
    s.sync().await;
    answered.extend(stored(&mut s));

    // No sequence answered twice.
    let mut by_seq: BTreeMap<u64, &String> = BTreeMap::new();
    for (id, seq) in &answered {
        if let Some(other) = by_seq.insert(*seq, id) {
            panic!("sequence {seq} answered STORED for both {other} and {id}");
        }
    }

    // After a restart, each STORED sequence holds its own message.
    drop(s);
    let mut s = open(&config, &clock);
    s.send(
        "c",
        &["SUBSCRIBE", "s", "ev", "all", "ev.>", "first", "1000"],
    );
    s.sync().await;
    let on_disk: BTreeMap<u64, String> = s
        .messages("c")
        .into_iter()
        .map(|(seq, _, body)| (seq, body))
        .collect();
    for (id, seq) in &answered {
        let found = on_disk.get(seq).map(|b| &b[..4]);
        assert_eq!(
            found,
            Some(&id[..]),
            "STORED {id} at {seq}; on disk {found:?}"
        );
    }
}
