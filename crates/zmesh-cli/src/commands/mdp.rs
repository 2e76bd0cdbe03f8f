//! `zmesh call`, `serve`, `services`, `route`: the Majordomo tools.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use zmesh::{Socket, SocketOptions, SocketType};
use zmesh_broker::mdp::parse_routes;
use zmesh_client::mdp::{Client, ClientConfig, ClientError};
use zmesh_client::worker::{Worker, WorkerConfig, WorkerProtocol, handler};

use super::UsageError;
use crate::broker_args::DEFAULT_BROKER;
use crate::socket_args::SecurityArgs;

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
