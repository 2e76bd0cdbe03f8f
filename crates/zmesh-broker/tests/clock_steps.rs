//! The queue and stream stores on real files, with a clock the test steps
//! as an operator's machine would (NTP, a resumed VM): the wall clock jumps
//! by minutes while consumers hold messages, others wait in line and
//! subscribers follow a stream, and nothing is redelivered, expired or
//! dropped because of it. Timers still fire when monotonic time really
//! passes, and a TTL survives a restart through the stored wall-clock stamp.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use zmesh::clock::ManualClock;
use zmesh_broker::queue::{QueueStats, QueueStore, QueueStoreConfig};
use zmesh_broker::storage::Sends;
use zmesh_broker::stream::{StreamStore, StreamStoreConfig};

mod common;
use common::{Streams, peer, temp_dir};
use zmesh_wire::queue::proto::PROTOCOL;

const FIVE_MINUTES_MS: i64 = 5 * 60 * 1000;

fn frames(parts: &[&str]) -> Vec<Bytes> {
    let mut f = vec![Bytes::new(), Bytes::from_static(PROTOCOL)];
    f.extend(parts.iter().map(|p| Bytes::from(p.to_string())));
    f
}

/// The store and everything it sent, as a consumer's or publisher's view.
struct Broker {
    store: QueueStore,
    clock: ManualClock,
    sent: Sends,
}

impl Broker {
    fn open(dir: &std::path::Path, clock: &ManualClock) -> Broker {
        let config = QueueStoreConfig {
            data_dir: dir.to_owned(),
            clock: clock.shared(),
            ..QueueStoreConfig::default()
        };
        let (store, _) = QueueStore::open(config).expect("open the store");
        Broker {
            store,
            clock: clock.clone(),
            sent: Vec::new(),
        }
    }

    fn send(&mut self, from: &str, parts: &[&str]) {
        let s = self.store.handle(&peer(from), &frames(parts));
        self.sent.extend(s);
    }

    /// Write what the commands appended and wait until it is durable.
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

    /// `secs` seconds pass on both clocks, one at a time: each second the
    /// store's timers run, then the consumers say they are alive.
    fn pass(&mut self, secs: u64, consumers: &[&str]) {
        for _ in 0..secs {
            self.clock.advance(Duration::from_secs(1));
            // The store's timers run before the peers are heard from again,
            // as they may in any second.
            let s = self.store.tick();
            self.sent.extend(s);
            for c in consumers {
                self.send(c, &["HEARTBEAT"]);
            }
        }
    }

    /// The frames of every `cmd` sent to `to`, taken out.
    fn take(&mut self, to: &str, cmd: &str) -> Vec<Vec<Bytes>> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(p, f)| p == &peer(to) && f.get(2).is_some_and(|c| c == cmd.as_bytes()));
        self.sent = rest;
        mine.into_iter().map(|(_, f)| f).collect()
    }

    /// The message ids delivered to `to`, with their delivery counts.
    fn deliveries(&mut self, to: &str) -> Vec<(String, String, u32)> {
        self.take(to, "DELIVER")
            .iter()
            .map(|f| {
                let text = |i: usize| String::from_utf8(f[i].to_vec()).unwrap();
                (text(4), text(6), text(5).parse().unwrap())
            })
            .collect()
    }

    fn stats(&self, queue: &str) -> QueueStats {
        self.store
            .core()
            .stats()
            .into_iter()
            .find(|s| s.name == queue)
            .expect("the queue exists")
    }
}

