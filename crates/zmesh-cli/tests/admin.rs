//! Operating the broker: the admin port's metrics (checked with a real
//! OpenMetrics parser against known traffic), its API and token, config file
//! errors, and a graceful shutdown under load.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::admin::{http, http_to, parse_metrics};
use common::{broker_listening, temp_dir};
use tokio::process::{Child, Command};
use zmesh_client::mdp::{Client, ClientConfig};
use zmesh_client::queue::{QueueClient, QueueClientConfig};
use zmesh_testkit::net::{bounded, free_endpoint, free_port};

const LIMIT: Duration = Duration::from_secs(90);

async fn broker(args: &[&str]) -> Child {
    broker_listening(args).await.0
}

#[tokio::test]
async fn metrics_and_api_reflect_known_traffic_and_changes_need_the_token() {
    bounded(LIMIT, async {
        let d = temp_dir("metrics");
        let ep = free_endpoint();
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let data = d.join("data");
        let _b = broker(&[
            "--bind",
            &ep,
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-bind",
            &admin,
            "--admin-token",
            "s3cret",
        ])
        .await;
        let c = QueueClient::connect(&ep, QueueClientConfig::default())
            .await
            .unwrap();
        c.declare("jobs", None).await.unwrap();
        for i in 0..5 {
            c.publish("jobs", format!("m{i}")).await.unwrap();
        }
        let mut consumer = c.consume("jobs", 2).await.unwrap();
        for _ in 0..2 {
            let m = consumer.next().await.unwrap();
            consumer.ack(m.tag).await.unwrap();
        }
        // Cancelled: what it still held goes back to ready.
        consumer.cancel().await.unwrap();
        // The snapshot behind /metrics is refreshed every second.
        let want = [
            ("zmesh_queue_published_total{queue=jobs}", 5.0),
            ("zmesh_queue_acked_total{queue=jobs}", 2.0),
            ("zmesh_queue_messages{queue=jobs,state=ready}", 3.0),
            ("zmesh_up{}", 1.0),
            // 5 publishes arrived at least (plus declare, consume, acks...).
            ("zmesh_broker_messages_total{direction=in}", -1.0),
        ];
        let t = Instant::now();
        let samples = loop {
            let (status, text) = http(port, "GET", "/metrics", None, "").await;
            assert_eq!(status, 200);
            let samples = parse_metrics(&text);
            // -1 stands for "present and positive".
            let matches = |k: &str, v: f64| match samples[k].as_f64() {
                Some(x) if v < 0.0 => x > 0.0,
                x => x == Some(v),
            };
            if want.iter().all(|(k, v)| matches(k, *v)) {
                break samples;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "metrics never matched the traffic: {samples}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        // Group commits were timed: the fsync histogram has observations.
        assert!(
            samples["zmesh_journal_fsync_duration_seconds_count{}"].as_f64() >= Some(1.0),
            "{samples}"
        );
        assert!(
            samples.get("zmesh_connections{state=active}").is_some(),
            "{samples}"
        );

        let (status, body) = http(port, "GET", "/api/queues", None, "").await;
        assert_eq!(status, 200);
        let queues: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(queues[0]["name"], "jobs");
        assert_eq!(http(port, "GET", "/healthz", None, "").await.0, 200);
        assert_eq!(http(port, "GET", "/readyz", None, "").await.0, 200);
        // Every path the OpenAPI document lists is served.
        let (_, doc) = http(port, "GET", "/api/openapi.json", None, "").await;
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        for path in doc["paths"].as_object().unwrap().keys() {
            // /api/events never ends: it is checked by the dashboard test.
            if !path.contains('{') && path != "/api/events" {
                assert_eq!(http(port, "GET", path, None, "").await.0, 200, "{path}");
            }
        }
        // The CLI's overview reads the same API.
        let out = Command::new(env!("CARGO_BIN_EXE_zmesh"))
            .args(["status", "--admin", &admin])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("jobs") && text.contains("serving"),
            "{text}"
        );
        // Changes need the token.
        assert_eq!(
            http(port, "POST", "/api/queues/jobs/purge", None, "")
                .await
                .0,
            401
        );
        assert_eq!(
            http(port, "POST", "/api/queues/jobs/purge", Some("wrong"), "")
                .await
                .0,
            401
        );
        assert_eq!(
            http(port, "PUT", "/api/routes/orders", None, "orders@v1:1")
                .await
                .0,
            401
        );
        let (status, body) = http(port, "POST", "/api/queues/jobs/purge", Some("s3cret"), "").await;
        assert_eq!((status, body.as_str()), (200, r#"{"purged":3}"#));
        assert_eq!(
            http(port, "POST", "/api/queues/nope/purge", Some("s3cret"), "")
                .await
                .0,
            404
        );
        assert_eq!(
            http(
                port,
                "PUT",
                "/api/routes/orders",
                Some("s3cret"),
                "orders@v1:95,orders@v2:5"
            )
            .await
            .0,
            200
        );
        assert_eq!(
            http(
                port,
                "PUT",
                "/api/routes/orders",
                Some("s3cret"),
                "nonsense"
            )
            .await
            .0,
            400
        );
        let _ = std::fs::remove_dir_all(&d);
    })
    .await;
}

#[tokio::test]
async fn without_a_token_every_change_is_refused() {
    bounded(LIMIT, async {
        let d = temp_dir("notoken");
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let data = d.join("data");
        let _b = broker(&[
            "--bind",
            &free_endpoint(),
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-bind",
            &admin,
        ])
        .await;
        assert_eq!(
            http(port, "POST", "/api/queues/jobs/purge", Some("anything"), "")
                .await
                .0,
            403
        );
        let _ = std::fs::remove_dir_all(&d);
    })
    .await;
}

/// A web page whose domain re-resolves to the broker's address (DNS
/// rebinding) sends its own name as Host: refused before any handler, reads
/// included; addresses, localhost and names given with --admin-host pass.
#[tokio::test]
async fn requests_naming_a_foreign_host_are_refused() {
    bounded(LIMIT, async {
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let _b = broker(&[
            "--bind",
            &free_endpoint(),
            "--no-queues",
            "--admin-bind",
            &admin,
            "--admin-host",
            "broker.internal",
        ])
        .await;
        for path in ["/api/overview", "/metrics", "/", "/api/events"] {
            let (status, body) = http_to(port, "evil.example", "GET", path, None, "").await;
            assert_eq!(status, 403, "{path}: {body}");
            assert!(body.contains("--admin-host"), "{body}");
        }
        for host in [admin.as_str(), "localhost", "broker.internal:8222"] {
            let (status, body) = http_to(port, host, "GET", "/api/overview", None, "").await;
            assert_eq!(status, 200, "{host}: {body}");
        }
    })
    .await;
}

#[tokio::test]
async fn each_kind_of_config_mistake_is_named() {
    let d = temp_dir("config");
    let cases = [
        (
            "[broker]\nbnd = [\"tcp://127.0.0.1:1\"]\n",
            "unknown field `bnd`",
        ),
        ("[broker]\nqueue_max = \"many\"\n", "invalid type"),
        ("[broker]\nbind = [\"tpc://x:1\"]\n", "broker.bind[0]"),
        (
            "[broker.security]\ncurve_secret_key_file = \"/no/such.key_secret\"\n",
            "broker.security.curve_secret_key_file",
        ),
        (
            "[broker]\nadmin_bind = \"localhost\"\n",
            "broker.admin_bind",
        ),
        (
            "[broker]\nadmin_host = [\"evil example\"]\n",
            "broker.admin_host[0]",
        ),
        ("[brokr]\n", "unknown field `brokr`"),
        ("[broker]\ncluster = \"t\"\n", "go together"),
        (
            "[broker]\ncluster = \"t\"\nnode_id = 4\npeers = [\"1=tcp://127.0.0.1:1\"]\n",
            "broker.node_id: 4 is not among",
        ),
        (
            "[broker]\ncluster = \"t\"\nnode_id = 1\npeers = [\"1=tcp://*:1\"]\n",
            "broker.peers[0]",
        ),
        (
            "[broker]\ncluster = \"t\"\nnode_id = 1\npeers = [\"1=tcp://127.0.0.1:1\", \"1=tcp://127.0.0.1:2\"]\n",
            "broker.peers[1]: node 1 is listed twice",
        ),
        (
            "[broker]\ncluster = \"t\"\nnode_id = 1\npeers = [\"1=tcp://127.0.0.1:1\", \"2=tcp://127.0.0.1:1\"]\n",
            "broker.peers[1]: tcp://127.0.0.1:1 is listed for two nodes",
        ),
        (
            "[broker]\ncluster = \"t\"\nnode_id = 1\nno_queues = true\npeers = [\"1=tcp://127.0.0.1:1\"]\n",
            "needs them",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = d.join(format!("c{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zmesh"))
            .args(["broker", "--config", f.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}: expected {want:?} in {err}");
    }
    // Precedence: flag > environment > file; secrets never printed.
    let f = d.join("ok.toml");
    std::fs::write(
        &f,
        "[broker]\nbind = [\"tcp://127.0.0.1:7001\"]\nqueue_max = 7\nsegment_mib = 3\nadmin_token = \"hush\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args([
            "broker",
            "--config",
            f.to_str().unwrap(),
            "--queue-max",
            "9",
            "--print-config",
        ])
        .env("ZMESH_BIND", "tcp://127.0.0.1:7002")
        .env(
            "ZMESH_ROUTE",
            "orders=orders@v1:95,orders@v2:5;users=users@v2:1",
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"orders=orders@v1:95,orders@v2:5\"")
            && text.contains("\"users=users@v2:1\""),
        "two routes in one environment variable, each its own entry: {text}"
    );
    assert!(
        text.contains("tcp://127.0.0.1:7002"),
        "env over file: {text}"
    );
    assert!(text.contains("queue_max = 9"), "flag over file: {text}");
    assert!(
        text.contains("segment_mib = 3"),
        "file over default: {text}"
    );
    assert!(
        text.contains("(set, hidden)") && !text.contains("hush"),
        "the secret: {text}"
    );
    // A mistake on a secret's line does not print the secret.
    let f = d.join("typo.toml");
    std::fs::write(&f, "[broker]\nadmin_tokn = \"hush\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args(["broker", "--config", f.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_tokn") && !err.contains("hush"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    bounded(LIMIT, async {
        let d = temp_dir("drain");
        let ep = free_endpoint();
        let data = d.join("data");
        let (mut b, mut log) = broker_listening(&[
            "--bind",
            &ep,
            "--data-dir",
            data.to_str().unwrap(),
            "--drain-timeout-ms",
            "5000",
            "--worker-heartbeat-ms",
            "500",
        ])
        .await;
        let _w = Command::new(env!("CARGO_BIN_EXE_zmesh"))
            .args([
                "serve",
                "slow",
                "--broker",
                &ep,
                "--concurrency",
                "8",
                "--delay-ms",
                "800",
                "--heartbeat-ms",
                "500",
                "--echo",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let client = Client::connect(
            &ep,
            ClientConfig {
                retries: 0,
                attempt_timeout: Duration::from_secs(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // Wait for the worker, then put 8 requests in flight.
        let t = Instant::now();
        while client
            .request("mmi.service", vec![Bytes::from("slow")])
            .await
            .unwrap()[0]
            != "200"
        {
            assert!(t.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Confirmed queue messages must survive the stop.
        let q = QueueClient::connect(&ep, QueueClientConfig::default())
            .await
            .unwrap();
        q.declare("kept", None).await.unwrap();
        for i in 0..100 {
            q.publish("kept", format!("m{i}")).await.unwrap();
        }
        let inflight: Vec<_> = (0..8)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(
                    async move { c.request("slow", vec![Bytes::from(format!("r{i}"))]).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pid = b.id().unwrap();
        let stopped_at = Instant::now();
        zmesh_testkit::process::signal(pid, 15).unwrap();
        // New requests are turned away while the held ones finish.
        // Wait for the broker to say it is draining (no fixed sleep).
        while let Ok(Some(l)) = log.next_line().await {
            if l.contains("draining") {
                break;
            }
        }
        // Publishes are refused too while draining.
        let late_publish = q.publish("kept", "late").await;
        assert_eq!(
            late_publish.as_ref().err().and_then(|e| e.code()),
            Some(503),
            "{late_publish:?}"
        );
        let refused = client.request("slow", vec![Bytes::from("late")]).await;
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("shutting down")),
            "a request was accepted while draining: {refused:?}"
        );
        for (i, r) in inflight.into_iter().enumerate() {
            let reply = r
                .await
                .unwrap()
                .expect("in-flight request answered during the drain");
            assert_eq!(reply[0], format!("r{i}"));
        }
        let status = tokio::time::timeout(Duration::from_secs(6), b.wait())
            .await
            .expect("exits within the drain timeout")
            .unwrap();
        assert!(status.success(), "{status:?}");
        assert!(stopped_at.elapsed() < Duration::from_secs(5));
        // Restarted on the same data: every confirmed message is there.
        let _b = broker(&["--bind", &ep, "--data-dir", data.to_str().unwrap()]).await;
        let stats = q.stats(Some("kept")).await.unwrap();
        assert_eq!(stats[0]["ready"], 100, "{stats:?}");
        let _ = std::fs::remove_dir_all(&d);
    })
    .await;
}

#[tokio::test]
async fn admin_api_conforms_to_its_openapi_document() {
    bounded(Duration::from_secs(300), async {
        let d = temp_dir("schemathesis");
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let data = d.join("data");
        let _b = broker(&[
            "--bind",
            &free_endpoint(),
            "--data-dir",
            data.to_str().unwrap(),
            "--admin-bind",
            &admin,
            "--admin-token",
            "t0k",
        ])
        .await;
        // Without the token (every change refused) and with it (changes made):
        // schemathesis generates requests from the document and checks every
        // response against it, both ways (valid accepted, invalid refused).
        for auth in [None, Some("Authorization: Bearer t0k")] {
            // The venv's console script, beside its interpreter.
            let st = zmesh_testkit::python::interpreter().with_file_name("schemathesis");
            let mut cmd = Command::new(st);
            cmd.arg("run")
                .arg(format!("http://{admin}/api/openapi.json"))
                .args([
                    "--exclude-path",
                    "/api/events",
                    "--checks",
                    "all",
                    "--max-examples",
                    "40",
                ])
                .args(["--seed", "20261127"]);
            if let Some(h) = auth {
                cmd.args(["-H", h]);
            }
            let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .expect("schemathesis finishes")
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "auth {auth:?}:\n{text}");
        }
        let _ = std::fs::remove_dir_all(&d);
    })
    .await;
}
