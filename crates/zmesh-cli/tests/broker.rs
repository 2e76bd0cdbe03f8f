//! The Majordomo broker with real peers: pyzmq clients and workers written
//! from the specs, zmesh's own client and worker (killed, frozen and
//! restarted processes are in `broker_processes.rs`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::inproc::*;
use tokio::process::Command;
use zmesh::codec::Json;
use zmesh_broker::mdp::{BrokerConfig, ServicePolicy};
use zmesh_client::breaker::BreakerState;
use zmesh_client::mdp::{Client, ClientConfig, ClientError};
use zmesh_client::worker::{Worker, WorkerConfig, handler};
use zmesh_testkit::net::bounded;
use zmesh_testkit::peer::PyPeer;
use zmesh_testkit::process;

const TEST_LIMIT: Duration = Duration::from_secs(90);
/// An in-process zmesh worker; stops when the returned sender is dropped or set.
fn spawn_worker(
    ep: &str,
    service: &str,
    concurrency: usize,
    tag: &'static str,
) -> tokio::sync::watch::Sender<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let cfg = WorkerConfig {
        concurrency,
        ..worker_config()
    };
    let h = handler(move |mut body: Vec<Bytes>| async move {
        body.insert(0, Bytes::from_static(tag.as_bytes()));
        Ok(body)
    });
    tokio::spawn(Worker::new(ep, service, cfg, h).run(rx));
    tx
}

#[tokio::test]
async fn pyzmq_client_and_worker_through_the_zmesh_broker() {
    bounded(TEST_LIMIT, async {
        let ep = broker(test_config()).await;
        let (_w, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "worker",
                "--broker",
                &ep,
                "--service",
                "upper",
                "--upper",
                "--count",
                "10",
            ],
        )
        .await;
        let (mut c, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "client",
                "--broker",
                &ep,
                "--service",
                "upper",
                "--msg",
                "hello",
                "--msg",
                "",
                "--count",
                "3",
            ],
        )
        .await;
        for _ in 0..3 {
            let v: serde_json::Value = serde_json::from_str(&c.line().await).unwrap();
            assert_eq!(v["service"], "upper");
            assert_eq!(v["body"], serde_json::json!(["HELLO", ""]));
        }
        // MMI over the same broker.
        let (mut q, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "client",
                "--broker",
                &ep,
                "--service",
                "mmi.service",
                "--msg",
                "upper",
            ],
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&q.line().await).unwrap();
        assert_eq!(v["body"], serde_json::json!(["200"]));
        let (mut q, _) = PyPeer::start_script(
            "mdp_peer.py",
            &["client", "--broker", &ep, "--service", "mmi.nothing"],
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&q.line().await).unwrap();
        assert_eq!(v["body"], serde_json::json!(["501"]));
    })
    .await;
}

#[tokio::test]
async fn zmesh_client_and_worker_with_many_requests_in_flight() {
    bounded(TEST_LIMIT, async {
        let ep = broker(test_config()).await;
        let _w = spawn_worker(&ep, "echo", 4, "w");
        let client = Client::connect(&ep, client_config()).await.unwrap();
        let calls = (0..100).map(|i| {
            let client = client.clone();
            async move {
                client
                    .request("echo", vec![Bytes::from(format!("n{i}"))])
                    .await
                    .map(|r| (i, r))
            }
        });
        let results = futures_join_all(calls).await;
        for r in results {
            let (i, reply) = r.unwrap();
            assert_eq!(
                text(&reply),
                vec!["w".to_string(), format!("n{i}")],
                "each reply matches its request"
            );
        }
        // Typed calls through the codecs.
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Sum {
            a: i64,
            b: i64,
        }
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let h = handler(|body: Vec<Bytes>| async move {
            let s: Sum = serde_json::from_slice(&body[0]).map_err(|e| e.to_string())?;
            Ok(vec![Bytes::from(serde_json::to_vec(&(s.a + s.b)).unwrap())])
        });
        tokio::spawn(Worker::new(&ep, "sum", worker_config(), h).run(rx));
        let total: i64 = client
            .call::<Json, _, _>("sum", &Sum { a: 40, b: 2 })
            .await
            .unwrap();
        assert_eq!(total, 42);
    })
    .await;
}

