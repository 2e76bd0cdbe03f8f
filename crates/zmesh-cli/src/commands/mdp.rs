//! `zmesh broker`, `call`, `serve`, `services`, `route`: the Majordomo broker and its tools.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use zmesh::{Socket, SocketOptions, SocketType};
use zmesh_broker::mdp::{Broker, BrokerConfig, ServicePolicy, parse_routes};
use zmesh_client::mdp::{Client, ClientConfig, ClientError};
use zmesh_client::worker::{Worker, WorkerConfig, WorkerProtocol, handler};

use super::UsageError;
use crate::socket_args::{SecurityArgs, SocketArgs};

/// A line on stderr that never panics: a broker whose stderr was closed
/// (its parent went away) must keep serving, not die on a status line.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Default broker endpoint of the tools.
const DEFAULT_BROKER: &str = "tcp://127.0.0.1:5555";

/// Options of `zmesh broker`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  zmesh broker --bind tcp://*:5555
  zmesh broker --bind tcp://*:5555 --idempotent resize --rate-limit orders=500 --route orders=orders@v1:95,orders@v2:5")]
pub struct BrokerCmd {
    /// Endpoint(s) for clients and workers; repeatable.
    #[arg(short, long, default_value = DEFAULT_BROKER, env = "ZMESH_BIND", value_delimiter = ',')]
    pub bind: Vec<String>,
    /// Services whose requests may run twice: a dead worker's request goes to another worker.
    #[arg(long, env = "ZMESH_IDEMPOTENT", value_delimiter = ',')]
    pub idempotent: Vec<String>,
    /// SERVICE=N: at most N requests per second (then "429").
    #[arg(long, env = "ZMESH_RATE_LIMIT", value_delimiter = ',')]
    pub rate_limit: Vec<String>,
    /// SERVICE=TARGET:WEIGHT,...: split a service between versions
    /// (repeatable; several in one value, as in ZMESH_ROUTE, separated by `;`).
    #[arg(long, env = "ZMESH_ROUTE", value_delimiter = ';')]
    pub route: Vec<String>,
    /// MDP heartbeat interval with workers, in ms (workers must use the same).
    #[arg(long, default_value_t = 2500, env = "ZMESH_WORKER_HEARTBEAT_MS")]
    pub worker_heartbeat_ms: u64,
    /// How long a 7/MDP worker may hold a request without a word, in ms.
    /// Reference workers send no heartbeats while busy, so a busy one is
    /// ended by its connection closing, or by this limit.
    #[arg(long, default_value_t = 600_000, env = "ZMESH_WORKER_BUSY_MAX_MS")]
    pub worker_busy_max_ms: u64,
    /// How long a request may wait for a worker, in ms (then "503").
    #[arg(long, default_value_t = 10_000, env = "ZMESH_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: u64,
    /// Requests a service may queue.
    #[arg(long, default_value_t = 10_000, env = "ZMESH_QUEUE_MAX")]
    pub queue_max: usize,
    /// Directory of the queues' journal and the streams' logs (created if missing).
    #[arg(long, default_value = "zmesh-data", env = "ZMESH_DATA_DIR")]
    pub data_dir: std::path::PathBuf,
    /// Serve MDP only: no durable queues or streams, nothing written to disk.
    #[arg(long, env = "ZMESH_NO_QUEUES")]
    pub no_queues: bool,
    /// Group commit: longest a confirm waits for its fsync to start, in ms
    /// (0: as soon as the previous fsync ends).
    #[arg(long, default_value_t = 0, env = "ZMESH_GROUP_COMMIT_MS")]
    pub group_commit_ms: u64,
    /// Group commit: unsynced bytes that start an fsync at once.
    #[arg(long, default_value_t = 1 << 20, env = "ZMESH_GROUP_COMMIT_BYTES")]
    pub group_commit_bytes: u64,
    /// Journal segment size in MiB.
    #[arg(long, default_value_t = 64, env = "ZMESH_SEGMENT_MIB")]
    pub segment_mib: u64,
    /// Message bodies the queues keep in memory together, in MiB: past it,
    /// bodies stay on disk only and are read back when needed (each queue
    /// also has its own max_bytes, in memory or not). Bodies waiting for
    /// their write are bounded by as much again, on their own: past that,
    /// while the disk lags, publishes get 503.
    #[arg(long, default_value_t = 4096, env = "ZMESH_QUEUE_MEMORY_MIB")]
    pub queue_memory_mib: u64,
    /// Replies and deliveries waiting for one peer that reads slowly, in MiB:
    /// past it the peer gets no new work (requests, deliveries) until half
    /// of it has drained.
    #[arg(long, default_value_t = 8, env = "ZMESH_PEER_OUTBOX_SOFT_MIB")]
    pub peer_outbox_soft_mib: u64,
    /// Past this, in MiB, a peer that reads too slowly is disconnected and
    /// what waited for it is dropped, counted in zmesh_outbox_dropped_messages.
    #[arg(long, default_value_t = 64, env = "ZMESH_PEER_OUTBOX_HARD_MIB")]
    pub peer_outbox_hard_mib: u64,
    /// All peers' waiting messages together, in MiB: past it the peer with
    /// the most waiting is disconnected.
    #[arg(long, default_value_t = 1024, env = "ZMESH_OUTBOX_MIB")]
    pub outbox_mib: u64,
    /// Admin HTTP port (metrics, API, probes), e.g. 127.0.0.1:8222; off when absent.
    #[arg(long, env = "ZMESH_ADMIN_BIND")]
    pub admin_bind: Option<String>,
    /// Token required for changes through the admin API (Bearer).
    #[arg(long, env = "ZMESH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A host name the admin port answers to, besides IP addresses and
    /// localhost (repeatable): requests naming any other host are refused, so
    /// a web page cannot reach the port through DNS rebinding.
    #[arg(long, env = "ZMESH_ADMIN_HOST", value_delimiter = ',')]
    pub admin_host: Vec<String>,
    /// On SIGTERM/SIGINT: how long held requests may take to finish.
    #[arg(long, default_value_t = 10_000, env = "ZMESH_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: u64,
    /// Settings file (TOML, a [broker] table); flags and environment win over it.
    #[arg(long, env = "ZMESH_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective settings and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

fn split_eq<'a>(s: &'a str, flag: &str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once('=')
        .ok_or_else(|| UsageError(format!("{flag} {s:?}: expected SERVICE=...")).into())
}

