//! The dashboard in a real headless browser (Debian's chromium driven by
//! playwright-core, tests/browser/dashboard.mjs) against a broker carrying
//! MDP, queue and stream traffic: the topology shows every part, the rates on
//! its edges are live and the page updates. The screenshot is kept in
//! target/test-artifacts/dashboard.png.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::broker_listening;
use tokio::process::Command;
use zmesh_client::mdp::{Client, ClientConfig};
use zmesh_client::queue::{QueueClient, QueueClientConfig};
use zmesh_client::stream::{StreamClient, StreamClientConfig};
use zmesh_testkit::net::{bounded, free_endpoint, free_port};
use zmesh_testkit::python::workspace_root;

#[tokio::test]
async fn dashboard_shows_topology_and_live_rates() {
    bounded(Duration::from_secs(120), async {
        let root = workspace_root();
        let data = std::env::temp_dir().join(format!("zmesh-dashboard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let ep = free_endpoint();
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        let (_broker, _log) = broker_listening(&[
            "--bind",
            &ep,
            "--admin-bind",
            &admin,
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .await;
        let _worker = Command::new(env!("CARGO_BIN_EXE_zmesh"))
            .args(["serve", "echo", "--echo", "--broker", &ep])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Traffic of every kind, for as long as the browser looks.
        let traffic = {
            let ep = ep.clone();
            tokio::spawn(async move {
                let mdp = Client::connect(&ep, ClientConfig::default()).await.unwrap();
                let q = QueueClient::connect(&ep, QueueClientConfig::default())
                    .await
                    .unwrap();
                let s = StreamClient::connect(&ep, StreamClientConfig::default())
                    .await
                    .unwrap();
                q.declare("orders", None).await.unwrap();
                s.create("events", None).await.unwrap();
                loop {
                    let _ = mdp.request("echo", vec![Bytes::from("ping")]).await;
                    let _ = q.publish("orders", "order").await;
                    let _ = s.publish("events", "events.click", "x").await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let artifacts = root.join("target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let shot: PathBuf = artifacts.join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        let out = Command::new("node")
            .arg(root.join("tests/browser/dashboard.mjs"))
            .arg(format!("http://{admin}/"))
            .arg(&shot)
            .output()
            .await
            .expect("node (and tests/browser's npm install, done by scripts/test) is needed");
        traffic.abort();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "no report: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(out.status.success(), "dashboard check failed: {report}");
        let nodes: Vec<&str> = report["later"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for want in ["clients", "broker", "echo", "queue orders", "stream events"] {
            assert!(nodes.contains(&want), "topology lacks {want}: {nodes:?}");
        }
        assert!(
            report["later"]["liveEdges"].as_u64().unwrap() >= 3,
            "{report}"
        );
        assert_ne!(
            report["first"]["updated"], report["later"]["updated"],
            "the page did not update"
        );
        assert!(
            report["later"]["sparklines"].as_u64().unwrap() >= 3,
            "{report}"
        );
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "screenshot missing"
        );
        let _ = std::fs::remove_dir_all(&data);
    })
    .await;
}