/// The guide's asynchronous client sends every request before it reads: its
/// replies pile up behind a full pipe. Each must reach it, none silently lost,
/// and the broker keeps serving everyone else meanwhile.
#[tokio::test]
async fn a_client_that_reads_late_gets_every_reply_and_stalls_no_one() {
    bounded(TEST_LIMIT, async {
        const REQUESTS: u32 = 4000;
        let cfg = BrokerConfig {
            request_timeout: Duration::from_secs(60),
            ..test_config()
        };
        let ep = broker(cfg).await;
        let (h, started) = slow_echo(Duration::ZERO);
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let wcfg = WorkerConfig {
            concurrency: 8,
            ..worker_config()
        };
        tokio::spawn(Worker::new(&ep, "echo", wcfg, h).run(rx));
        let count = REQUESTS.to_string();
        let (mut late, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "async-client",
                "--broker",
                &ep,
                "--service",
                "echo",
                "--hold",
                // 4,000 x 16 KiB = 64 MiB of replies: far past the client's
                // pipe (10 messages), the broker's (1,000) and the kernel's buffers.
                "--count",
                &count,
                "--pad",
                "16384",
                "--rcvhwm",
                "10",
                // Per reply, once reading: a lost reply shows as missing ids,
                // well within the line deadline.
                "--timeout",
                "5",
            ],
        )
        .await;
        assert_eq!(late.line().await, "SENT");
        // Every request handled while the client reads nothing: the replies wait.
        wait_until(|| started.load(Ordering::SeqCst) == REQUESTS).await;
        let (mut other, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "client",
                "--broker",
                &ep,
                "--service",
                "echo",
                "--msg",
                "meanwhile",
                "--timeout",
                "5",
            ],
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&other.line().await).unwrap();
        assert_eq!(v["body"], serde_json::json!(["meanwhile"]), "{v}");

        process::signal(late.pid(), process::SIGUSR1).unwrap();
        let v: serde_json::Value = serde_json::from_str(&late.line().await).unwrap();
        assert_eq!(v["missing"], 0, "every request id answered: {v}");
        assert_eq!(v["answered"], REQUESTS, "{v}");
        assert_eq!(
            (v["errors"].clone(), v["duplicates"].clone()),
            (0.into(), 0.into()),
            "{v}"
        );
    })
    .await;
}

#[tokio::test]
async fn mixed_peers_and_mdp_v2_partial_replies() {
    bounded(TEST_LIMIT, async {
        let ep = broker(test_config()).await;
        // pyzmq client -> zmesh worker.
        let _w = spawn_worker(&ep, "zw", 1, "zmesh");
        let (mut c, _) = PyPeer::start_script(
            "mdp_peer.py",
            &["client", "--broker", &ep, "--service", "zw", "--msg", "x"],
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&c.line().await).unwrap();
        assert_eq!(v["body"], serde_json::json!(["zmesh", "x"]));
        // zmesh client -> pyzmq 18/MDP worker with partial replies.
        let (_pw, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "worker",
                "--broker",
                &ep,
                "--service",
                "stream",
                "--v2",
                "--partials",
                "2",
                "--count",
                "2",
                "--tag",
                "py",
            ],
        )
        .await;
        let client = Client::connect(&ep, client_config()).await.unwrap();
        let reply = client
            .request_full("stream", vec![Bytes::from("go")])
            .await
            .unwrap();
        assert_eq!(
            reply.partials.iter().map(|p| text(p)).collect::<Vec<_>>(),
            vec![vec!["part-0"], vec!["part-1"]]
        );
        assert_eq!(text(&reply.body), vec!["py", "go"]);
        // pyzmq 18/MDP client sees PARTIAL, PARTIAL, FINAL.
        let (mut c2, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "client",
                "--broker",
                &ep,
                "--service",
                "stream",
                "--v2",
                "--msg",
                "again",
            ],
        )
        .await;
        let kinds: Vec<String> = {
            let mut k = Vec::new();
            for _ in 0..3 {
                let v: serde_json::Value = serde_json::from_str(&c2.line().await).unwrap();
                k.push(v["kind"].as_str().unwrap().to_owned());
            }
            k
        };
        assert_eq!(kinds, ["partial", "partial", "final"]);
    })
    .await;
}