fn ids(range: std::ops::Range<u32>) -> BTreeSet<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test]
async fn a_wall_clock_step_redelivers_expires_and_drops_nothing() {
    let dir = temp_dir("queue-clock-step");
    let clock = ManualClock::new();
    let mut b = Broker::open(&dir, &clock);
    b.send(
        "admin",
        &[
            "DECLARE",
            "d",
            "jobs",
            r#"{"ack_timeout_ms": 60000, "message_ttl_ms": 120000}"#,
        ],
    );
    // The OK goes out once the catalog is saved.
    b.sync().await;
    assert_eq!(b.take("admin", "OK").len(), 1);
    for i in 0..350 {
        b.send(
            "p",
            &["PUBLISH", &i.to_string(), "jobs", &format!("m{i}"), "x"],
        );
    }
    b.sync().await;
    assert_eq!(b.take("p", "CONFIRM").len(), 350);

    // `a` holds 200, `b` holds 100, and 50 wait in line for credit.
    b.send("a", &["CONSUME", "ca", "jobs", "200"]);
    b.send("b", &["CONSUME", "cb", "jobs", "100"]);
    let held_a = b.deliveries("a");
    let held_b = b.deliveries("b");
    assert_eq!(held_a.len(), 200);
    assert_eq!(held_b.len(), 100);
    let delivered: BTreeSet<String> = held_a.iter().chain(&held_b).map(|d| d.1.clone()).collect();
    assert_eq!(delivered.len(), 300, "each message to one consumer");

    // The wall clock jumps 5 minutes ahead for 6 s, then back, then 5
    // minutes behind for 6 s: past every ack timeout, TTL and peer timeout
    // on the wall clock, and none on the monotonic one.
    clock.step_wall_ms(FIVE_MINUTES_MS);
    b.pass(6, &["a", "b"]);
    clock.step_wall_ms(-2 * FIVE_MINUTES_MS);
    b.pass(6, &["a", "b"]);
    clock.step_wall_ms(FIVE_MINUTES_MS);
    b.pass(6, &["a", "b"]);

    assert!(b.deliveries("a").is_empty(), "nothing redelivered to a");
    assert!(b.deliveries("b").is_empty(), "nothing redelivered to b");
    let stats = b.stats("jobs");
    assert_eq!(stats.consumers, 2, "no consumer dropped");
    assert_eq!((stats.unacked, stats.ready), (300, 50));
    assert_eq!(stats.counters.redelivered, 0);
    assert_eq!(stats.counters.expired, 0);
    assert_eq!(stats.counters.dead_lettered, 0);
    assert_eq!(b.store.core().counters.peers_expired, 0);

    // Everything held is acked by the tag it was delivered with.
    let tags_a: Vec<&str> = held_a.iter().map(|d| d.0.as_str()).collect();
    let tags_b: Vec<&str> = held_b.iter().map(|d| d.0.as_str()).collect();
    b.send("a", &[&["ACK", "jobs"], tags_a.as_slice()].concat());
    b.send("b", &[&["ACK", "jobs"], tags_b.as_slice()].concat());
    // The acks opened the window: the 50 go out now, first deliveries all.
    let rest: Vec<_> = b
        .deliveries("a")
        .into_iter()
        .chain(b.deliveries("b"))
        .collect();
    let rest_ids: BTreeSet<String> = rest.iter().map(|d| d.1.clone()).collect();
    let all: BTreeSet<String> = delivered.union(&rest_ids).cloned().collect();
    assert_eq!(all, ids(0..350), "every message delivered, none twice");
    assert!(rest.iter().all(|d| d.2 == 1), "{rest:?}");
    b.sync().await;
}

