//! The Majordomo broker with real peers: pyzmq clients and workers written
//! from the specs, zmesh's own client and worker, and real processes killed,
//! frozen and restarted.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::inproc::*;
use common::zmesh;
use tokio::process::{Child, Command};
use zmesh::codec::Json;
use zmesh_broker::mdp::{BrokerConfig, ServicePolicy};
use zmesh_client::breaker::BreakerState;
use zmesh_client::mdp::{Client, ClientConfig, ClientError};
use zmesh_client::worker::{Worker, WorkerConfig, handler};
use zmesh_testkit::net::{bounded, free_endpoint as free_ep};
use zmesh_testkit::peer::PyPeer;
use zmesh_testkit::process::{self, SIGCONT, SIGSTOP};

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

// ---- real processes -------------------------------------------------------------

fn broker_process(ep: &str, idempotent: &str) -> Child {
    zmesh(&[
        "broker",
        "--no-queues",
        "--bind",
        ep,
        "--worker-heartbeat-ms",
        "300",
        "--idempotent",
        idempotent,
        "--request-timeout-ms",
        "5000",
    ])
}

fn serve_process(ep: &str, service: &str, delay_ms: &str) -> Child {
    zmesh(&[
        "serve",
        service,
        "--echo",
        "--broker",
        ep,
        "--heartbeat-ms",
        "300",
        "--delay-ms",
        delay_ms,
    ])
}

/// An echo handler that takes `delay`, and a count of the requests it has started.
#[tokio::test]
async fn worker_killed_mid_request() {
    bounded(TEST_LIMIT, async {
        let ep = free_ep();
        let _broker = broker_process(&ep, "safe");
        let client = Client::connect(
            &ep,
            ClientConfig {
                attempt_timeout: Duration::from_secs(8),
                retries: 0,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for (service, idempotent) in [("safe", true), ("unsafe", false)] {
            let mut first = serve_process(&ep, service, "1500");
            wait_workers(&client, service, 1).await;
            let pending = tokio::spawn({
                let client = client.clone();
                async move { client.request(service, vec![Bytes::from("job")]).await }
            });
            tokio::time::sleep(Duration::from_millis(400)).await; // the job is at the first worker
            let _second = serve_process(&ep, service, "0");
            wait_workers(&client, service, 2).await;
            first.kill().await.unwrap();
            let result = pending.await.unwrap();
            if idempotent {
                assert_eq!(
                    text(&result.expect("answered by the other worker")),
                    ["job"]
                );
            } else {
                match result {
                    Err(ClientError::Status { code, reason, .. }) => {
                        assert_eq!(code, "503");
                        assert!(reason.contains("not idempotent"), "{reason}");
                    }
                    other => {
                        panic!("expected an error for a non-idempotent service, got {other:?}")
                    }
                }
            }
        }
    })
    .await;
}

/// A worker's connection closing is its end: its request goes to another
/// worker within about a second, not once its heartbeats lapse (7.5 s here).
#[tokio::test]
async fn a_killed_workers_request_moves_on_when_its_connection_closes() {
    bounded(TEST_LIMIT, async {
        let ep = free_ep();
        // The default worker heartbeat, 2,500 ms x liveness 3: expiry after 7.5 s.
        let _broker = zmesh(&[
            "broker",
            "--no-queues",
            "--bind",
            &ep,
            "--idempotent",
            "safe",
            "--request-timeout-ms",
            "30000",
        ]);
        let client = Client::connect(
            &ep,
            ClientConfig {
                attempt_timeout: Duration::from_secs(20),
                retries: 0,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut first = zmesh(&[
            "serve",
            "safe",
            "--echo",
            "--broker",
            &ep,
            "--delay-ms",
            "60000",
        ]);
        wait_workers(&client, "safe", 1).await;
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.request("safe", vec![Bytes::from("job")]).await }
        });
        // The request is at the first worker: no free slot, nothing queued.
        wait_service(&client, "safe", "its request at the worker", |s| {
            s.is_some_and(|s| s["idle"] == 0 && s["queued"] == 0 && s["requests"] == 1)
        })
        .await;
        let _second = zmesh(&["serve", "safe", "--echo", "--broker", &ep]);
        wait_workers(&client, "safe", 2).await;
        let killed = std::time::Instant::now();
        first.kill().await.unwrap(); // SIGKILL: the kernel closes its connection
        let reply = pending
            .await
            .unwrap()
            .expect("answered by the other worker");
        let took = killed.elapsed();
        assert_eq!(text(&reply), ["job"]);
        assert!(
            took < Duration::from_millis(2500),
            "answered {took:?} after the kill; heartbeat expiry would take 7.5 s"
        );
    })
    .await;
}

/// A 7/MDP worker written like the reference one sends no heartbeats while it
/// handles a request: a 15 s handler is answered, not expired after 3 s.
#[tokio::test]
async fn a_reference_worker_busy_for_15_s_is_answered() {
    bounded(TEST_LIMIT, async {
        let ep = free_ep();
        // 1 s heartbeats x liveness 3: a silent idle worker would go after 3 s.
        let _broker = zmesh(&[
            "broker",
            "--no-queues",
            "--bind",
            &ep,
            "--worker-heartbeat-ms",
            "1000",
        ]);
        let (_w, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "worker",
                "--broker",
                &ep,
                "--service",
                "slow",
                "--hb-ms",
                "1000",
                "--work-s",
                "15",
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
                "slow",
                "--msg",
                "hello",
                "--timeout",
                "30",
            ],
        )
        .await;
        // The line comes after the 15 s handler: read it with a longer deadline.
        let line = c.line_within(Duration::from_secs(40)).await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["body"], serde_json::json!(["hello"]), "{v}");
    })
    .await;
}