/// Run the broker until SIGTERM or Ctrl-C (drained), or a second one (at once).
pub async fn run_broker(
    mut cmd: BrokerCmd,
    matches: Option<clap::ArgMatches>,
) -> anyhow::Result<i32> {
    match &matches {
        Some(m) => {
            let path = cmd.config.clone();
            crate::config::apply(&mut cmd, m, path.as_deref())
                .map_err(|e| UsageError(e.to_string()))?;
        }
        None => {
            if cmd.socket.security.curve_secret_key_file.is_some() {
                cmd.socket.security.curve_server = true;
            }
        }
    }
    if cmd.print_config {
        print!("{}", crate::config::effective(&cmd));
        return Ok(0);
    }
    let mut cfg = BrokerConfig {
        heartbeat_interval: Duration::from_millis(cmd.worker_heartbeat_ms),
        worker_busy_max: Duration::from_millis(cmd.worker_busy_max_ms),
        request_timeout: Duration::from_millis(cmd.request_timeout_ms),
        queue_max: cmd.queue_max,
        ..BrokerConfig::default()
    };
    let mut policies: HashMap<String, ServicePolicy> = HashMap::new();
    for s in &cmd.idempotent {
        policies.entry(s.clone()).or_default().idempotent = true;
    }
    for r in &cmd.rate_limit {
        let (svc, n) = split_eq(r, "--rate-limit")?;
        let n = n
            .parse()
            .map_err(|_| UsageError(format!("--rate-limit {r:?}: not a number")))?;
        policies.entry(svc.to_owned()).or_default().rate_limit_per_s = Some(n);
    }
    cfg.policies = policies;
    // An empty entry (a trailing `;` in ZMESH_ROUTE) is nothing to route.
    for r in cmd.route.iter().filter(|r| !r.trim().is_empty()) {
        let (svc, spec) = split_eq(r, "--route")?;
        cfg.routes.insert(
            svc.to_owned(),
            parse_routes(spec).map_err(|e| UsageError(format!("--route {r:?}: {e}")))?,
        );
    }
    // Recover the journal before listening: nobody waits on a broker that is replaying.
    let stores = if cmd.no_queues {
        zmesh_broker::driver::Stores::default()
    } else {
        zmesh_broker::driver::Stores {
            queues: Some(open_queues(&cmd)?),
            streams: Some(open_streams(&cmd)?),
        }
    };
    // The admin port is up before "listening" is printed: whoever waits for
    // that line can use every port.
    let mut opts = zmesh_broker::driver::RunOptions {
        drain_timeout: Duration::from_millis(cmd.drain_timeout_ms),
        outbox: zmesh_broker::outbox::OutboxLimits {
            peer_soft_bytes: (cmd.peer_outbox_soft_mib << 20) as usize,
            peer_hard_bytes: (cmd.peer_outbox_hard_mib << 20) as usize,
            total_bytes: (cmd.outbox_mib << 20) as usize,
        },
        ..Default::default()
    };
    if let Some(addr) = &cmd.admin_bind {
        let (mut state, link) = zmesh_broker::admin::channel(cmd.admin_token.clone());
        state.allowed_hosts = std::sync::Arc::new(
            cmd.admin_host
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        note!("zmesh: admin on http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = zmesh_broker::admin::serve(listener, state).await {
                tracing::error!(error = %e, "admin port stopped");
            }
        });
        opts.admin = Some(link);
    }
    let router = Socket::new(
        SocketType::Router,
        cmd.socket.options()?.name("broker").router_mandatory(true),
    )?;
    for ep in &cmd.bind {
        let real = router.bind(ep).await?;
        note!("zmesh: broker listening on {real}");
    }
    // A file size limit (RLIMIT_FSIZE) must refuse writes with EFBIG, not kill
    // the broker: with a handler installed, SIGXFSZ no longer terminates.
    let _xfsz =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        note!("zmesh: draining (a second signal stops at once)");
        // A second signal forces: exit now, with what is written so far.
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            note!("zmesh: forced stop");
            std::process::exit(130);
        });
    };
    let (_, stores) =
        zmesh_broker::driver::run_with_stores(&router, Broker::new(cfg), stores, opts, shutdown)
            .await?;
    // Dropping the stores flushes and syncs the logs.
    drop(stores);
    router.close().await?;
    Ok(0)
}

