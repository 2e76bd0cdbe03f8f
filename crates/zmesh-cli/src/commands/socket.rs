//! `zmesh <socket-type>`: open any ZeroMQ socket, send what you give it, print what arrives.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::time::{Instant, sleep_until};
use zmesh::frames::{InputFormat, OutputFormat};
use zmesh::registry::PeerState;
use zmesh::{Message, Socket, SocketType};

use super::UsageError;
use super::input::{self, InputArg, OutputArg, Source};
use crate::socket_args::SocketArgs;

/// Without --timeout, how long a sender waits for its first peer.
const DEFAULT_PEER_WAIT: Duration = Duration::from_secs(10);

/// After a PUB's peers connect, time for their subscriptions to arrive
/// (a SUB's subscription travels after the handshake; see RFC 29).
const PUB_SETTLE: Duration = Duration::from_millis(200);

/// Options of every socket command.
#[derive(Args, Debug)]
#[command(
    after_help = "Messages are the positional arguments, or else lines read from stdin.
Frames: --separator '|' turns \"a|b\" into two frames (input) and joins frames (output).
ROUTER: the first frame is the peer's routing identity, both ways.

Examples:
  zmesh rep --bind tcp://127.0.0.1:5555 --echo
  zmesh req --connect tcp://127.0.0.1:5555 --timeout 2 ping
  zmesh pull --bind tcp://*:5557 --count 100 --output json
  printf 'k|v\\n' | zmesh push --connect tcp://127.0.0.1:5557 --separator '|'"
)]
pub struct SocketCmd {
    /// Listen on this endpoint (tcp://host:port, ipc://path); repeatable.
    #[arg(short, long)]
    pub bind: Vec<String>,
    /// Dial this endpoint; repeatable. Reconnects with backoff if the peer goes away.
    #[arg(short, long)]
    pub connect: Vec<String>,
    /// Messages to send (otherwise stdin, one per line).
    pub messages: Vec<String>,
    /// Stop after receiving this many messages (REP/ROUTER: serving this many requests).
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Give up after this many seconds without progress (exit code 1 if --count was not reached).
    #[arg(short, long)]
    pub timeout: Option<f64>,
    /// SUB: prefixes to receive; repeatable. Default: everything.
    #[arg(long)]
    pub subscribe: Vec<String>,
    /// REP, ROUTER, PAIR, DEALER: send every received message back.
    #[arg(long)]
    pub echo: bool,
    /// Frame separator for input and output.
    #[arg(short, long)]
    pub separator: Option<String>,
    /// How input messages are written.
    #[arg(long, value_enum, default_value = "text")]
    pub input: InputArg,
    /// How received messages are printed.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputArg,
    /// Senders (PUB, PUSH, DEALER, PAIR, ROUTER): wait for this many connected peers before sending.
    #[arg(long, default_value_t = 1)]
    pub wait_peers: usize,
    /// Pause between sent messages, in ms.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    #[command(flatten)]
    pub socket: SocketArgs,
}

struct Io {
    out_format: OutputFormat,
    out_sep: String,
    count: Option<u64>,
    idle: Option<Duration>,
    interval: Duration,
}

impl Io {
    fn print(&self, m: &Message) {
        input::print(m, self.out_format, &self.out_sep);
    }

    fn deadline(&self) -> Option<Instant> {
        self.idle.map(|d| Instant::now() + d)
    }

    fn done(&self, received: u64) -> bool {
        self.count.is_some_and(|c| received >= c)
    }
}

async fn maybe_sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Run one socket command; returns the exit code.
pub async fn run(t: SocketType, cmd: SocketCmd) -> anyhow::Result<i32> {
    if cmd.bind.is_empty() && cmd.connect.is_empty() {
        return Err(UsageError(format!(
            "{t} needs at least one --bind or --connect endpoint"
        ))
        .into());
    }
    if cmd.echo
        && !matches!(
            t,
            SocketType::Rep | SocketType::Router | SocketType::Pair | SocketType::Dealer
        )
    {
        return Err(UsageError(format!(
            "--echo needs a socket that can answer (rep, router, pair, dealer), not {t}"
        ))
        .into());
    }
    let in_format: InputFormat = cmd.input.into();
    let args = input::from_args(&cmd.messages, in_format, cmd.separator.as_deref())?;
    if !t.can_send() && !args.is_empty() {
        return Err(UsageError(format!("{t} cannot send; drop the message arguments")).into());
    }
    let sock = Socket::new(
        t,
        cmd.socket
            .options()?
            .name(format!("cli-{}", t.as_str().to_lowercase())),
    )?;
    for ep in &cmd.bind {
        let real = sock.bind(ep).await.with_context(|| format!("bind {ep}"))?;
        eprintln!("zmesh: {t} listening on {real}");
    }
    for ep in &cmd.connect {
        sock.connect(ep)
            .await
            .with_context(|| format!("connect {ep}"))?;
    }
    if t == SocketType::Sub {
        let prefixes = if cmd.subscribe.is_empty() {
            vec![String::new()]
        } else {
            cmd.subscribe.clone()
        };
        for p in prefixes {
            sock.subscribe(p.into_bytes()).await?;
        }
    }
    let source = if !args.is_empty() {
        Source::Args(VecDeque::from(args))
    } else if t.can_send() && !cmd.echo {
        Source::Stdin(input::from_stdin(in_format, cmd.separator.clone()))
    } else {
        Source::None
    };
    let io = Io {
        out_format: cmd.output.into(),
        out_sep: cmd.separator.clone().unwrap_or_else(|| "|".into()),
        count: cmd.count,
        idle: cmd.timeout.map(Duration::from_secs_f64),
        interval: Duration::from_millis(cmd.interval_ms),
    };
    let code = tokio::select! {
        r = drive(t, &sock, source, &io, cmd.echo, cmd.wait_peers) => r?,
        _ = tokio::signal::ctrl_c() => 130,
    };
    sock.close().await?;
    Ok(code)
}