/// `zmesh call --mdp` and `zmesh serve --mdp` against a Majordomo broker
/// written from the spec in Python (not zmesh's), beside a pyzmq worker.
#[tokio::test]
async fn call_and_serve_speak_7_mdp_to_another_majordomo_broker() {
    bounded(TEST_LIMIT, async {
        let (_broker, ep) = PyPeer::start_script(
            "mdp_broker.py",
            &["--bind", "tcp://127.0.0.1:0", "--hb-ms", "300"],
        )
        .await;
        let (_py, _) = PyPeer::start_script(
            "mdp_peer.py",
            &[
                "worker",
                "--broker",
                &ep,
                "--service",
                "upper",
                "--upper",
                "--count",
                "100",
            ],
        )
        .await;
        let _zw = zmesh(&[
            "serve",
            "echo",
            "--echo",
            "--mdp",
            "--broker",
            &ep,
            "--heartbeat-ms",
            "300",
        ]);
        let call = |service: &'static str, body: &'static str| {
            let ep = ep.clone();
            async move {
                common::zmesh_stdout(&[
                    "call",
                    "--mdp",
                    service,
                    body,
                    "--broker",
                    &ep,
                    "--timeout",
                    "2",
                    "--retries",
                    "5",
                ])
                .await
            }
        };
        assert_eq!(call("upper", "hello").await, "HELLO\n", "a pyzmq worker");
        // The zmesh worker may still be registering: the call retries.
        assert_eq!(call("echo", "hi").await, "hi\n", "zmesh's 7/MDP worker");
    })
    .await;
}

#[tokio::test]
async fn frozen_worker_is_expired_by_heartbeat() {
    bounded(TEST_LIMIT, async {
        let ep = free_ep();
        let _broker = broker_process(&ep, "x");
        let client = Client::connect(&ep, client_config()).await.unwrap();
        let worker = serve_process(&ep, "frozen", "0");
        wait_workers(&client, "frozen", 1).await;
        process::signal(worker.id().unwrap(), SIGSTOP).unwrap();
        // 3 missed 300 ms heartbeats: gone from the broker.
        wait_workers(&client, "frozen", 0).await;
        let r = client.request("zmesh.services", vec![]).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r[1]).unwrap();
        assert!(v["stats"]["workers_expired"].as_u64().unwrap() >= 1);
        // Thawed, it notices the broker dropped it and registers again.
        process::signal(worker.id().unwrap(), SIGCONT).unwrap();
        wait_workers(&client, "frozen", 1).await;
        assert_eq!(
            text(
                &client
                    .request("frozen", vec![Bytes::from("ok")])
                    .await
                    .unwrap()
            ),
            ["ok"]
        );
    })
    .await;
}

#[tokio::test]
async fn broker_killed_and_restarted() {
    bounded(TEST_LIMIT, async {
        let ep = free_ep();
        let mut broker = broker_process(&ep, "echo");
        let _w1 = serve_process(&ep, "echo", "0");
        let _w2 = serve_process(&ep, "echo", "0");
        let client = Client::connect(
            &ep,
            ClientConfig {
                attempt_timeout: Duration::from_millis(800),
                retries: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        wait_workers(&client, "echo", 2).await;
        assert_eq!(
            text(
                &client
                    .request("echo", vec![Bytes::from("before")])
                    .await
                    .unwrap()
            ),
            ["before"]
        );
        broker.kill().await.unwrap();
        // Requests made while the broker is down are retried until it is back.
        let during = tokio::spawn({
            let client = client.clone();
            async move {
                let mut answers = Vec::new();
                for i in 0..5 {
                    answers.push(
                        client
                            .request("echo", vec![Bytes::from(format!("r{i}"))])
                            .await,
                    );
                }
                answers
            }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _broker = broker_process(&ep, "echo");
        let answers = during.await.unwrap();
        for (i, a) in answers.into_iter().enumerate() {
            // Each request answered exactly once, with its own body.
            assert_eq!(text(&a.unwrap()), [format!("r{i}")]);
        }
        wait_workers(&client, "echo", 2).await;
    })
    .await;
}
