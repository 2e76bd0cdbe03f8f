//! Overload with real peers: clients and subscribers that ask for more than
//! they read. Every request is answered or failed, every MSG delivered, and
//! what the broker counts equals what the peers received; a peer that never
//! reads is disconnected and counted, the broker's memory bounded.

mod common;

use std::time::Duration;

use common::admin::metrics_when;
use common::{broker_listening, temp_dir};
use zmesh_testkit::net::{bounded, free_endpoint, free_port};
use zmesh_testkit::peer::PyPeer;
use zmesh_testkit::process;

const LIMIT: Duration = Duration::from_secs(90);

/// A sample's value; a labelled counter nobody has touched has none.
fn sample(samples: &serde_json::Value, key: &str) -> f64 {
    samples[key].as_f64().unwrap_or(0.0)
}

/// The guide's asynchronous client, several at once: each sends all its
/// requests before it reads, half of them read only once the broker has
/// answered everything (their replies wait, past the peer's soft bound).
/// Every request id comes back exactly once, and the broker's counters equal
/// what the clients received: nothing answered into the void.
#[tokio::test]
async fn many_asynchronous_clients_get_every_reply_and_the_counters_match() {
    bounded(LIMIT, async {
        const CLIENTS: usize = 6;
        const REQUESTS: u32 = 1500; // each, x 8 KiB: 12 MiB of replies per client
        let ep = free_endpoint();
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let (_b, _log) = broker_listening(&[
            "--no-queues",
            "--bind",
            &ep,
            "--admin-bind",
            &admin,
            "--request-timeout-ms",
            "60000",
            // The engine's pipe per peer, in messages: full long before the end.
            "--hwm",
            "100",
        ])
        .await;
        let _worker = common::zmesh(&[
            "serve",
            "echo",
            "--echo",
            "--concurrency",
            "32",
            "--broker",
            &ep,
        ]);
        metrics_when(port, "the worker registered", |s| {
            sample(s, "zmesh_service_workers{service=echo}") == 1.0
        })
        .await;
        let count = REQUESTS.to_string();
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let mut args = vec![
                "async-client",
                "--broker",
                &ep,
                "--service",
                "echo",
                "--count",
                &count,
                "--pad",
                "8192",
                "--rcvhwm",
                "10",
                "--timeout",
                "10",
            ];
            let holds = i % 2 == 0;
            if holds {
                args.push("--hold");
            }
            let (mut c, _) = PyPeer::start_script("mdp_peer.py", &args).await;
            if holds {
                assert_eq!(c.line().await, "SENT");
            }
            clients.push((c, holds));
        }
        let total = f64::from(REQUESTS) * CLIENTS as f64;
        // Everything answered by the worker while half the clients read nothing:
        // their replies wait in the broker.
        let held = metrics_when(port, "every request answered, replies waiting", |s| {
            sample(s, "zmesh_service_replies_total{service=echo}") == total
        })
        .await;
        assert!(
            sample(&held, "zmesh_outbox_waiting_bytes{}") > 0.0,
            "the late readers' replies wait in the outbox: {held}"
        );
        for (c, holds) in &clients {
            if *holds {
                process::signal(c.pid(), process::SIGUSR1).unwrap();
            }
        }
        let (mut answered, mut errors) = (0.0, 0.0);
        for (c, _) in &mut clients {
            let v: serde_json::Value = serde_json::from_str(&c.line().await).unwrap();
            assert_eq!(v["missing"], 0, "every request id answered: {v}");
            assert_eq!(v["duplicates"], 0, "{v}");
            answered += v["answered"].as_f64().unwrap();
            errors += v["errors"].as_f64().unwrap();
        }
        let s = metrics_when(port, "nothing left waiting", |s| {
            sample(s, "zmesh_outbox_waiting_bytes{}") == 0.0
        })
        .await;
        assert_eq!(answered + errors, total, "{s}");
        assert_eq!(
            sample(&s, "zmesh_service_requests_total{service=echo}"),
            total,
            "{s}"
        );
        assert_eq!(
            sample(&s, "zmesh_service_replies_total{service=echo}"),
            answered,
            "{s}"
        );
        assert_eq!(
            sample(&s, "zmesh_service_errors_total{service=echo}"),
            errors,
            "{s}"
        );
        let dropped: Vec<_> = s
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| {
                k.starts_with("zmesh_outbox_dropped_messages_total") && v.as_f64() != Some(0.0)
            })
            .collect();
        assert!(dropped.is_empty(), "nothing dropped: {dropped:?}");
    })
    .await;
}

