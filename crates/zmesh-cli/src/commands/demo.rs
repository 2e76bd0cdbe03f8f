//! `zmesh demo`: a client node and a server node exchanging request/reply,
//! pub/sub and pipeline traffic over tcp; the server is SIGKILLed mid-run and
//! restarted, and the client's live connection table shows the links drop,
//! back off and come back — with no code in the client to make that happen.
//!
//! Payloads use the three codecs: requests JSON, ticks MessagePack, jobs Protobuf.
//! The client node also runs a Majordomo broker with two worker processes of
//! an idempotent service; one worker is killed with the server and restarted,
//! and the calls through the broker keep being answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use zmesh::codec::{Json, MsgPack, Protobuf};
use zmesh::registry::PeerState;
use zmesh::{Socket, SocketOptions, SocketType};

use zmesh_broker::mdp::{Broker, BrokerConfig, ServicePolicy};
use zmesh_client::mdp::{Client, ClientConfig};

use crate::demo_proto::Job;

/// Options of `zmesh demo`.
#[derive(Args, Debug)]
pub struct DemoCmd {
    /// Total run time, in seconds.
    #[arg(long, default_value_t = 12.0)]
    pub duration: f64,
    /// When to SIGKILL the server node, in seconds from start.
    #[arg(long, default_value_t = 4.0)]
    pub kill_at: f64,
    /// When to start it again.
    #[arg(long, default_value_t = 6.5)]
    pub restart_at: f64,
    /// Print the connection table this often, in ms.
    #[arg(long, default_value_t = 1000)]
    pub table_ms: u64,
}

/// Options of the hidden `zmesh demo-node`.
#[derive(Args, Debug)]
pub struct DemoNodeCmd {
    /// Port of the REP service.
    #[arg(long)]
    pub rep_port: u16,
    /// Port of the PUB ticker.
    #[arg(long)]
    pub pub_port: u16,
    /// Port of the PULL job sink.
    #[arg(long)]
    pub pull_port: u16,
}

#[derive(Serialize, Deserialize)]
struct SquareRequest {
    n: u64,
}

#[derive(Serialize, Deserialize)]
struct SquareReply {
    n: u64,
    square: u64,
    server_pid: u32,
}

#[derive(Serialize, Deserialize)]
struct Tick {
    seq: u64,
    server_pid: u32,
}

/// Heartbeats fast enough that the demo shows detection within a second or two.
fn demo_options(name: &str) -> SocketOptions {
    SocketOptions::default()
        .heartbeat_interval(Duration::from_millis(250))
        .heartbeat_timeout(Duration::from_millis(1000))
        .backoff(Duration::from_millis(100), Duration::from_millis(1000))
        .name(name)
}