/// The storage log settings the broker's flags choose (queues and streams alike).
fn log_config(cmd: &BrokerCmd) -> zmesh_log::LogConfig {
    zmesh_log::LogConfig {
        segment_bytes_max: cmd.segment_mib.max(1) << 20,
        ..zmesh_log::LogConfig::default()
    }
}

fn open_streams(cmd: &BrokerCmd) -> anyhow::Result<zmesh_broker::stream::StreamStore> {
    use zmesh_broker::stream::{StreamStore, StreamStoreConfig};
    let config = StreamStoreConfig {
        data_dir: cmd.data_dir.clone(),
        log: log_config(cmd),
        group_commit_ms: cmd.group_commit_ms,
        group_commit_bytes: cmd.group_commit_bytes,
        ..StreamStoreConfig::default()
    };
    let (store, elapsed) = StreamStore::open(config)?;
    note!("zmesh: streams opened in {} ms", elapsed.as_millis());
    Ok(store)
}

fn open_queues(cmd: &BrokerCmd) -> anyhow::Result<zmesh_broker::queue::QueueStore> {
    use zmesh_broker::queue::{QueueStore, QueueStoreConfig};
    let config = QueueStoreConfig {
        data_dir: cmd.data_dir.clone(),
        log: log_config(cmd),
        group_commit_ms: cmd.group_commit_ms,
        group_commit_bytes: cmd.group_commit_bytes,
        core: zmesh_broker::queue::QueueCoreConfig {
            bytes_max: cmd.queue_memory_mib << 20,
            storing_bytes_max: cmd.queue_memory_mib << 20,
            ..Default::default()
        },
    };
    let (store, report) = QueueStore::open(config)?;
    let r = &report.recovery;
    note!(
        "zmesh: queues in {}: {} messages from {} records in {} ms{}{}",
        cmd.data_dir.display(),
        report.messages,
        report.replayed,
        report.elapsed.as_millis(),
        if r.torn_tail_bytes > 0 {
            format!("; cut a torn tail of {} bytes", r.torn_tail_bytes)
        } else {
            String::new()
        },
        if r.damaged.is_empty() {
            String::new()
        } else {
            format!("; {} damaged ranges skipped (see the log)", r.damaged.len())
        },
    );
    for d in &r.damaged {
        note!(
            "zmesh: damaged journal bytes {:?} in {} (offsets {:?} lost)",
            d.bytes,
            d.path.display(),
            d.offsets_lost
        );
    }
    Ok(store)
}

