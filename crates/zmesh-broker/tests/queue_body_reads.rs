//! Bodies kept on disk are read back off the loop: while the disk holds a
//! read, the store goes on (it takes publishes and acks, and confirms), and
//! a consumer still gets its messages in the order they were decided, the
//! in-memory ones waiting behind the ones being read.

mod common;

use std::time::{Duration, Instant};

use common::{queue_frames, temp_dir, text};
use zmesh::clock::ManualClock;
use zmesh_broker::queue::{QueueCoreConfig, QueueStore, QueueStoreConfig};
use zmesh_broker::storage::Sends;
use zmesh_log::LogConfig;
use zmesh_log::faulty::{Faults, Op};

fn body(i: usize) -> String {
    format!("m{i}-{}", "x".repeat(94))
}

struct Queues {
    store: QueueStore,
    sent: Sends,
}

impl Queues {
    fn send(&mut self, from: &str, parts: &[&str]) {
        let s = self
            .store
            .handle(&bytes::Bytes::from(from.to_owned()), &queue_frames(parts));
        self.sent.extend(s);
        let s = self.store.end_batch();
        self.sent.extend(s);
    }

    fn publish(&mut self, ids: std::ops::Range<usize>) {
        for i in ids {
            let (corr, id) = (format!("c{i}"), format!("m{i}"));
            self.send("p", &["PUBLISH", &corr, "jobs", &id, &body(i)]);
        }
    }

    /// Hand the store what the disk finishes until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&Queues) -> bool) {
        while !done(self) {
            let d = tokio::time::timeout(Duration::from_secs(20), self.store.disk_done())
                .await
                .unwrap_or_else(|_| panic!("waiting for {what}"));
            let s = self.store.on_disk_done(d);
            self.sent.extend(s);
        }
    }

    /// The ids of the DELIVERs sent to `to` so far, in order, each checked
    /// against its body.
    fn delivered(&self, to: &str) -> Vec<String> {
        self.sent
            .iter()
            .filter(|(p, f)| p == to && f[2] == "DELIVER")
            .map(|(_, f)| {
                let id = text(&f[6]);
                let i: usize = id[1..].parse().unwrap();
                assert_eq!(text(&f[7]), body(i), "the body stored with {id}");
                id
            })
            .collect()
    }

    fn tags(&self, to: &str) -> Vec<String> {
        self.sent
            .iter()
            .filter(|(p, f)| p == to && f[2] == "DELIVER")
            .map(|(_, f)| text(&f[4]))
            .collect()
    }

    fn confirmed(&self) -> usize {
        self.sent
            .iter()
            .filter(|(p, f)| p == "p" && f[2] == "CONFIRM")
            .count()
    }
}

/// A store on `faults`' disk with room for `bodies_in_memory` bodies, and
/// the queue `jobs` (durability `os`) declared.
impl Queues {
    async fn open(dir: &std::path::Path, faults: &Faults, bodies_in_memory: u64) -> Queues {
        let config = QueueStoreConfig {
            data_dir: dir.to_path_buf(),
            log: LogConfig {
                files: faults.files(),
                ..LogConfig::default()
            },
            core: QueueCoreConfig {
                bytes_max: bodies_in_memory * body(0).len() as u64,
                ..QueueCoreConfig::default()
            },
            clock: ManualClock::new().shared(),
            ..QueueStoreConfig::default()
        };
        let (store, _) = QueueStore::open(config).expect("open the queues");
        let mut q = Queues {
            store,
            sent: Vec::new(),
        };
        q.send(
            "admin",
            &["DECLARE", "d", "jobs", r#"{"durability": "os"}"#],
        );
        q.until("the catalog saved", |q| q.store.idle()).await;
        q
    }
}

#[tokio::test]
async fn a_held_read_stalls_its_consumer_only_and_order_is_kept() {
    let dir = temp_dir("queue-body-reads");
    let faults = Faults::default();
    // Room for two bodies in memory: later ones are read back.
    let mut q = Queues::open(&dir, &faults, 2).await;
    q.publish(0..6);
    assert_eq!(q.confirmed(), 6);
    let in_memory = q.store.core().bytes_in_memory();
    assert_eq!(in_memory, 2 * body(0).len() as u64, "m0 and m1 in memory");

    // The disk stops answering reads: the consumer gets what is in memory.
    faults.hold(Op::Read);
    q.send("c", &["CONSUME", "x", "jobs", "100"]);
    assert_eq!(q.delivered("c"), ["m0", "m1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while faults.held(Op::Read) == 0 {
        assert!(Instant::now() < deadline, "no read of m2 started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Meanwhile the store goes on: acks free memory, new publishes are
    // confirmed and kept in memory, and their DELIVERs wait behind m2..m5.
    let tags = q.tags("c");
    q.send("c", &["ACK", "jobs", &tags[0], &tags[1]]);
    assert_eq!(q.store.core().bytes_in_memory(), 0);
    q.publish(6..8);
    assert_eq!(q.confirmed(), 8);
    assert_eq!(
        q.store.core().bytes_in_memory(),
        in_memory,
        "m6 and m7 in memory"
    );
    assert_eq!(q.delivered("c"), ["m0", "m1"], "nothing overtakes m2");
    assert!(!q.store.idle(), "reads in flight");
    assert!(faults.held(Op::Read) > 0, "the read is still held");

    faults.release(Op::Read);
    q.until("the DELIVERs", |q| q.store.idle()).await;
    let expect: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    assert_eq!(q.delivered("c"), expect);
    assert_eq!(q.store.core().counters.storage_errors, 0);
    drop(q);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A consumer that leaves while its bodies are read gets none of them when
/// the reads come back: its messages went back in line and to the next
/// consumer, who gets each once.
#[tokio::test]
async fn a_delivery_released_while_its_body_is_read_is_not_sent() {
    let dir = temp_dir("queue-body-reads-released");
    let faults = Faults::default();
    let mut q = Queues::open(&dir, &faults, 0).await;
    q.publish(0..4);
    assert_eq!(q.confirmed(), 4);
    faults.hold(Op::Read);
    q.send("c1", &["CONSUME", "x", "jobs", "10"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while faults.held(Op::Read) == 0 {
        assert!(Instant::now() < deadline, "no read started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sent = q.store.connection_closed(&bytes::Bytes::from_static(b"c1"));
    q.sent.extend(sent);
    q.send("c2", &["CONSUME", "y", "jobs", "10"]);
    faults.release(Op::Read);
    q.until("the reads", |q| q.store.idle()).await;
    assert_eq!(
        q.delivered("c1"),
        Vec::<String>::new(),
        "c1 left before its bodies came"
    );
    assert_eq!(q.delivered("c2"), ["m0", "m1", "m2", "m3"]);
    assert_eq!(q.store.core().counters.storage_errors, 0);
    drop(q);
    let _ = std::fs::remove_dir_all(&dir);
}
