//! `zmesh status`: what the broker's admin API says, as tables — services,
//! queues, streams and connections in one look.

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::UsageError;

/// Options of `zmesh status`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  zmesh status                                  # the admin port at 127.0.0.1:8222
  zmesh status --admin 10.0.0.5:8222 --json")]
pub struct StatusCmd {
    /// The broker's admin port (HOST:PORT, as given to `zmesh broker --admin-bind`).
    #[arg(long, default_value = "127.0.0.1:8222", env = "ZMESH_ADMIN")]
    pub admin: String,
    /// Print the raw JSON overview.
    #[arg(long)]
    pub json: bool,
}

/// A GET over plain HTTP/1.1 to the admin port: a dozen lines, for the one
/// request this command makes, instead of an HTTP client library.
async fn get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("admin port {addr}: connect timed out"))??;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut resp),
    )
    .await
    .map_err(|_| anyhow::anyhow!("admin port {addr}: no answer"))??;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("admin port {addr}: not HTTP"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("admin port {addr}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// Print the overview; exit 1 when the admin port does not answer.
pub async fn run(cmd: StatusCmd) -> anyhow::Result<i32> {
    if cmd.admin.contains("://") {
        return Err(UsageError(format!(
            "--admin {:?}: give HOST:PORT, no scheme",
            cmd.admin
        ))
        .into());
    }
    let body = match get(&cmd.admin, "/api/overview").await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("zmesh: {e}");
            return Ok(1);
        }
    };
    let v: serde_json::Value = serde_json::from_str(&body)?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let n = |x: &serde_json::Value, k: &str| x[k].as_u64().unwrap_or(0);
    let uptime = (n(&v, "updated_ms").saturating_sub(n(&v, "started_ms"))) / 1000;
    println!(
        "zmesh broker {} — {}, up {uptime} s, {} workers, {} requests held",
        v["version"].as_str().unwrap_or("?"),
        if v["draining"].as_bool() == Some(true) {
            "draining"
        } else {
            "serving"
        },
        n(&v, "workers"),
        n(&v, "requests_held"),
    );
    let empty = Vec::new();
    let list = |k: &str| v[k].as_array().unwrap_or(&empty).clone();
    println!(
        "\n{:<24} {:>8} {:>6} {:>8} {:>10} {:>8}",
        "SERVICE", "WORKERS", "IDLE", "QUEUED", "REQUESTS", "ERRORS"
    );
    for s in list("services") {
        println!(
            "{:<24} {:>8} {:>6} {:>8} {:>10} {:>8}",
            s["name"].as_str().unwrap_or("?"),
            n(&s, "workers"),
            n(&s, "idle"),
            n(&s, "queued"),
            n(&s, "requests"),
            n(&s, "errors")
        );
    }
    println!(
        "\n{:<24} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "QUEUE", "READY", "UNACKED", "PUBLISHED", "ACKED", "DEADLETTER"
    );
    for q in list("queues") {
        println!(
            "{:<24} {:>8} {:>8} {:>10} {:>10} {:>10}",
            q["name"].as_str().unwrap_or("?"),
            n(&q, "ready"),
            n(&q, "unacked"),
            n(&q, "published"),
            n(&q, "acked"),
            n(&q, "dead_lettered")
        );
    }
    println!(
        "\n{:<24} {:>10} {:>12} {:>8}",
        "STREAM", "MESSAGES", "SUBSCRIBERS", "LAG"
    );
    for s in list("streams") {
        println!(
            "{:<24} {:>10} {:>12} {:>8}",
            s["name"].as_str().unwrap_or("?"),
            n(&s, "messages"),
            n(&s, "subscribers"),
            n(&s, "lag_max")
        );
    }
    let conns = list("connections");
    let active = conns.iter().filter(|c| c["state"] == "active").count();
    println!("\nconnections: {active} active of {}", conns.len());
    Ok(0)
}
