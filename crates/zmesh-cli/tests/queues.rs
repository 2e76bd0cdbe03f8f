//! Durable queues with real processes: a broker SIGKILLed again and again
//! under load, damaged journal files, a full disk, and a pyzmq client written
//! from docs/protocol/queues.md.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use zmesh::SocketOptions;
use zmesh_broker::queue::QueueOptions;
use zmesh_client::queue::{QueueClient, QueueClientConfig};
use zmesh_testkit::net::{bounded, free_endpoint};

const TEST_LIMIT: Duration = Duration::from_secs(120);

fn data_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zmesh-queues-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `zmesh broker` on `ep` with its journal in `dir`, stderr captured.
fn broker(ep: &str, dir: &Path, prefix: &[&str]) -> Child {
    broker_with(ep, dir, prefix, &[])
}

/// [`broker`] with `extra` arguments.
fn broker_with(ep: &str, dir: &Path, prefix: &[&str], extra: &[&str]) -> Child {
    let mut cmd = Command::new(
        prefix
            .first()
            .copied()
            .unwrap_or(env!("CARGO_BIN_EXE_zmesh")),
    );
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg(env!("CARGO_BIN_EXE_zmesh"));
    }
    cmd.args(["broker", "--bind", ep, "--data-dir"])
        .arg(dir)
        .args(["--segment-mib", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn broker")
}

/// Read the broker's start-up line (it comes after recovery and replay).
async fn startup_line(b: &mut Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let stderr = b.stderr.as_mut().expect("stderr piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        seen.push_str(&l);
        seen.push('\n');
        if l.contains("listening") {
            return seen;
        }
    }
    panic!("broker ended before listening: {seen}");
}

/// A client that comes back quickly after the broker restarts.
async fn client(ep: &str) -> QueueClient {
    let cfg = QueueClientConfig {
        attempt_timeout: Duration::from_millis(700),
        retries: 40,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        heartbeat: Duration::from_millis(200),
        broker_timeout: Duration::from_millis(2500),
        ..QueueClientConfig::default()
    };
    let options =
        SocketOptions::default().backoff(Duration::from_millis(20), Duration::from_millis(200));
    QueueClient::connect_with(ep, cfg, options).await.unwrap()
}

#[tokio::test]
async fn broker_killed_at_random_under_load_loses_nothing_confirmed() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("crash");
        let mut b = broker(&ep, &dir, &[]);
        startup_line(&mut b).await;
        let admin = client(&ep).await;
        let options = QueueOptions {
            ack_timeout_ms: 3000,
            max_deliveries: 1000,
            ..QueueOptions::default()
        };
        admin.declare("orders", Some(&options)).await.unwrap();

        // Sustained load: publishing goes on until the kills are done (bounded).
        const N_MAX: u64 = 400_000;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let confirmed = Arc::new(Mutex::new(HashSet::new()));
        let producer = {
            let (c, confirmed, stop) = (client(&ep).await, confirmed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..N_MAX {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    if set.len() >= 64 {
                        set.join_next().await;
                    }
                    let (c, confirmed) = (c.clone(), confirmed.clone());
                    set.spawn(async move {
                        // A stable id per message: retries across restarts are deduplicated.
                        let r = c
                            .publish_with_id("orders", format!("m{i}"), format!("m{i}"))
                            .await;
                        if r.is_ok() {
                            confirmed.lock().unwrap().insert(format!("m{i}"));
                        }
                    });
                }
                while set.join_next().await.is_some() {}
            })
        };
        let received: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let consumer = {
            let (c, received) = (client(&ep).await, received.clone());
            tokio::spawn(async move {
                let mut consumer = c.consume("orders", 50).await.unwrap();
                while let Some(d) = consumer.next().await {
                    let body = String::from_utf8(d.body.to_vec()).unwrap();
                    *received.lock().unwrap().entry(body).or_default() += 1;
                    let _ = consumer.ack(d.tag).await;
                }
            })
        };

        // Kill the broker at random moments while both run; restart it on the same journal.
        let mut seed = std::process::id() as u64;
        let mut rounds = 0;
        let started = Instant::now();
        while rounds < 6 && started.elapsed() < Duration::from_secs(60) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            tokio::time::sleep(Duration::from_millis(200 + (seed >> 33) % 700)).await;
            b.kill().await.unwrap();
            rounds += 1;
            b = broker(&ep, &dir, &[]);
            startup_line(&mut b).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        producer.await.unwrap();
        let confirmed = confirmed.lock().unwrap().clone();
        // Every confirmed message arrives in the end.
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let missing = {
                let r = received.lock().unwrap();
                confirmed.iter().filter(|m| !r.contains_key(*m)).count()
            };
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} confirmed messages never delivered after {rounds} kills"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        consumer.abort();
        let r = received.lock().unwrap();
        let duplicates: u32 = r.values().map(|n| n - 1).sum();
        assert_eq!(rounds, 6, "the broker was killed {rounds} times");
        assert!(confirmed.len() > 1000, "only {} confirmed", confirmed.len());
        println!(
            "{rounds} kills: {} confirmed, all delivered; {duplicates} duplicate deliveries",
            confirmed.len()
        );
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// A consumer is back as soon as its broker is: it subscribes again when the
/// link comes back, not when the broker's silence shows (here a minute).
#[tokio::test]
async fn a_consumer_resumes_as_soon_as_a_killed_broker_is_back() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("relink");
        let mut b = broker(&ep, &dir, &[]);
        startup_line(&mut b).await;
        let cfg = QueueClientConfig {
            broker_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_millis(200),
            ..QueueClientConfig::default()
        };
        let options =
            SocketOptions::default().backoff(Duration::from_millis(20), Duration::from_millis(200));
        let c = QueueClient::connect_with(&ep, cfg, options).await.unwrap();
        c.declare("jobs", None).await.unwrap();
        let mut consumer = c.consume("jobs", 10).await.unwrap();
        let p = client(&ep).await;
        p.publish("jobs", "before").await.unwrap();
        let d = consumer.next().await.expect("delivery");
        consumer.ack(d.tag).await.unwrap();
        // The ack is in before the kill, so "before" does not come back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.stats(Some("jobs")).await.unwrap()[0]["acked"] != 1 {
            assert!(Instant::now() < deadline, "the ack never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.kill().await.unwrap();
        let mut b = broker(&ep, &dir, &[]);
        startup_line(&mut b).await;
        p.publish("jobs", "after").await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("the consumer subscribed again when the broker came back")
            .expect("delivery");
        assert_eq!(&d.body[..], b"after");
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// The resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// `zmesh broker` with `--queue-memory-mib 1` on `ep`, its journal in `dir`.
fn small_memory_broker(ep: &str, dir: &Path) -> Child {
    broker_with(ep, dir, &[], &["--queue-memory-mib", "1"])
}

/// `--queue-memory-mib` bounds the bodies all queues keep in memory; the
/// rest stay on disk only and are read back from the journal on delivery,
/// also after a SIGKILL.
#[tokio::test]
async fn a_backlog_past_the_memory_bound_is_kept_on_disk_and_delivered_intact() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("memory");
        let mut b = small_memory_broker(&ep, &dir);
        startup_line(&mut b).await;
        let c = client(&ep).await;
        // 6 MiB over two queues, six times the memory bound; each body says
        // which message it is.
        let body = |q: &str, i: u8| {
            let mut v = vec![i; 512 << 10];
            v[..q.len()].copy_from_slice(q.as_bytes());
            v
        };
        for q in ["a", "b"] {
            c.declare(q, None).await.unwrap();
            for i in 0..6 {
                c.publish(q, body(q, i)).await.unwrap();
            }
        }
        // And 48 MiB more, for the memory check after the restart.
        c.declare("bulk", None).await.unwrap();
        for i in 0..96 {
            c.publish("bulk", body("bulk", i)).await.unwrap();
        }
        let stats = c.stats(None).await.unwrap();
        let on_disk: u64 = stats.iter().map(|s| s["on_disk"].as_u64().unwrap()).sum();
        assert!(
            on_disk >= 105,
            "at most 2 of 108 bodies fit in 1 MiB: {stats:?}"
        );
        // Half of "a" consumed and acked before the kill.
        let mut consumer = c.consume("a", 1).await.unwrap();
        for i in 0..3 {
            let d = consumer.next().await.expect("delivery");
            assert!(d.body == body("a", i), "message {i} of a came back damaged");
            consumer.ack(d.tag).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.stats(Some("a")).await.unwrap()[0]["acked"] != 3 {
            assert!(Instant::now() < deadline, "the acks never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(consumer);
        drop(c);
        b.kill().await.unwrap();
        let mut b = small_memory_broker(&ep, &dir);
        startup_line(&mut b).await;
        // Replay kept 54 MiB of bodies on disk, not in memory (nor their
        // records, through ids sliced from them).
        let rss_kib = resident_kib(b.id().expect("running"));
        assert!(
            rss_kib < 40 << 10,
            "the broker holds {rss_kib} KiB after replay"
        );
        let c = client(&ep).await;
        for (q, first) in [("a", 3), ("b", 0)] {
            let mut consumer = c.consume(q, 2).await.unwrap();
            for i in first..6 {
                let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                    .await
                    .expect("delivered after the restart")
                    .expect("delivery");
                assert!(d.body == body(q, i), "message {i} of {q} came back damaged");
                consumer.ack(d.tag).await.unwrap();
            }
        }
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

fn journal_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

#[tokio::test]
async fn old_messages_do_not_pin_the_journal_and_keep_their_order_across_kill_9() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("compact");
        let mut b = broker(&ep, &dir, &[]);
        startup_line(&mut b).await;
        let c = client(&ep).await;
        // An idle queue's messages sit at the journal's head...
        c.declare("audit", None).await.unwrap();
        for i in 0..50 {
            c.publish("audit", format!("a{i:02}")).await.unwrap();
        }
        // ...while 12 MiB of another queue's traffic goes through 1 MiB
        // segments, and one consumer of that queue sits on a long job.
        let fast = QueueOptions {
            durability: zmesh_log::Durability::Os,
            ack_timeout_ms: 120_000,
            ..QueueOptions::default()
        };
        c.declare("orders", Some(&fast)).await.unwrap();
        let slow_client = client(&ep).await;
        let mut slow = slow_client.consume("orders", 1).await.unwrap();
        c.publish("orders", "long job").await.unwrap();
        let long_job = slow.next().await.expect("the long job");
        let mut consumer = c.consume("orders", 500).await.unwrap();
        let body = vec![b'o'; 1024];
        for _round in 0..12 {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..1000 {
                let (c, body) = (c.clone(), body.clone());
                set.spawn(async move { c.publish("orders", body).await.unwrap() });
                if set.len() >= 64 {
                    set.join_next().await.unwrap().unwrap();
                }
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
            for _ in 0..1000 {
                let d = consumer.next().await.expect("delivery");
                consumer.ack(d.tag).await.unwrap();
            }
        }
        // Compaction and segment deletion run with the traffic and the ticks.
        let deadline = Instant::now() + Duration::from_secs(10);
        while journal_bytes(&dir) > 4 << 20 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let bytes = journal_bytes(&dir);
        assert!(
            bytes <= 4 << 20,
            "12 MiB went through, 51 small messages live, and the journal holds {bytes} bytes in {:?}",
            segments(&dir)
        );
        // The long job was moved meanwhile; its consumer acks it by the tag it knows.
        slow.ack(long_job.tag).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.stats(Some("orders")).await.unwrap()[0]["unacked"] != 0 {
            assert!(Instant::now() < deadline, "the long job's ack never settled it");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.kill().await.unwrap();

        let mut b = broker(&ep, &dir, &[]);
        let line = startup_line(&mut b).await;
        assert!(line.contains("50 messages"), "{line}");
        let mut audit = c.consume("audit", 100).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 50 {
            let d = tokio::time::timeout(Duration::from_secs(10), audit.next())
                .await
                .expect("audit deliveries")
                .expect("delivery");
            got.push(String::from_utf8(d.body.to_vec()).unwrap());
        }
        let expect: Vec<String> = (0..50).map(|i| format!("a{i:02}")).collect();
        assert_eq!(got, expect, "moved messages keep their order");
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn torn_tail_is_cut_and_damage_reported_with_the_rest_kept() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("damage");
        let mut b = broker(&ep, &dir, &[]);
        startup_line(&mut b).await;
        let c = client(&ep).await;
        c.declare("q", None).await.unwrap();
        // 1 KiB bodies over 1 MiB segments: several segments.
        let body = vec![b'x'; 1024];
        for i in 0..3000u32 {
            let mut m = body.clone();
            m[..4].copy_from_slice(&i.to_be_bytes());
            c.publish("q", m).await.unwrap();
        }
        b.kill().await.unwrap();
        let segs = segments(&dir);
        assert!(segs.len() >= 3, "{segs:?}");
        // A torn write at the end, and a flipped byte in an older segment.
        let last = segs.last().unwrap();
        let mut tail = std::fs::read(last).unwrap();
        tail.extend_from_slice(b"ZLR1\x40\x00\x00\x00half a record");
        std::fs::write(last, &tail).unwrap();
        let mut old = std::fs::read(&segs[1]).unwrap();
        let mid = old.len() / 2;
        old[mid] ^= 0x01;
        std::fs::write(&segs[1], &old).unwrap();

        let mut b = broker(&ep, &dir, &[]);
        let line = startup_line(&mut b).await;
        assert!(line.contains("torn tail"), "{line}");
        assert!(line.contains("damaged"), "{line}");
        assert!(
            line.contains("2999 messages"),
            "one record lost to the flipped byte: {line}"
        );
        let stats = c.stats(Some("q")).await.unwrap();
        assert_eq!(stats[0]["ready"], 2999);
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn full_disk_refuses_publishes_clearly_and_keeps_serving_consumers() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("full");
        // A file size limit stands in for a full disk: writes past it fail with EFBIG.
        let mut b = broker(&ep, &dir, &["prlimit", "--fsize=400000"]);
        startup_line(&mut b).await;
        let c = client(&ep).await;
        c.declare("q", None).await.unwrap();
        let mut confirmed = Vec::new();
        let refusal = loop {
            match c.publish("q", vec![b'y'; 1000]).await {
                Ok(conf) => confirmed.push(conf.tag),
                Err(e) => break e,
            }
            assert!(confirmed.len() < 1000, "the limit never bit");
        };
        assert_eq!(refusal.code(), Some(507), "{refusal}");
        assert!(refusal.to_string().contains("disk full"), "{refusal}");
        // Still refusing, still alive, and every confirmed message is served.
        assert_eq!(
            c.publish("q", vec![b'y'; 1000]).await.unwrap_err().code(),
            Some(507)
        );
        let mut consumer = c.consume("q", 100).await.unwrap();
        let mut got = HashSet::new();
        while got.len() < confirmed.len() {
            let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await
                .expect("deliveries continue")
                .unwrap();
            got.insert(d.tag);
            consumer.ack(d.tag).await.unwrap();
        }
        assert_eq!(got, confirmed.iter().copied().collect());
        assert!(b.try_wait().unwrap().is_none(), "the broker survived");
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn pyzmq_client_from_the_protocol_doc() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("pyzmq");
        let mut b = broker(&ep, &dir, &[]);
        startup_line(&mut b).await;
        let stdout = common::python_stdout("queue_client.py", &[&ep, "py-jobs", "200"]).await;
        // 200 PUBLISHes plus a BATCH of two new messages and a repeat.
        assert!(
            stdout.contains("published 200") && stdout.contains("consumed 202"),
            "{stdout}"
        );
        assert!(stdout.contains("stats ok 202"), "{stdout}");
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn cli_round_trip_with_dead_letters() {
    bounded(TEST_LIMIT, async {
        let ep = free_endpoint();
        let dir = data_dir("cli");
        let mut b = broker(&ep, &dir, &[]);
        startup_line(&mut b).await;
        let run = |args: Vec<&str>| {
            let ep = ep.clone();
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            async move {
                let out = Command::new(env!("CARGO_BIN_EXE_zmesh"))
                    .arg("queue")
                    .args(&args)
                    .args(["--broker", &ep])
                    .output()
                    .await
                    .unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
        };
        let (code, _, err) = run(vec!["declare", "jobs", "--max-deliveries", "1"]).await;
        assert_eq!(code, Some(0), "{err}");
        let (code, out, _) = run(vec!["publish", "jobs", "a", "b", "c"]).await;
        assert_eq!(code, Some(0));
        assert!(out.contains("confirmed 3"), "{out}");
        // Take one and reject it: with one delivery allowed it goes to the dead letters.
        let (_, out, _) = run(vec!["consume", "jobs", "--count", "1", "--no-ack", "-v"]).await;
        let tag = out.split('\t').next().unwrap().to_owned();
        let (code, _, err) = run(vec!["ack", "jobs", &tag, "--nack"]).await;
        assert_eq!(code, Some(0), "{err}");
        let (code, out, _) = run(vec!["dead-letters", "jobs"]).await;
        assert_eq!(code, Some(0));
        assert!(out.contains("\ta"), "{out}");
        let (_, out, _) = run(vec!["consume", "jobs", "--count", "5", "--idle", "0.5"]).await;
        assert_eq!(out.lines().collect::<Vec<_>>(), ["b", "c"]);
        let (_, out, _) = run(vec!["stats"]).await;
        assert!(out.contains("jobs.dlq"), "{out}");
        // Refusals exit 3 and say why.
        let (code, _, err) = run(vec!["publish", "nope", "x"]).await;
        assert_eq!(code, Some(3));
        assert!(err.contains("404"), "{err}");
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