async fn drive(
    t: SocketType,
    sock: &Socket,
    source: Source,
    io: &Io,
    echo: bool,
    wait_peers: usize,
) -> anyhow::Result<i32> {
    match t {
        SocketType::Req => run_req(sock, source, io).await,
        SocketType::Rep => run_rep(sock, source, io, echo).await,
        SocketType::Pub | SocketType::Push => {
            wait_for_peers(sock, wait_peers, io.idle.unwrap_or(DEFAULT_PEER_WAIT)).await?;
            if t == SocketType::Pub {
                tokio::time::sleep(PUB_SETTLE).await;
            }
            send_all(sock, source, io).await?;
            Ok(0)
        }
        SocketType::Sub | SocketType::Pull => receive_loop(sock, io, false).await,
        _ => run_duplex(sock, source, io, echo, wait_peers).await,
    }
}

/// Wait until `n` peers are active, or fail after `limit`.
async fn wait_for_peers(sock: &Socket, n: usize, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let active = sock
            .peers()
            .iter()
            .filter(|p| p.state == PeerState::Active)
            .count();
        if active >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(zmesh::Error::Timeout(limit))
                .context(format!("waiting for {n} peer(s), {active} connected"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_all(sock: &Socket, mut source: Source, io: &Io) -> anyhow::Result<u64> {
    let mut sent = 0;
    while let Some(m) = source.next().await {
        send_bounded(sock, m, io.idle).await?;
        sent += 1;
        if !io.interval.is_zero() {
            tokio::time::sleep(io.interval).await;
        }
    }
    Ok(sent)
}

async fn send_bounded(sock: &Socket, m: Message, limit: Option<Duration>) -> anyhow::Result<()> {
    match limit {
        None => sock.send(m).await?,
        Some(d) => tokio::time::timeout(d, sock.send(m))
            .await
            .map_err(|_| zmesh::Error::Timeout(d))
            .context("send blocked at the high-water mark")??,
    }
    Ok(())
}

/// Receive and print until --count or the idle timeout.
async fn receive_loop(sock: &Socket, io: &Io, echo: bool) -> anyhow::Result<i32> {
    let mut received = 0;
    let mut deadline = io.deadline();
    while !io.done(received) {
        tokio::select! {
            m = sock.recv() => {
                let m = m?;
                received += 1;
                io.print(&m);
                if echo { sock.send(m).await?; }
                deadline = io.deadline();
            }
            _ = maybe_sleep_until(deadline) => return Ok(timeout_code(io, received)),
        }
    }
    Ok(0)
}

fn timeout_code(io: &Io, received: u64) -> i32 {
    match io.count {
        Some(c) if received < c => {
            eprintln!("zmesh: timed out after {received} of {c} messages");
            1
        }
        _ => 0,
    }
}

async fn run_req(sock: &Socket, mut source: Source, io: &Io) -> anyhow::Result<i32> {
    let mut answered = 0;
    while let Some(m) = source.next().await {
        send_bounded(sock, m, io.idle).await?;
        let reply = match io.idle {
            Some(d) => match sock.recv_timeout(d).await {
                Ok(r) => r,
                Err(zmesh::Error::Timeout(_)) => {
                    eprintln!("zmesh: no reply within {d:?}");
                    return Ok(1);
                }
                Err(e) => return Err(e.into()),
            },
            None => sock.recv().await?,
        };
        io.print(&reply);
        answered += 1;
        if io.done(answered) {
            break;
        }
    }
    Ok(0)
}

async fn run_rep(sock: &Socket, mut source: Source, io: &Io, echo: bool) -> anyhow::Result<i32> {
    let mut served = 0;
    let mut last_reply: Option<Message> = None;
    let mut deadline = io.deadline();
    while !io.done(served) {
        let request = tokio::select! {
            m = sock.recv() => m?,
            _ = maybe_sleep_until(deadline) => return Ok(timeout_code(io, served)),
        };
        io.print(&request);
        let reply = if echo {
            request
        } else {
            // The next given reply; once they run out, repeat the last one.
            match source.next().await {
                Some(m) => {
                    last_reply = Some(m.clone());
                    m
                }
                None => last_reply
                    .clone()
                    .unwrap_or_else(|| Message::single(bytes::Bytes::new())),
            }
        };
        sock.send(reply).await?;
        served += 1;
        deadline = io.deadline();
    }
    Ok(0)
}

/// DEALER, ROUTER, PAIR: send the input while receiving, both at once.
async fn run_duplex(
    sock: &Socket,
    source: Source,
    io: &Io,
    echo: bool,
    wait_peers: usize,
) -> anyhow::Result<i32> {
    let has_input = !matches!(source, Source::None);
    let sender = async {
        if has_input {
            wait_for_peers(sock, wait_peers, io.idle.unwrap_or(DEFAULT_PEER_WAIT)).await?;
            send_all(sock, source, io).await?;
        }
        anyhow::Ok(())
    };
    let receiver = receive_loop(sock, io, echo);
    tokio::pin!(sender, receiver);
    let mut sender_done = false;
    loop {
        tokio::select! {
            r = &mut sender, if !sender_done => {
                r?;
                sender_done = true;
                // Nothing to wait for: no --count and no --timeout means send and go.
                if io.count.is_none() && io.idle.is_none() && !echo { return Ok(0); }
            }
            r = &mut receiver => return r,
        }
    }
}
