//! The Majordomo broker as a real process among real ones: workers killed
//! mid-request, busy and frozen, brokers killed and restarted, and zmesh's
//! tools against another Majordomo broker.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::inproc::*;
use common::zmesh;
use tokio::process::Child;
use zmesh_client::mdp::{Client, ClientConfig, ClientError};
use zmesh_testkit::net::{bounded, free_endpoint as free_ep};
use zmesh_testkit::peer::PyPeer;
use zmesh_testkit::process::{self, SIGCONT, SIGSTOP};

const TEST_LIMIT: Duration = Duration::from_secs(90);

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
