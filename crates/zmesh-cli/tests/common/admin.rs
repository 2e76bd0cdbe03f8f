//! The broker's admin port over plain HTTP/1.1: requests, and /metrics read
//! with a real OpenMetrics parser.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 request; returns (status, body).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    http_to(
        port,
        &format!("127.0.0.1:{port}"),
        method,
        path,
        token,
        body,
    )
    .await
}

/// [`http`] with the `Host` header given.
pub async fn http_to(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    (status, body)
}

pub fn parse_metrics(text: &str) -> serde_json::Value {
    let script = zmesh_testkit::python::workspace_root().join("tests/python/parse_metrics.py");
    let mut child = std::process::Command::new(zmesh_testkit::python::interpreter())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics:\n{text}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// /metrics once `done` holds for its samples (the snapshot behind it is
/// refreshed every second), or a failure naming what was last seen.
pub async fn metrics_when(
    port: u16,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let (status, text) = http(port, "GET", "/metrics", None, "").await;
        assert_eq!(status, 200);
        let samples = parse_metrics(&text);
        if done(&samples) {
            return samples;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "metrics never showed {what}: {samples}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
