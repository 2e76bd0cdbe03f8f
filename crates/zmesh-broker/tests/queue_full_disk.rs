//! A queue whose disk fills while a window of publishes waits in the write
//! buffer: a failed write must fail every publish it lost, and after a
//! restart every CONFIRMED message is there, with its own body. Its own test
//! binary: the file size limit standing in for a full disk is the process's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use common::{largest_file, limit_file_size, queue_frames, text};
use zmesh::clock::ManualClock;
use zmesh_broker::queue::{QueueCoreConfig, QueueStore, QueueStoreConfig};
use zmesh_broker::storage::Sends;
use zmesh_log::LogConfig;

fn body(i: usize) -> String {
    format!("m{i:03}-{}", "x".repeat(500))
}

struct Queues {
    store: QueueStore,
    sent: Sends,
}

impl Queues {
    fn open(config: &QueueStoreConfig) -> Queues {
        let (store, _) = QueueStore::open(config.clone()).expect("open the queues");
        Queues {
            store,
            sent: Vec::new(),
        }
    }

    fn send(&mut self, from: &str, parts: &[&str]) {
        let s = self
            .store
            .handle(&Bytes::from(from.to_owned()), &queue_frames(parts));
        self.sent.extend(s);
    }

    async fn sync(&mut self) {
        let s = self.store.end_batch();
        self.sent.extend(s);
        while !self.store.idle() {
            let r = tokio::time::timeout(Duration::from_secs(10), self.store.disk_done())
                .await
                .expect("the syncer answers");
            let s = self.store.on_disk_done(r);
            self.sent.extend(s);
            let s = self.store.end_batch();
            self.sent.extend(s);
        }
    }

    /// The frames of every `cmd` sent to `to`, taken out.
    fn take(&mut self, to: &str, cmd: &str) -> Vec<Vec<Bytes>> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(p, f)| p == to && f.get(2).is_some_and(|c| c == cmd.as_bytes()));
        self.sent = rest;
        mine.into_iter().map(|(_, f)| f).collect()
    }

    /// Each CONFIRM to `p`: the message (by its corr) and its tag.
    fn confirmed(&mut self) -> BTreeMap<String, String> {
        self.take("p", "CONFIRM")
            .iter()
            .map(|f| (text(&f[3]), text(&f[4])))
            .collect()
    }

    fn publish(&mut self, range: std::ops::Range<usize>) {
        for i in range {
            let id = format!("m{i:03}");
            self.send("p", &["PUBLISH", &id, "jobs", &id, &body(i)]);
        }
    }
}

#[tokio::test]
async fn a_failed_flush_fails_every_publish_it_lost_and_a_restart_keeps_every_confirmed_one() {
    // With a handler installed, a write past the limit fails with EFBIG
    // instead of SIGXFSZ ending the process.
    let _xfsz =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("zmesh-queue-full-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = QueueStoreConfig {
        data_dir: dir.clone(),
        log: LogConfig {
            write_buffer_bytes: 4096,
            ..LogConfig::default()
        },
        // Bodies read back from the journal after the restart.
        core: QueueCoreConfig {
            bytes_max: 0,
            ..QueueCoreConfig::default()
        },
        clock: ManualClock::new().shared(),
        ..QueueStoreConfig::default()
    };
    let mut q = Queues::open(&config);
    q.send(
        "admin",
        &["DECLARE", "d", "jobs", r#"{"durability": "group"}"#],
    );
    q.sync().await;
    assert_eq!(q.take("admin", "OK").len(), 1);
    q.publish(0..3);
    q.sync().await;
    let mut confirmed = q.confirmed();
    assert_eq!(confirmed.len(), 3);

    // Room for 3,000 more bytes: each append that fills the 4 KiB buffer
    // writes past it and fails, taking the publishes buffered before it.
    limit_file_size(Some(largest_file(&dir) + 3_000));
    q.publish(3..23);
    q.sync().await;
    limit_file_size(None);
    let window = q.confirmed();
    let refused: BTreeSet<String> = q
        .take("p", "ERROR")
        .iter()
        .map(|f| {
            assert_eq!(text(&f[4]), "507", "{f:?}");
            text(&f[3])
        })
        .collect();
    assert_eq!(
        window.len() + refused.len(),
        20,
        "each publish answered once"
    );
    assert!(!refused.is_empty(), "the limit bit");
    assert!(window.keys().all(|id| !refused.contains(id)));
    confirmed.extend(window);

    // The disk frees up: publishing goes on.
    q.publish(23..26);
    q.sync().await;
    confirmed.extend(q.confirmed());
    let tags: BTreeSet<&String> = confirmed.values().collect();
    assert_eq!(tags.len(), confirmed.len(), "no tag confirmed twice");

    // After a restart every confirmed message is in line, with its own body.
    drop(q);
    let mut q = Queues::open(&config);
    q.send("c", &["CONSUME", "x", "jobs", "1000"]);
    q.sync().await;
    let delivered: BTreeMap<String, String> = q
        .take("c", "DELIVER")
        .iter()
        .map(|f| (text(&f[6]), text(&f[7])))
        .collect();
    let confirmed_ids: BTreeSet<&String> = confirmed.keys().collect();
    let missing: Vec<_> = confirmed_ids
        .iter()
        .filter(|id| !delivered.contains_key(**id))
        .collect();
    assert!(missing.is_empty(), "confirmed and lost: {missing:?}");
    for (id, b) in &delivered {
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(b, &body(i), "the body stored with {id}");
    }
    drop(q);
    let _ = std::fs::remove_dir_all(&dir);
}
