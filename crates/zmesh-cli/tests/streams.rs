//! Streams with real processes: a subscriber that misses 100,000 messages and
//! catches up with no gap and no duplicate, then follows the live tail; the
//! same across a SIGKILLed broker; a repeated publish stored once across a
//! SIGKILLed broker; snapshots (the Clone pattern).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::broker_listening;
use tokio::process::Child;
use zmesh::SocketOptions;
use zmesh_client::stream::{StreamClient, StreamClientConfig, Subscription};
use zmesh_testkit::net::{bounded, free_endpoint};
use zmesh_wire::stream::proto::Start;

const TEST_LIMIT: Duration = Duration::from_secs(150);

fn data_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zmesh-streams-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn broker(ep: &str, dir: &Path) -> Child {
    let dir = dir.to_str().expect("UTF-8 temp dir");
    broker_listening(&["--bind", ep, "--data-dir", dir, "--segment-mib", "4"])
        .await
        .0
}

async fn client(ep: &str) -> StreamClient {
    let cfg = StreamClientConfig {
        attempt_timeout: Duration::from_millis(1000),
        retries: 20,
        heartbeat: Duration::from_millis(200),
        broker_timeout: Duration::from_millis(1500),
        ..StreamClientConfig::default()
    };
    let options = SocketOptions::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .send_hwm(100_000)
        .recv_hwm(100_000);
    StreamClient::connect_with(ep, cfg, options).await.unwrap()
}

