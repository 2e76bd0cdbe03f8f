//! `zmesh`: poke at ZeroMQ systems, watch connections, run the demo and benchmarks.
//!
//! Exit codes: 0 success; 1 a timeout or fewer messages than `--count`;
//! 2 bad usage or configuration; 3 a network or peer error.

mod broker_args;
mod commands;
mod config;
mod demo_proto;
mod socket_args;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Reliable messaging on ZeroMQ's wire protocol.
///
/// Talk to any ZeroMQ peer (libzmq, pyzmq, zmq4, ...) with safe defaults:
/// heartbeats, reconnect with backoff, bounded queues, a finite linger.
///
/// Examples:
///   zmesh rep --bind tcp://127.0.0.1:5555 --echo
///   zmesh req --connect tcp://127.0.0.1:5555 hello world
///   seq 10 | zmesh push --connect tcp://127.0.0.1:5557
///   zmesh sub --connect tcp://127.0.0.1:5556 --subscribe weather. --output json
///   zmesh monitor --connect tcp://127.0.0.1:5555
///   zmesh keygen --dir keys server
///   zmesh broker & zmesh serve echo --echo & zmesh call echo hi
///   zmesh demo
#[derive(Parser, Debug)]
#[command(name = "zmesh", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace or a tracing directive).
    // openraft warns of an unreachable peer on every heartbeat of every
    // group; the broker says who leads instead, so by default openraft
    // speaks of errors only.
    #[arg(
        long,
        global = true,
        env = "ZMESH_LOG",
        default_value = "warn,openraft=error"
    )]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// REQ: send a request, wait for its reply, in lockstep.
    Req(commands::socket::SocketCmd),
    /// REP: receive requests and reply (--echo, or the given messages, or stdin lines).
    Rep(commands::socket::SocketCmd),
    /// DEALER: asynchronous requests (no envelope added).
    Dealer(commands::socket::SocketCmd),
    /// ROUTER: the first frame of every message is the peer's identity.
    Router(commands::socket::SocketCmd),
    /// PUB: publish messages to subscribers (never blocks; drops for slow subscribers).
    Pub(commands::socket::SocketCmd),
    /// SUB: receive published messages matching --subscribe prefixes (default: all).
    Sub(commands::socket::SocketCmd),
    /// PUSH: send messages down a pipeline (round-robin, blocks at the high-water mark).
    Push(commands::socket::SocketCmd),
    /// PULL: receive messages from a pipeline (fair-queued).
    Pull(commands::socket::SocketCmd),
    /// PAIR: exclusive two-way link with one peer.
    Pair(commands::socket::SocketCmd),
    /// Open a socket and print its connection events and peer states live.
    Monitor(commands::monitor::MonitorCmd),
    /// Run the demo: nodes exchanging req/rep, pub/sub and pipeline traffic while
    /// one node is killed and comes back.
    Demo(commands::demo::DemoCmd),
    /// Internal: one node of the demo (run by `zmesh demo`).
    #[command(hide = true)]
    DemoNode(commands::demo::DemoNodeCmd),
    /// Run the Majordomo service broker (7/MDP, 18/MDP, 8/MMI).
    Broker(Box<broker_args::BrokerCmd>),
    /// Send a request to a service through the broker and print the reply.
    Call(commands::mdp::CallCmd),
    /// Serve a service through the broker: echo, or run a command per request.
    Serve(commands::mdp::ServeCmd),
    /// List the broker's services, workers and queues.
    Services(commands::mdp::ServicesCmd),
    /// Change a service's weighted routes at run time.
    Route(commands::mdp::RouteCmd),
    /// Durable queues: declare, publish, consume, ack, stats, purge, delete, dead-letters.
    Queue(commands::queue::QueueCmd),
    /// Streams: create, publish, subscribe (replay and live), snapshot, info, delete.
    Stream(commands::stream::StreamCmd),
    /// Move a file or stdin reliably between two hosts, no broker (resumes after crashes).
    Channel(commands::channel::ChannelCmd),
    /// Show the broker's services, queues, streams and connections (from its admin port).
    Status(commands::status::StatusCmd),
    /// Make a CURVE key pair: NAME.key and NAME.key_secret (pyzmq/CZMQ format).
    Keygen(commands::keygen::KeygenCmd),
    /// Measure throughput and latency of zmesh against the raw engine and libzmq.
    Bench(commands::bench::BenchCmd),
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The broker layers its config file under flags and environment: it needs
    // to know where each value came from.
    let broker_matches = matches.subcommand_matches("broker").cloned();
    init_logging(&cli.log, cli.log_json);
    let runtime = match runtime_builder().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zmesh: cannot start the runtime: {e}");
            std::process::exit(3);
        }
    };
    let code = runtime.block_on(run(cli.command, broker_matches));
    // Do not wait for stray tasks (e.g. a stdin reader blocked on a terminal).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

/// One thread by default: every socket's engine tasks and the command's own
/// loop then share it, and a message costs no cross-thread wake-up (measured:
/// the broker's one-client round trip fell from ~300 to ~200 µs).
/// `ZMESH_THREADS=N` gives a pool of N.
fn runtime_builder() -> tokio::runtime::Builder {
    match std::env::var("ZMESH_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) if n > 1 => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    }
}

async fn run(command: Command, broker_matches: Option<clap::ArgMatches>) -> i32 {
    use zmesh::SocketType as T;
    let result = match command {
        Command::Req(c) => commands::socket::run(T::Req, c).await,
        Command::Rep(c) => commands::socket::run(T::Rep, c).await,
        Command::Dealer(c) => commands::socket::run(T::Dealer, c).await,
        Command::Router(c) => commands::socket::run(T::Router, c).await,
        Command::Pub(c) => commands::socket::run(T::Pub, c).await,
        Command::Sub(c) => commands::socket::run(T::Sub, c).await,
        Command::Push(c) => commands::socket::run(T::Push, c).await,
        Command::Pull(c) => commands::socket::run(T::Pull, c).await,
        Command::Pair(c) => commands::socket::run(T::Pair, c).await,
        Command::Monitor(c) => commands::monitor::run(c).await,
        Command::Demo(c) => commands::demo::run(c).await,
        Command::DemoNode(c) => commands::demo::run_node(c).await,
        Command::Keygen(c) => commands::keygen::run(c).await,
        Command::Broker(c) => commands::broker::run_broker(*c, broker_matches).await,
        Command::Call(c) => commands::mdp::run_call(c).await,
        Command::Serve(c) => commands::mdp::run_serve(c).await,
        Command::Services(c) => commands::mdp::run_services(c).await,
        Command::Route(c) => commands::mdp::run_route(c).await,
        Command::Bench(c) => commands::bench::run(c).await,
        Command::Queue(c) => commands::queue::run(c).await,
        Command::Stream(c) => commands::stream::run(c).await,
        Command::Channel(c) => commands::channel::run(c).await,
        Command::Status(c) => commands::status::run(c).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zmesh: {e:#}");
            exit_code_for(&e)
        }
    }
}

/// 2 for the caller's mistakes, 3 for the network's and peers'.
fn exit_code_for(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<zmesh::Error>() {
        Some(
            zmesh::Error::InvalidEndpoint { .. }
            | zmesh::Error::InvalidOption(_)
            | zmesh::Error::InvalidState(_),
        ) => 2,
        Some(zmesh::Error::Timeout(_)) => 1,
        Some(_) => 3,
        None if e.downcast_ref::<commands::UsageError>().is_some() => 2,
        None => 3,
    }
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    /// Every command's flags are consistent (clap checks names, defaults, conflicts).
    #[test]
    fn command_line_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