/// A client that sends thousands of requests and never reads: the broker
/// holds its replies up to the peer bound, then disconnects it and counts
/// what it dropped, its memory bounded far below the replies' total.
#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_counted_and_memory_stays_bounded() {
    bounded(LIMIT, async {
        const REQUESTS: u32 = 2000;
        const REPLY_BYTES: u32 = 64 * 1024; // 2,000 x 64 KiB = 125 MiB of replies
        let ep = free_endpoint();
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        // Its log is kept open: the broker warns when it disconnects the reader.
        let (b, _log) = broker_listening(&[
            "--no-queues",
            "--worker-heartbeat-ms",
            "300",
            "--bind",
            &ep,
            "--admin-bind",
            &admin,
            "--request-timeout-ms",
            "60000",
            "--peer-outbox-soft-mib",
            "1",
            "--peer-outbox-hard-mib",
            "8",
            "--outbox-mib",
            "64",
            // The engine's own pipe per peer, in messages: 50 x 64 KiB.
            "--hwm",
            "50",
        ])
        .await;
        let pad = REPLY_BYTES.to_string();
        let (_w, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "worker",
                "--broker",
                &ep,
                "--service",
                "big",
                "--count",
                "100000",
                "--reply-pad",
                &pad,
            ],
        )
        .await;
        let count = REQUESTS.to_string();
        let (mut client, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "async-client",
                "--broker",
                &ep,
                "--service",
                "big",
                "--count",
                &count,
                "--hold",
            ],
        )
        .await;
        assert_eq!(client.line().await, "SENT");
        let overflow = "zmesh_outbox_dropped_messages_total{product=mdp,reason=overflow}";
        let answered = "zmesh_service_replies_total{service=big}";
        let samples = metrics_when(
            port,
            "every request answered and the reader disconnected",
            |s| {
                s[answered].as_f64() == Some(f64::from(REQUESTS))
                    && s["zmesh_outbox_disconnected_peers_total{}"].as_f64() == Some(1.0)
            },
        )
        .await;
        let dropped = samples[overflow].as_f64().unwrap();
        assert!(dropped > 0.0, "{samples}");
        // Everything after the disconnect is for a peer that is gone.
        let unroutable =
            samples["zmesh_outbox_dropped_messages_total{product=mdp,reason=unroutable}"]
                .as_f64()
                .unwrap();
        let waiting = samples["zmesh_outbox_waiting_bytes{}"].as_f64().unwrap();
        assert_eq!(
            waiting, 0.0,
            "nothing waits for a disconnected peer: {samples}"
        );
        // The broker's memory: the engine's pipe (50 x 64 KiB), the peer bound
        // (8 MiB) and its own baseline, not 125 MiB of replies.
        let rss_mib = process::rss_kib(b.id().unwrap()).unwrap() / 1024;
        assert!(
            rss_mib < 80,
            "broker RSS {rss_mib} MiB with {dropped} + {unroutable} replies dropped"
        );
        // The client, reading at last, has at most what was not counted as dropped.
        process::signal(client.pid(), process::SIGUSR1).unwrap();
        let v: serde_json::Value = serde_json::from_str(&client.line().await).unwrap();
        let got = v["answered"].as_f64().unwrap();
        assert!(
            got + dropped + unroutable <= f64::from(REQUESTS),
            "{v} {samples}"
        );
        assert_eq!(v["duplicates"], 0, "{v}");
    })
    .await;
}

/// A stream subscriber that grants credit for more than its DEALER can queue
/// and reads late: every MSG arrives, in order, with no dseq gap. The broker
/// holds them (its subscription paused past the peer's soft bound), not drops.
#[tokio::test]
async fn a_subscriber_with_more_credit_than_it_can_queue_gets_every_msg() {
    bounded(LIMIT, async {
        const COUNT: &str = "3000"; // x 8 KiB: 24 MiB, past every pipe on the way
        let d = temp_dir("credit");
        let ep = free_endpoint();
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let data = d.join("data");
        let (_b, _log) = broker_listening(&[
            "--bind",
            &ep,
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-bind",
            &admin,
            "--peer-outbox-soft-mib",
            "2",
            "--hwm",
            "100",
        ])
        .await;
        let (mut sub, _) = PyPeer::start_script(
            "stream_sub.py",
            &[
                "--broker", &ep, "--stream", "feed", "--count", COUNT, "--size", "8192",
                "--rcvhwm", "10",
            ],
        )
        .await;
        assert_eq!(sub.line_within(Duration::from_secs(60)).await, "SUBSCRIBED");
        // The MSGs pile up unread until the subscription is held back.
        metrics_when(port, "the subscriber congested", |s| {
            s["zmesh_outbox_congested_peers{}"].as_f64() == Some(1.0)
        })
        .await;
        process::signal(sub.pid(), process::SIGUSR1).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&sub.line_within(Duration::from_secs(60)).await).unwrap();
        assert_eq!(v["missing"], 0, "every stored seq delivered: {v}");
        assert_eq!(v["gaps"], serde_json::json!([]), "no dseq jump: {v}");
        let samples = metrics_when(port, "the subscriber relieved", |s| {
            s["zmesh_outbox_congested_peers{}"].as_f64() == Some(0.0)
        })
        .await;
        for reason in ["overflow", "unroutable"] {
            let k =
                format!("zmesh_outbox_dropped_messages_total{{product=stream,reason={reason}}}");
            assert_eq!(samples[&k].as_f64(), Some(0.0), "{k}: {samples}");
        }
    })
    .await;
}
