//! The Majordomo broker with real peers: pyzmq clients and workers written
//! from the specs, zmesh's own client and worker, and real processes killed,
//! frozen and restarted.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::zmesh;
use tokio::process::{Child, Command};
use zmesh::codec::Json;
use zmesh::{Socket, SocketOptions, SocketType};
use zmesh_broker::breaker::BreakerState;
use zmesh_broker::client::{Client, ClientConfig, ClientError};
use zmesh_broker::core::{Broker, BrokerConfig, ServicePolicy};
use zmesh_broker::worker::{Worker, WorkerConfig, WorkerProtocol, handler};
use zmesh_testkit::net::{bounded, free_endpoint as free_ep};
use zmesh_testkit::peer::PyPeer;
use zmesh_testkit::process::{self, SIGCONT, SIGSTOP};

const TEST_LIMIT: Duration = Duration::from_secs(90);
/// Heartbeats fast enough for tests; python's mdp_peer.py uses the same 300 ms.
const HB: Duration = Duration::from_millis(300);

fn test_config() -> BrokerConfig {
    BrokerConfig {
        heartbeat_interval: HB,
        request_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

/// A broker in this process; returns its endpoint.
async fn broker(cfg: BrokerConfig) -> String {
    let router = Socket::new(SocketType::Router, SocketOptions::default().name("broker")).unwrap();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
    tokio::spawn(async move {
        zmesh_broker::driver::run(&router, Broker::new(cfg), std::future::pending()).await
    });
    ep
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        heartbeat_interval: HB,
        reconnect_initial: Duration::from_millis(100),
        ..Default::default()
    }
}

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

fn client_config() -> ClientConfig {
    ClientConfig {
        attempt_timeout: Duration::from_secs(2),
        retries: 3,
        ..Default::default()
    }
}

fn text(frames: &[Bytes]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
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

/// The drain a deploy relies on: the worker stops taking work, answers every
/// request it holds, says DISCONNECT and returns; nothing is lost or answered
/// with an error. Both worker protocols.
#[tokio::test]
async fn worker_drain_answers_what_it_holds_then_leaves() {
    bounded(TEST_LIMIT, async {
        let ep = broker(test_config()).await;
        let client = Client::connect(&ep, client_config()).await.unwrap();
        for (protocol, service) in [
            (WorkerProtocol::Zmesh, "slow"),
            (WorkerProtocol::Mdp, "slow-mdp"),
        ] {
            let (stop, rx) = tokio::sync::watch::channel(false);
            let cfg = WorkerConfig {
                concurrency: 4,
                protocol,
                ..worker_config()
            };
            let (h, started) = slow_echo(Duration::from_millis(400));
            let run = tokio::spawn(Worker::new(&ep, service, cfg, h).run(rx));
            wait_workers(
                &client,
                service,
                if protocol == WorkerProtocol::Zmesh {
                    1
                } else {
                    4
                },
            )
            .await;
            let calls: Vec<_> = (0..4)
                .map(|i| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        client
                            .request(service, vec![Bytes::from(format!("r{i}"))])
                            .await
                    })
                })
                .collect();
            // The drain starts once the worker holds all four.
            wait_until(|| started.load(Ordering::SeqCst) == 4).await;
            stop.send(true).unwrap();
            for (i, c) in calls.into_iter().enumerate() {
                let reply = c
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{service}: request {i} lost in the drain: {e}"));
                assert_eq!(text(&reply), vec![format!("r{i}")]);
            }
            tokio::time::timeout(Duration::from_secs(5), run)
                .await
                .expect("the worker returns once drained")
                .unwrap();
            wait_workers(&client, service, 0).await;
        }
    })
    .await;
}

/// A drain does not wait forever: a handler still running after the drain
/// timeout is dropped, the worker leaves, and the broker answers the request
/// (503: the service is not idempotent) instead of leaving it hanging. Both
/// worker protocols; and a dropped stop sender is a stop, not a spin.
#[tokio::test]
async fn a_drain_that_outlasts_its_timeout_leaves_and_the_broker_answers() {
    bounded(TEST_LIMIT, async {
        let ep = broker(test_config()).await;
        let client = Client::connect(
            &ep,
            ClientConfig {
                retries: 0,
                attempt_timeout: Duration::from_secs(10),
                ..client_config()
            },
        )
        .await
        .unwrap();
        for (protocol, service, drop_sender) in [
            (WorkerProtocol::Zmesh, "stuck", false),
            (WorkerProtocol::Mdp, "stuck-mdp", false),
            (WorkerProtocol::Mdp, "stuck-dropped", true),
        ] {
            let (stop, rx) = tokio::sync::watch::channel(false);
            let cfg = WorkerConfig {
                drain_timeout: Duration::from_millis(300),
                protocol,
                ..worker_config()
            };
            let (h, started) = slow_echo(Duration::from_secs(60));
            let run = tokio::spawn(Worker::new(&ep, service, cfg, h).run(rx));
            wait_workers(&client, service, 1).await;
            let call = tokio::spawn({
                let client = client.clone();
                async move {
                    client
                        .request(service, vec![Bytes::from_static(b"x")])
                        .await
                }
            });
            wait_until(|| started.load(Ordering::SeqCst) == 1).await;
            if drop_sender {
                drop(stop);
            } else {
                stop.send(true).unwrap();
            }
            tokio::time::timeout(Duration::from_secs(3), run)
                .await
                .unwrap_or_else(|_| panic!("{service}: the worker leaves after its drain timeout"))
                .unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(3), call)
                .await
                .expect("the request is answered, not left hanging")
                .unwrap();
            assert!(
                matches!(&answer, Err(ClientError::Status { code, .. }) if code == "503"),
                "{service}: {answer:?}"
            );
        }
    })
    .await;
}