/// The server node: REP squares numbers, PUB ticks, PULL counts jobs.
pub async fn run_node(cmd: DemoNodeCmd) -> anyhow::Result<i32> {
    let pid = std::process::id();
    let rep = Socket::new(SocketType::Rep, demo_options("server-rep"))?;
    rep.bind(&format!("tcp://127.0.0.1:{}", cmd.rep_port))
        .await?;
    let publisher = Socket::new(SocketType::Pub, demo_options("server-pub"))?;
    publisher
        .bind(&format!("tcp://127.0.0.1:{}", cmd.pub_port))
        .await?;
    let pull = Socket::new(SocketType::Pull, demo_options("server-pull"))?;
    pull.bind(&format!("tcp://127.0.0.1:{}", cmd.pull_port))
        .await?;
    println!("ready pid={pid}");
    let ticker = async {
        let mut seq = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seq += 1;
            publisher
                .send_as::<MsgPack, _>(&Tick {
                    seq,
                    server_pid: pid,
                })
                .await?;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let server = async {
        loop {
            let req: SquareRequest = rep.recv_as::<Json, _>().await?;
            rep.send_as::<Json, _>(&SquareReply {
                n: req.n,
                square: req.n * req.n,
                server_pid: pid,
            })
            .await?;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let sink = async {
        loop {
            let _job: Job = pull.recv_as::<Protobuf, _>().await?;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    tokio::select! { r = ticker => r?, r = server => r?, r = sink => r? }
    Ok(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn_node(ports: (u16, u16, u16)) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .args([
            "demo-node",
            "--rep-port",
            &ports.0.to_string(),
            "--pub-port",
            &ports.1.to_string(),
        ])
        .args(["--pull-port", &ports.2.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

#[derive(Default)]
struct Counts {
    replies: AtomicU64,
    request_timeouts: AtomicU64,
    ticks: AtomicU64,
    jobs_sent: AtomicU64,
    broker_ok: AtomicU64,
    broker_failed: AtomicU64,
}

/// Run the demo; exits 1 if traffic did not resume after the restart.
pub async fn run(cmd: DemoCmd) -> anyhow::Result<i32> {
    let ports = (free_port()?, free_port()?, free_port()?);
    println!(
        "zmesh demo: server node on 127.0.0.1 ports {} (REP), {} (PUB), {} (PULL)",
        ports.0, ports.1, ports.2
    );
    println!(
        "  client node: REQ (JSON, lazy-pirate retries), SUB (MessagePack ticks), PUSH (Protobuf jobs)"
    );
    println!(
        "  the server is SIGKILLed at {:.1}s and restarted at {:.1}s; watch the links recover\n",
        cmd.kill_at, cmd.restart_at
    );
    let mut child = Some(spawn_node(ports)?);
    let counts = Arc::new(Counts::default());
    let registry = zmesh::Registry::global();
    let mut events = registry.subscribe();

    let sub = Socket::new(SocketType::Sub, demo_options("client-sub"))?;
    sub.connect(&format!("tcp://127.0.0.1:{}", ports.1)).await?;
    sub.subscribe(Vec::<u8>::new()).await?;
    let push = Socket::new(
        SocketType::Push,
        demo_options("client-push").send_timeout(Some(Duration::from_millis(200))),
    )?;
    push.connect(&format!("tcp://127.0.0.1:{}", ports.2))
        .await?;

    // The broker, in this node, with two worker processes of an idempotent service.
    let broker_ep = format!("tcp://127.0.0.1:{}", free_port()?);
    let router = Socket::new(
        SocketType::Router,
        demo_options("broker").router_mandatory(true),
    )?;
    router.bind(&broker_ep).await?;
    let mut bcfg = BrokerConfig {
        heartbeat_interval: Duration::from_millis(250),
        ..Default::default()
    };
    bcfg.policies.insert(
        "resize".into(),
        ServicePolicy {
            idempotent: true,
            ..Default::default()
        },
    );
    let broker = tokio::spawn(async move {
        zmesh_broker::driver::run(&router, Broker::new(bcfg), std::future::pending()).await
    });
    let mut workers = vec![spawn_worker(&broker_ep)?, spawn_worker(&broker_ep)?];
    println!(
        "  broker on {broker_ep}: service \"resize\" (idempotent) with two worker processes; one is killed with the server\n"
    );

    let tasks = [
        tokio::spawn(broker_caller(broker_ep.clone(), counts.clone())),
        tokio::spawn(requester(
            format!("tcp://127.0.0.1:{}", ports.0),
            counts.clone(),
        )),
        tokio::spawn(subscriber(sub.clone(), counts.clone())),
        tokio::spawn(pusher(push.clone(), counts.clone())),
    ];

    let start = tokio::time::Instant::now();
    let kill_at = start + Duration::from_secs_f64(cmd.kill_at);
    let restart_at = start + Duration::from_secs_f64(cmd.restart_at);
    let end = start + Duration::from_secs_f64(cmd.duration);
    let mut table = tokio::time::interval(Duration::from_millis(cmd.table_ms.max(100)));
    let (mut killed, mut restarted) = (false, false);
    let mut replies_at_restart = 0;
    let mut broker_ok_at_restart = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(kill_at), if !killed => {
                killed = true;
                if let Some(mut c) = child.take() {
                    c.start_kill()?;
                    let _ = c.wait().await;
                }
                workers[0].start_kill()?;
                let _ = workers[0].wait().await;
                println!("\n*** {:.1}s: server node and one broker worker SIGKILLed ***\n", start.elapsed().as_secs_f64());
            }
            _ = tokio::time::sleep_until(restart_at), if !restarted => {
                restarted = true;
                replies_at_restart = counts.replies.load(Ordering::Relaxed);
                broker_ok_at_restart = counts.broker_ok.load(Ordering::Relaxed);
                child = Some(spawn_node(ports)?);
                workers[0] = spawn_worker(&broker_ep)?;
                println!("\n*** {:.1}s: server node and worker restarted ***\n", start.elapsed().as_secs_f64());
            }
            ev = events.recv() => if let Ok(ev) = ev && ev.socket_name.starts_with("client") {
                {
                    let reason = ev.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                    println!("  [{:>5.2}s] {} {} -> {}{}", start.elapsed().as_secs_f64(), ev.socket_name, ev.from.map(|s| s.to_string()).unwrap_or_else(|| "new".into()), ev.to, reason);
                }
            },
            _ = table.tick() => print_status(start, &counts),
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    for t in &tasks {
        t.abort();
    }
    broker.abort();
    for w in &mut workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
    print_status(start, &counts);
    let replies_after = counts
        .replies
        .load(Ordering::Relaxed)
        .saturating_sub(replies_at_restart);
    let broker_after = counts
        .broker_ok
        .load(Ordering::Relaxed)
        .saturating_sub(broker_ok_at_restart);
    println!(
        "broker: {} calls answered ({} after the restart), {} failed",
        counts.broker_ok.load(Ordering::Relaxed),
        broker_after,
        counts.broker_failed.load(Ordering::Relaxed)
    );
    let resumed = replies_after > 0
        && broker_after > 0
        && sub.peers().iter().any(|p| p.state == PeerState::Active)
        && push.peers().iter().any(|p| p.reconnects > 0);
    println!(
        "\nsummary: {} replies ({} after the restart), {} request timeouts retried, {} ticks, {} jobs sent",
        counts.replies.load(Ordering::Relaxed),
        replies_after,
        counts.request_timeouts.load(Ordering::Relaxed),
        counts.ticks.load(Ordering::Relaxed),
        counts.jobs_sent.load(Ordering::Relaxed)
    );
    println!(
        "{}",
        if resumed {
            "traffic resumed after the restart: OK"
        } else {
            "traffic did NOT resume"
        }
    );
    if let Some(mut c) = child {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    Ok(if resumed { 0 } else { 1 })
}

fn print_status(start: tokio::time::Instant, counts: &Counts) {
    println!(
        "--- {:>5.1}s  broker calls ok={} failed={}  replies={} timeouts={} ticks={} jobs={}",
        start.elapsed().as_secs_f64(),
        counts.broker_ok.load(Ordering::Relaxed),
        counts.broker_failed.load(Ordering::Relaxed),
        counts.replies.load(Ordering::Relaxed),
        counts.request_timeouts.load(Ordering::Relaxed),
        counts.ticks.load(Ordering::Relaxed),
        counts.jobs_sent.load(Ordering::Relaxed)
    );
    for s in zmesh::Registry::global().snapshot() {
        if s.closed || !s.name.starts_with("client") {
            continue;
        }
        for p in &s.peers {
            println!("    {:<12} {}", s.name, super::monitor::peer_line(p));
        }
    }
}

fn spawn_worker(broker: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .args([
            "serve",
            "resize",
            "--echo",
            "--broker",
            broker,
            "--heartbeat-ms",
            "250",
            "--delay-ms",
            "20",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// Calls through the broker: the client retries with backoff; a worker killed
/// mid-request has its request handed to the other worker (idempotent service).
async fn broker_caller(broker: String, counts: Arc<Counts>) -> anyhow::Result<()> {
    let cfg = ClientConfig {
        attempt_timeout: Duration::from_secs(1),
        retries: 3,
        ..Default::default()
    };
    let client = Client::connect(&broker, cfg).await?;
    let mut n = 0u64;
    loop {
        n += 1;
        match client
            .request("resize", vec![bytes::Bytes::from(n.to_string())])
            .await
        {
            Ok(_) => counts.broker_ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.broker_failed.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Lazy Pirate: a REQ that times out is closed and replaced, then the request retried.
async fn requester(endpoint: String, counts: Arc<Counts>) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(500);
    let mut n = 0u64;
    loop {
        let req = Socket::new(
            SocketType::Req,
            demo_options("client-req").linger(Duration::ZERO),
        )?;
        req.connect(&endpoint).await?;
        loop {
            n += 1;
            req.send_as::<Json, _>(&SquareRequest { n }).await?;
            match tokio::time::timeout(timeout, req.recv_as::<Json, SquareReply>()).await {
                Ok(Ok(reply)) if reply.square == n * n => {
                    counts.replies.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Ok(_)) => anyhow::bail!("wrong answer for {n}"),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    counts.request_timeouts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        req.close().await?;
    }
}

async fn subscriber(sub: Socket, counts: Arc<Counts>) -> anyhow::Result<()> {
    loop {
        let _tick: Tick = sub.recv_as::<MsgPack, _>().await?;
        counts.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

async fn pusher(push: Socket, counts: Arc<Counts>) -> anyhow::Result<()> {
    let mut id = 0;
    loop {
        id += 1;
        let job = Job {
            id,
            kind: "resize".into(),
            payload: vec![0; 64],
            tags: vec!["demo".into()],
        };
        // A timeout while the server is down is expected: the job is dropped and counted.
        if push.send_as::<Protobuf, _>(&job).await.is_ok() {
            counts.jobs_sent.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
