//! `zmesh monitor`: a socket's connection events and peer states, live.

use std::time::Duration;

use clap::Args;
use zmesh::registry::{ConnectionEvent, PeerSnapshot, SocketSnapshot};
use zmesh::{Socket, SocketType};

use super::UsageError;
use crate::socket_args::SocketArgs;

/// Options of `zmesh monitor`.
#[derive(Args, Debug)]
#[command(after_help = "Example: watch a server come and go
  zmesh monitor --connect tcp://127.0.0.1:5555 --type dealer --interval-ms 1000")]
pub struct MonitorCmd {
    /// Socket type to open (it must be a valid peer of the other end).
    #[arg(long = "type", default_value = "dealer")]
    pub socket_type: String,
    /// Listen on this endpoint; repeatable.
    #[arg(short, long)]
    pub bind: Vec<String>,
    /// Dial this endpoint; repeatable.
    #[arg(short, long)]
    pub connect: Vec<String>,
    /// Print events and tables as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Print the peer table this often, in ms (0: only events).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Run `zmesh monitor`.
pub async fn run(cmd: MonitorCmd) -> anyhow::Result<i32> {
    let t: SocketType = cmd
        .socket_type
        .parse()
        .map_err(|e: zmesh::UnknownSocketType| UsageError(e.to_string()))?;
    if cmd.bind.is_empty() && cmd.connect.is_empty() {
        return Err(
            UsageError("monitor needs at least one --bind or --connect endpoint".into()).into(),
        );
    }
    let registry = zmesh::Registry::new();
    let mut events = registry.subscribe();
    let sock = Socket::with_registry(
        t,
        cmd.socket
            .options()?
            .name(format!("monitor-{}", t.as_str().to_lowercase())),
        &registry,
    )?;
    for ep in &cmd.bind {
        let real = sock.bind(ep).await?;
        eprintln!("zmesh: monitor listening on {real}");
    }
    for ep in &cmd.connect {
        sock.connect(ep).await?;
    }
    if t == SocketType::Sub {
        sock.subscribe(Vec::<u8>::new()).await?;
    }
    let stop = async {
        match cmd.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs_f64(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    let mut table = tokio::time::interval(Duration::from_millis(cmd.interval_ms.max(1)));
    table.tick().await;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => print_event(&ev, cmd.json),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("zmesh: {n} events skipped"),
                Err(_) => break,
            },
            // Drain whatever arrives so the peer is never blocked by us; count it.
            m = sock.recv(), if t.can_recv() => { m?; }
            _ = table.tick(), if cmd.interval_ms > 0 => {
                if let Some(s) = sock.snapshot() { print_table(&s, cmd.json); }
            }
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Some(s) = sock.snapshot() {
        print_table(&s, cmd.json);
    }
    sock.close().await?;
    Ok(0)
}

fn print_event(ev: &ConnectionEvent, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "event": ev }));
        return;
    }
    let from = ev
        .from
        .map(|s| s.to_string())
        .unwrap_or_else(|| "new".into());
    let reason = ev
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    println!(
        "{} {} {} -> {}{}",
        ev.socket_name, ev.peer, from, ev.to, reason
    );
}

/// Print one socket's peers as a table (or a JSON line).
pub fn print_table(s: &SocketSnapshot, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "socket": s }));
        return;
    }
    println!(
        "{} [{}] in {} msg / {} B, out {} msg / {} B, drops {}",
        s.name,
        s.socket_type,
        s.traffic.msgs_in,
        s.traffic.bytes_in,
        s.traffic.msgs_out,
        s.traffic.bytes_out,
        s.drops
    );
    for p in &s.peers {
        println!("  {}", peer_line(p));
    }
}

/// One peer, on one line.
pub fn peer_line(p: &PeerSnapshot) -> String {
    format!(
        "{:<34} {:<11} remote={} reconnects={} hs_fail={} hb_timeouts={} in={} out={}{}{}",
        p.key,
        p.state.to_string(),
        p.remote_addr.as_deref().unwrap_or("-"),
        p.reconnects,
        p.handshake_failures,
        p.heartbeat_timeouts,
        p.traffic.msgs_in,
        p.traffic.msgs_out,
        p.retry_in_ms
            .map(|ms| format!(" retry_in={ms}ms"))
            .unwrap_or_default(),
        p.last_error
            .as_deref()
            .map(|e| format!(" last_error=\"{e}\""))
            .unwrap_or_default(),
    )
}
