//! The worker library against an in-process broker: the drain a deploy
//! relies on (both worker protocols), its deadline, and handlers that fail or
//! panic.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::inproc::*;
use zmesh_client::mdp::{Client, ClientConfig, ClientError};
use zmesh_client::worker::{Worker, WorkerConfig, WorkerProtocol, handler};
use zmesh_testkit::net::bounded;

const TEST_LIMIT: Duration = Duration::from_secs(90);

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
                .unwrap()
                .expect("stopped, not refused");
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
                .unwrap()
                .expect("stopped, not refused");
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
        let eager: zmesh_client::worker::Handler = std::sync::Arc::new(|body: Vec<Bytes>| {
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