/// Options of `zmesh call`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  zmesh call echo hello
  zmesh call --broker tcp://10.0.0.5:5555 --timeout 1 --retries 5 orders '{\"id\": 7}'
  zmesh call mmi.service echo          # 200 if the broker has an echo worker")]
pub struct CallCmd {
    /// Service name.
    pub service: String,
    /// Request frames.
    pub body: Vec<String>,
    /// Broker endpoint.
    #[arg(long, default_value = DEFAULT_BROKER)]
    pub broker: String,
    /// Seconds to wait for each attempt.
    #[arg(long, default_value_t = 2.5)]
    pub timeout: f64,
    /// Attempts after the first.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Frame separator for printing the reply.
    #[arg(short, long, default_value = "|")]
    pub separator: String,
    /// Speak plain 7/MDP (MDPC01), as the ZeroMQ guide's client does, to any
    /// Majordomo broker: a fresh socket per attempt, the reply's body printed.
    #[arg(long)]
    pub mdp: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Send one request, print the reply. Exit 1 on timeout, 3 on an error status.
pub async fn run_call(cmd: CallCmd) -> anyhow::Result<i32> {
    if cmd.mdp {
        return call_mdp(cmd).await;
    }
    let cfg = ClientConfig {
        attempt_timeout: Duration::from_secs_f64(cmd.timeout),
        retries: cmd.retries,
        ..Default::default()
    };
    let client = Client::connect_with(&cmd.broker, cfg, client_options(&cmd.security)?).await?;
    let body: Vec<Bytes> = cmd.body.iter().map(|b| Bytes::from(b.clone())).collect();
    match client.request(&cmd.service, body).await {
        Ok(reply) => {
            println!(
                "{}",
                zmesh::frames::format_frames(
                    &reply,
                    zmesh::frames::OutputFormat::Text,
                    &cmd.separator
                )
            );
            Ok(0)
        }
        Err(e @ ClientError::Timeout { .. }) => {
            eprintln!("zmesh: {e}");
            Ok(1)
        }
        Err(e @ ClientError::InvalidService(_)) => Err(UsageError(e.to_string()).into()),
        Err(e) => {
            eprintln!("zmesh: {e}");
            Ok(3)
        }
    }
}

/// `zmesh call --mdp`: the 7/MDP client of the spec (and of the guide's
/// mdcliapi), with a REQ socket made anew for each attempt so a late reply to
/// an abandoned attempt is never taken for the next one's.
async fn call_mdp(cmd: CallCmd) -> anyhow::Result<i32> {
    const MDPC01: &[u8] = b"MDPC01";
    let timeout = Duration::from_secs_f64(cmd.timeout);
    let options = client_options(&cmd.security)?.linger(Duration::ZERO);
    let mut request = vec![Bytes::from_static(MDPC01), Bytes::from(cmd.service.clone())];
    request.extend(cmd.body.iter().map(|b| Bytes::from(b.clone())));
    for attempt in 0..=cmd.retries {
        let sock = Socket::new(SocketType::Req, options.clone())?;
        sock.connect(&cmd.broker).await?;
        sock.send(zmesh::Message::from_frames(request.clone()))
            .await?;
        match sock.recv_timeout(timeout).await {
            Ok(reply) => {
                let frames = reply.frames();
                if frames.len() < 2 || frames[0] != MDPC01 || frames[1] != cmd.service.as_bytes() {
                    eprintln!(
                        "zmesh: the broker's reply is not a 7/MDP reply for {:?}: {reply:?}",
                        cmd.service
                    );
                    return Ok(3);
                }
                println!(
                    "{}",
                    zmesh::frames::format_frames(
                        &frames[2..],
                        zmesh::frames::OutputFormat::Text,
                        &cmd.separator
                    )
                );
                return Ok(0);
            }
            Err(zmesh::Error::Timeout(_)) => {
                tracing::debug!(attempt, "no 7/MDP reply in time; retrying on a new socket");
            }
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!(
        "zmesh: no reply from {} within {:?} in {} attempts",
        cmd.broker,
        timeout,
        cmd.retries + 1
    );
    Ok(1)
}

/// The MDP client's socket with the command's security flags.
fn client_options(security: &SecurityArgs) -> anyhow::Result<SocketOptions> {
    security.apply(SocketOptions::default().name("mdp-client"))
}

/// Options of `zmesh serve`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  zmesh serve echo --echo
  zmesh serve upper -- tr a-z A-Z        # each request's body on stdin, the reply from stdout
  zmesh serve resize --concurrency 4 -- ./resize.sh")]
pub struct ServeCmd {
    /// Service name.
    pub service: String,
    /// Reply with the request itself.
    #[arg(long)]
    pub echo: bool,
    /// Broker endpoint.
    #[arg(long, default_value = DEFAULT_BROKER)]
    pub broker: String,
    /// Requests handled at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Speak 7/MDP (for any Majordomo broker; one connection per concurrent
    /// request) instead of the zmesh worker protocol (one connection in all).
    #[arg(long)]
    pub mdp: bool,
    /// Wait this long before each reply, in ms (for experiments).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Heartbeat interval, in ms (must match the broker's).
    #[arg(long, default_value_t = 2500)]
    pub heartbeat_ms: u64,
    /// Command run per request: body frames joined by newlines on its stdin, its stdout is the reply.
    #[arg(last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Run a worker until Ctrl-C, then drain.
pub async fn run_serve(cmd: ServeCmd) -> anyhow::Result<i32> {
    if cmd.echo != cmd.command.is_empty() {
        return Err(UsageError("give either --echo or -- COMMAND [ARGS]".into()).into());
    }
    let delay = Duration::from_millis(cmd.delay_ms);
    let command = cmd.command.clone();
    let h = handler(move |body: Vec<Bytes>| {
        let command = command.clone();
        async move {
            // A zero sleep would still wait for the timer wheel's next millisecond.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if command.is_empty() {
                return Ok(body);
            }
            run_command(&command, &body).await
        }
    });
    let cfg = WorkerConfig {
        heartbeat_interval: Duration::from_millis(cmd.heartbeat_ms),
        concurrency: cmd.concurrency,
        protocol: if cmd.mdp {
            WorkerProtocol::Mdp
        } else {
            WorkerProtocol::Zmesh
        },
        socket: cmd.security.apply(SocketOptions::default())?,
        ..Default::default()
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let worker = Worker::new(&cmd.broker, &cmd.service, cfg, h);
    let mut run = tokio::spawn(worker.run(stop));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        // Only a refusal ends the worker before a stop: exit 3 with its reason.
        ended = &mut run => return ended.map_err(anyhow::Error::from)?.map(|()| 0).map_err(Into::into),
    }
    eprintln!("zmesh: draining (Ctrl-C again to force)");
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = run => Ok(0),
        _ = tokio::signal::ctrl_c() => Ok(130),
    }
}

/// Bound on a command's output kept as the reply.
const COMMAND_OUTPUT_MAX_BYTES: usize = 16 * 1024 * 1024;

async fn run_command(command: &[String], body: &[Bytes]) -> Result<Vec<Bytes>, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", command[0]))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input: Vec<u8> = body
        .iter()
        .map(|b| b.as_ref())
        .collect::<Vec<_>>()
        .join(&b'\n');
    let writer = async move {
        let _ = stdin.write_all(&input).await;
    };
    let (_, out) = tokio::join!(writer, child.wait_with_output());
    let out = out.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {}",
            command[0],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut stdout = out.stdout;
    stdout.truncate(COMMAND_OUTPUT_MAX_BYTES);
    Ok(vec![Bytes::from(stdout)])
}

/// Options of `zmesh services`.
#[derive(Args, Debug)]
pub struct ServicesCmd {
    /// Broker endpoint.
    #[arg(long, default_value = DEFAULT_BROKER)]
    pub broker: String,
    /// Print the broker's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Print what the broker knows.
pub async fn run_services(cmd: ServicesCmd) -> anyhow::Result<i32> {
    let cfg = ClientConfig {
        attempt_timeout: Duration::from_secs(2),
        retries: 1,
        ..Default::default()
    };
    let client = Client::connect_with(&cmd.broker, cfg, client_options(&cmd.security)?).await?;
    let reply = client.request("zmesh.services", vec![]).await?;
    let json: serde_json::Value =
        serde_json::from_slice(reply.get(1).map(|b| b.as_ref()).unwrap_or(b"{}"))?;
    if cmd.json {
        println!("{json}");
        return Ok(0);
    }
    println!(
        "{:<24} {:>7} {:>5} {:>7} {:>9} {:>9} {:>7}  policy",
        "service", "workers", "idle", "queued", "requests", "replies", "errors"
    );
    for s in json["services"].as_array().into_iter().flatten() {
        let routes = s["routes"].as_array().map(|r| {
            let parts: Vec<String> = r
                .iter()
                .map(|x| format!("{}:{}", x["target"].as_str().unwrap_or(""), x["weight"]))
                .collect();
            format!(" routes={}", parts.join(","))
        });
        println!(
            "{:<24} {:>7} {:>5} {:>7} {:>9} {:>9} {:>7}  {}{}{}",
            s["name"].as_str().unwrap_or(""),
            s["workers"].to_string(),
            s["idle"].to_string(),
            s["queued"].to_string(),
            s["requests"].to_string(),
            s["replies"].to_string(),
            s["errors"].to_string(),
            if s["policy"]["idempotent"] == true {
                "idempotent"
            } else {
                "-"
            },
            s["policy"]["rate_limit_per_s"]
                .as_u64()
                .map(|r| format!(" rate<={r}/s"))
                .unwrap_or_default(),
            routes.unwrap_or_default(),
        );
    }
    Ok(0)
}

/// Options of `zmesh route`.
#[derive(Args, Debug)]
#[command(after_help = "Example: send 5 % of orders to v2
  zmesh route orders orders@v1:95,orders@v2:5
  zmesh route orders ''                  # remove the routes")]
pub struct RouteCmd {
    /// Service name clients ask for.
    pub service: String,
    /// TARGET:WEIGHT,... (empty removes the routes).
    pub routes: String,
    /// Broker endpoint.
    #[arg(long, default_value = DEFAULT_BROKER)]
    pub broker: String,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Change a service's routes at run time.
pub async fn run_route(cmd: RouteCmd) -> anyhow::Result<i32> {
    if !cmd.routes.is_empty() {
        parse_routes(&cmd.routes).map_err(UsageError)?;
    }
    let client = Client::connect_with(
        &cmd.broker,
        ClientConfig {
            retries: 1,
            ..Default::default()
        },
        client_options(&cmd.security)?,
    )
    .await?;
    let reply = client
        .request(
            "zmesh.routes",
            vec![Bytes::from(cmd.service), Bytes::from(cmd.routes)],
        )
        .await?;
    let text = |i: usize| {
        reply
            .get(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    if text(0) == "200" {
        println!("ok");
        Ok(0)
    } else {
        eprintln!("zmesh: broker refused: {} {}", text(0), text(1));
        Ok(2)
    }
}