#[tokio::test]
async fn no_worker_means_an_error_not_silence_and_the_circuit_opens_then_closes() {
    bounded(TEST_LIMIT, async {
        let cfg = BrokerConfig {
            request_timeout: Duration::from_millis(300),
            ..test_config()
        };
        let ep = broker(cfg).await;
        let ccfg = ClientConfig {
            attempt_timeout: Duration::from_secs(2),
            retries: 0,
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_millis(800),
            ..Default::default()
        };
        let client = Client::connect(&ep, ccfg).await.unwrap();
        for _ in 0..3 {
            match client.request("absent", vec![]).await {
                Err(ClientError::Status { code, reason, .. }) => {
                    assert_eq!(code, "503");
                    assert!(reason.contains("no worker"), "{reason}");
                }
                other => panic!("expected 503, got {other:?}"),
            }
        }
        assert_eq!(client.breaker_state("absent"), BreakerState::Open);
        assert!(matches!(
            client.request("absent", vec![]).await,
            Err(ClientError::CircuitOpen { .. })
        ));
        // The service recovers; after the cooldown one trial closes the circuit.
        let _w = spawn_worker(&ep, "absent", 1, "back");
        tokio::time::sleep(Duration::from_millis(900)).await;
        let reply = client
            .request("absent", vec![Bytes::from("ping")])
            .await
            .unwrap();
        assert_eq!(text(&reply), ["back", "ping"]);
        assert_eq!(client.breaker_state("absent"), BreakerState::Closed);
    })
    .await;
}

#[tokio::test]
async fn canary_weights_and_rate_limits() {
    bounded(TEST_LIMIT, async {
        let mut cfg = test_config();
        cfg.policies.insert(
            "limited".into(),
            ServicePolicy {
                rate_limit_per_s: Some(20),
                ..Default::default()
            },
        );
        let ep = broker(cfg).await;
        let _v1 = spawn_worker(&ep, "orders@v1", 4, "v1");
        let _v2 = spawn_worker(&ep, "orders@v2", 4, "v2");
        // Routes changed at run time, through the CLI.
        let out = Command::new(env!("CARGO_BIN_EXE_zmesh"))
            .args([
                "route",
                "--broker",
                &ep,
                "orders",
                "orders@v1:80,orders@v2:20",
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let client = Client::connect(&ep, client_config()).await.unwrap();
        let n = 1000;
        let v2 = Arc::new(AtomicU32::new(0));
        let calls = (0..n).map(|_| {
            let client = client.clone();
            let v2 = v2.clone();
            async move {
                let r = client.request("orders", vec![]).await.unwrap();
                if r[0] == "v2" {
                    v2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        futures_join_all(calls).await;
        let v2 = v2.load(Ordering::Relaxed);
        // Binomial(1000, 0.2): sd 12.6; allow 4 sd.
        assert!((150..=250).contains(&v2), "v2 served {v2} of {n}");

        let _l = spawn_worker(&ep, "limited", 4, "l");
        let refused = Arc::new(AtomicU32::new(0));
        let calls = (0..60).map(|_| {
            let client = client.clone();
            let refused = refused.clone();
            async move {
                if let Err(ClientError::Status { code, .. }) =
                    client.request("limited", vec![]).await
                {
                    assert_eq!(code, "429");
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        futures_join_all(calls).await;
        assert!(
            refused.load(Ordering::Relaxed) >= 30,
            "rate limit let too much through"
        );
    })
    .await;
}