/// A handler that fails or panics costs its request a `500` reply, not the
/// worker: the requests around it are answered, in the same batches.
#[tokio::test]
async fn a_failing_handler_answers_500_and_the_worker_carries_on() {
    bounded(TEST_LIMIT, async {
        let ep = broker(test_config()).await;
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let cfg = WorkerConfig {
            concurrency: 8,
            ..worker_config()
        };
        let h = handler(|body: Vec<Bytes>| async move {
            match body[0].as_ref() {
                b"panic" => panic!("handler bug"),
                b"fail" => Err("no such order".to_owned()),
                b"slow" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(body)
                }
                _ => Ok(body),
            }
        });
        let mdp = WorkerConfig {
            protocol: WorkerProtocol::Mdp,
            ..cfg.clone()
        };
        tokio::spawn(Worker::new(&ep, "orders", cfg, h.clone()).run(rx.clone()));
        tokio::spawn(Worker::new(&ep, "orders-mdp", mdp, h).run(rx));
        let client = Client::connect(&ep, client_config()).await.unwrap();
        for service in ["orders", "orders-mdp"] {
            let bodies: [&'static str; 7] = ["ok", "panic", "slow", "fail", "ok", "panic", "slow"];
            let calls = bodies.into_iter().map(|b| {
                let client = client.clone();
                async move {
                    client
                        .request(service, vec![Bytes::from_static(b.as_bytes())])
                        .await
                }
            });
            let replies = futures_join_all(calls).await;
            for (b, r) in bodies.iter().zip(replies) {
                let got = text(&r.unwrap());
                let want: Vec<String> = match *b {
                    "panic" => vec!["500".into(), "handler panicked".into()],
                    "fail" => vec!["500".into(), "no such order".into()],
                    other => vec![other.into()],
                };
                assert_eq!(got, want, "{service}: reply to {b:?}");
            }
        }
        // A name the broker would refuse never leaves the client (it would
        // cost the other requests of its batch a round trip).
        let bad = client.request("no such name", vec![]).await;
        assert!(
            matches!(bad, Err(ClientError::InvalidService(_))),
            "{bad:?}"
        );
        // A handler that panics when called, before it returns its future.
        let (_stop2, rx2) = tokio::sync::watch::channel(false);
        let eager: zmesh_broker::worker::Handler = std::sync::Arc::new(|body: Vec<Bytes>| {
            assert!(body[0].as_ref() != b"boom", "handler bug at call time");
            Box::pin(async move { Ok(body) })
        });
        tokio::spawn(Worker::new(&ep, "eager", worker_config(), eager).run(rx2));
        for (b, want) in [
            ("boom", vec!["500", "handler panicked"]),
            ("fine", vec!["fine"]),
        ] {
            let r = client
                .request("eager", vec![Bytes::from_static(b.as_bytes())])
                .await;
            assert_eq!(text(&r.unwrap()), want, "reply to {b:?}");
        }
    })
    .await;
}

async fn futures_join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
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
fn slow_echo(delay: Duration) -> (zmesh_broker::worker::Handler, Arc<AtomicU32>) {
    let started = Arc::new(AtomicU32::new(0));
    let counter = started.clone();
    let h = handler(move |body: Vec<Bytes>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            Ok(body)
        }
    });
    (h, started)
}

/// Poll `done` every 10 ms for up to 10 s.
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the broker reports `n` workers for `service`.
async fn wait_workers(client: &Client, service: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = client.request("zmesh.services", vec![]).await {
            let v: serde_json::Value = serde_json::from_slice(&r[1]).unwrap();
            let count = v["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == service)
                .map_or(0, |s| s["workers"].as_u64().unwrap());
            if count == n {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never had {n} workers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