/// Publish `n` messages numbered from `first`, 256 in flight.
async fn publish(c: &StreamClient, first: u64, n: u64) {
    let mut set = tokio::task::JoinSet::new();
    for i in first..first + n {
        if set.len() >= 256 {
            set.join_next().await.unwrap().unwrap();
        }
        let c = c.clone();
        set.spawn(async move {
            c.publish("events", &format!("events.k{}", i % 10), i.to_string())
                .await
                .unwrap();
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Take `n` messages and check they continue `next` without gap or repeat.
async fn expect_run(sub: &mut Subscription, next: &mut u64, n: u64) {
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("the subscription keeps delivering")
            .unwrap();
        assert_eq!(m.seq, *next, "gap or duplicate at {}", *next);
        *next += 1;
        sub.ack(m.seq);
    }
}

#[tokio::test]
async fn subscriber_misses_100k_then_catches_up_and_follows_live() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("catchup");
        let _b = broker(&ep, &dir).await;
        let p = client(&ep).await;
        p.create("events", None).await.unwrap();
        publish(&p, 0, 1000).await;
        let mut next = 0;
        {
            let c = client(&ep).await;
            let mut sub = c
                .subscribe("events", ">", Start::First, Some("reader"))
                .await
                .unwrap();
            expect_run(&mut sub, &mut next, 1000).await;
            // Let the broker save the durable position before this client vanishes.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        publish(&p, 1000, 100_000).await;
        let c = client(&ep).await;
        let mut sub = c
            .subscribe("events", ">", Start::First, Some("reader"))
            .await
            .unwrap();
        let live = {
            let p = p.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                publish(&p, 101_000, 500).await;
            })
        };
        expect_run(&mut sub, &mut next, 100_500).await;
        live.await.unwrap();
        let info = p.info(Some("events")).await.unwrap();
        assert_eq!(info[0]["last_seq"], 101_499);
        let (gaps, dups) = c.repairs();
        println!("caught up 100,500 in order; {gaps} gaps repaired, {dups} duplicates dropped");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn durable_subscription_survives_a_sigkilled_broker() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("kill");
        let mut b = broker(&ep, &dir).await;
        let p = client(&ep).await;
        p.create("events", None).await.unwrap();
        publish(&p, 0, 5000).await;
        let c = client(&ep).await;
        let mut sub = c
            .subscribe("events", "events.*", Start::First, Some("d"))
            .await
            .unwrap();
        let mut next = 0;
        expect_run(&mut sub, &mut next, 2000).await;
        b.kill().await.unwrap();
        let _b = broker(&ep, &dir).await;
        // Everything stored before the kill is still there, in order, and the
        // subscription follows on into what is published after the restart.
        let more = {
            let p = p.clone();
            tokio::spawn(async move { publish(&p, 5000, 2000).await })
        };
        expect_run(&mut sub, &mut next, 5000).await;
        more.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// A subscriber is back as soon as its broker is: it subscribes again when
/// the link comes back, not when the broker's silence shows (here a minute).
#[tokio::test]
async fn a_subscriber_resumes_as_soon_as_a_killed_broker_is_back() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("relink");
        let mut b = broker(&ep, &dir).await;
        let p = client(&ep).await;
        p.create("events", None).await.unwrap();
        let cfg = StreamClientConfig {
            heartbeat: Duration::from_millis(200),
            broker_timeout: Duration::from_secs(60),
            ..StreamClientConfig::default()
        };
        let options =
            SocketOptions::default().backoff(Duration::from_millis(20), Duration::from_millis(200));
        let c = StreamClient::connect_with(&ep, cfg, options).await.unwrap();
        let mut sub = c
            .subscribe("events", "events.*", Start::First, None)
            .await
            .unwrap();
        publish(&p, 0, 5).await;
        let mut next = 0;
        expect_run(&mut sub, &mut next, 5).await;
        b.kill().await.unwrap();
        let _b = broker(&ep, &dir).await;
        publish(&p, 5, 5).await;
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the subscriber subscribed again when the broker came back")
            .unwrap();
        assert_eq!(m.seq, 5, "it goes on where it was");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn a_publish_repeated_across_a_sigkilled_broker_is_stored_once() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("dedup");
        let mut b = broker(&ep, &dir).await;
        let p = client(&ep).await;
        p.create("events", None).await.unwrap();
        publish(&p, 0, 10).await;
        let seq = p
            .publish_with_id("events", "events.order", "order-17", "paid")
            .await
            .unwrap();
        b.kill().await.unwrap();
        let _b = broker(&ep, &dir).await;
        // The producer did not hear the answer and sends it again, after the restart.
        let again = p
            .publish_with_id("events", "events.order", "order-17", "paid")
            .await
            .unwrap();
        assert_eq!(
            again, seq,
            "the repeat is answered with the first sequence number"
        );
        let next = p
            .publish_with_id("events", "events.order", "order-18", "paid")
            .await
            .unwrap();
        assert_eq!(next, seq + 1, "nothing was stored for the repeat");
        let info = &p.info(Some("events")).await.unwrap()[0];
        assert_eq!(info["messages"], 12, "{info}");
        assert_eq!(info["duplicates"], 1, "{info}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// `zmesh stream publish --msg-id` run twice stores once.
#[tokio::test]
async fn cli_publish_with_a_msg_id_run_twice_stores_once() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("cli-dedup");
        let _b = broker(&ep, &dir).await;
        let p = client(&ep).await;
        p.create("events", None).await.unwrap();
        let run = || async {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_zmesh"))
                .args(["stream", "publish", "events", "events.a", "x", "y"])
                .args(["--msg-id", "batch-7", "--broker", &ep])
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let first = run().await;
        assert_eq!(first, "stored 0\nstored 1\n");
        assert_eq!(
            run().await,
            first,
            "the second run is answered with the same sequences"
        );
        assert_eq!(p.info(Some("events")).await.unwrap()[0]["messages"], 2);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn snapshot_then_follow_without_a_gap() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("snapshot");
        let _b = broker(&ep, &dir).await;
        let c = client(&ep).await;
        c.create("prices", None).await.unwrap();
        for round in 0..3 {
            for sym in ["eu.sap", "eu.asml", "us.aapl"] {
                c.publish("prices", &format!("px.{sym}"), format!("{sym}={round}"))
                    .await
                    .unwrap();
            }
        }
        let snap = c.snapshot("prices", "px.eu.*").await.unwrap();
        let bodies: Vec<_> = snap
            .messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        assert_eq!(bodies, ["eu.sap=2", "eu.asml=2"]);
        assert_eq!(snap.next_seq, 9);
        let mut sub = c
            .subscribe("prices", "px.eu.*", Start::Seq(snap.next_seq), None)
            .await
            .unwrap();
        c.publish("prices", "px.us.aapl", "skip").await.unwrap();
        c.publish("prices", "px.eu.sap", "eu.sap=3").await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.seq, &m.body[..]),
            (10, &b"eu.sap=3"[..]),
            "the filter skipped us.aapl"
        );
        // A start by time finds the first message stored at or after it.
        let t = m.time_ms;
        let mut by_time = c
            .subscribe("prices", ">", Start::Time(t), None)
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), by_time.next())
            .await
            .unwrap()
            .unwrap();
        assert!(m.time_ms >= t && m.seq <= 10);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn retention_drops_old_segments_and_moves_late_subscribers_forward() {
    bounded(TEST_LIMIT, async {
        use zmesh_broker::stream::StreamOptions;
        let ep = free_endpoint();
        let dir = data_dir("retention");
        // 4 MiB segments (the broker flag above); 200 KiB messages fill several.
        let _b = broker(&ep, &dir).await;
        let c = client(&ep).await;
        let o = StreamOptions {
            max_msgs: Some(30),
            ..StreamOptions::default()
        };
        c.create("big", Some(&o)).await.unwrap();
        let body = vec![b'r'; 200 << 10];
        for _ in 0..100 {
            c.publish("big", "big.x", body.clone()).await.unwrap();
        }
        // Retention runs once a second.
        let t = std::time::Instant::now();
        let first = loop {
            let info = c.info(Some("big")).await.unwrap();
            let first = info[0]["first_seq"].as_u64().unwrap();
            if first > 0 {
                break first;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "retention never ran: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Whole segments go: at most one segment (20 messages) more than asked is kept.
        assert!(
            (100 - first) >= 30 && (100 - first) <= 30 + 21,
            "kept {}",
            100 - first
        );
        // A subscriber asking for the start gets the oldest kept message.
        let mut sub = c.subscribe("big", ">", Start::First, None).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.seq, first);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