#[tokio::test]
async fn timers_still_fire_on_monotonic_time_and_a_ttl_survives_a_restart() {
    let dir = temp_dir("queue-clock-ttl");
    let clock = ManualClock::new();
    let mut b = Broker::open(&dir, &clock);
    b.send(
        "admin",
        &[
            "DECLARE",
            "d",
            "jobs",
            r#"{"ack_timeout_ms": 10000, "message_ttl_ms": 60000}"#,
        ],
    );
    for i in 0..20 {
        b.send(
            "p",
            &["PUBLISH", &i.to_string(), "jobs", &format!("m{i}"), "x"],
        );
    }
    b.sync().await;
    assert_eq!(b.take("p", "CONFIRM").len(), 20);

    // An ack timeout that really passes redelivers.
    b.send("a", &["CONSUME", "ca", "jobs", "5"]);
    let first = b.deliveries("a");
    assert_eq!(first.len(), 5);
    b.pass(11, &["a"]);
    let again = b.deliveries("a");
    let first_ids: BTreeSet<String> = first.iter().map(|d| d.1.clone()).collect();
    let again_ids: BTreeSet<String> = again.iter().map(|d| d.1.clone()).collect();
    assert_eq!(again_ids, first_ids, "the same five, delivered again");
    assert!(again.iter().all(|d| d.2 == 2), "{again:?}");
    let tags: Vec<&str> = again.iter().map(|d| d.0.as_str()).collect();
    b.send("a", &[&["ACK", "jobs"], tags.as_slice()].concat());
    b.send("a", &["CANCEL", "x", "jobs"]);
    b.sync().await;
    let ready = b.stats("jobs").ready;
    assert!(ready > 0, "some wait in line");

    // A restart 30 s of wall-clock time later: the stored stamps say the
    // messages are 41 s old, so they expire 19 s after it, not 60 s.
    drop(b);
    clock.advance(Duration::from_secs(30));
    let mut b = Broker::open(&dir, &clock);
    assert_eq!(b.stats("jobs").ready, ready);
    b.pass(18, &[]);
    assert_eq!(b.stats("jobs").counters.expired, 0, "not before its time");
    b.pass(2, &[]);
    b.sync().await;
    assert_eq!(b.stats("jobs").counters.expired, ready, "all after it");
}

#[tokio::test]
async fn a_wall_clock_step_drops_no_subscriber_and_stamps_never_go_back() {
    let dir = temp_dir("stream-clock-step");
    let clock = ManualClock::new();
    let config = StreamStoreConfig {
        data_dir: dir.clone(),
        clock: clock.shared(),
        ..StreamStoreConfig::default()
    };
    let (store, _) = StreamStore::open(config).expect("open the streams");
    let mut s = Streams {
        store,
        clock: clock.clone(),
        sent: Vec::new(),
    };
    s.send("admin", &["CREATE", "c", "ev", ""]);
    s.send(
        "sub",
        &["SUBSCRIBE", "s", "ev", "tail", "ev.>", "first", "1000"],
    );
    s.sync().await;
    assert_eq!(s.subscribers(), 1);

    // Published while the wall clock is 5 minutes ahead, then 5 minutes
    // behind: the subscriber, silent but for heartbeats, stays, and gets
    // every message once, in order, with stamps that never go back.
    let mut published = 0u32;
    for step in [FIVE_MINUTES_MS, -2 * FIVE_MINUTES_MS, FIVE_MINUTES_MS] {
        clock.step_wall_ms(step);
        for _ in 0..3 {
            s.send(
                "p",
                &["PUBLISH", "1", "ev", "ev.x", &format!("m{published}")],
            );
            published += 1;
            s.sync().await;
            s.pass(2, &["sub"]).await;
        }
    }
    assert_eq!(s.subscribers(), 1, "the subscriber was not dropped");
    // 18 s passed: the broker's heartbeat (every second) never paused while
    // the wall clock was behind.
    let heartbeats = s.heartbeats("sub");
    assert!(heartbeats >= 17, "{heartbeats} heartbeats in 18 s");
    let got = s.messages("sub");
    let bodies: Vec<String> = got.iter().map(|m| m.2.clone()).collect();
    let expected: Vec<String> = (0..published).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected, "every message once, in order");
    assert!(
        got.windows(2)
            .all(|w| w[1].0 == w[0].0 + 1 && w[1].1 >= w[0].1),
        "sequences follow on and stamps never go back: {got:?}"
    );

    // Silence that really lasts still drops it.
    s.pass(6, &[]).await;
    assert_eq!(
        s.subscribers(),
        0,
        "a silent subscriber goes after its timeout"
    );
}
