//! `zmesh bench`: the processes of a benchmark run, one role each.
//!
//! `scripts/bench` starts them in pairs (receiver, then sender) for zmesh, the
//! raw engine and libzmq (pyzmq), repeats each run and prints medians and
//! ratios. Each role prints one JSON line with its measurement.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use zmesh::raw_bench::RawBenchSocket;
use zmesh::{Message, Socket, SocketOptions, SocketType};

/// Options of `zmesh bench`.
#[derive(Args, Debug)]
pub struct BenchCmd {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// PULL N messages and report the rate (first to last message).
    ThrRecv(Common),
    /// PUSH N messages of --size bytes.
    ThrSend(Common),
    /// REP: echo N requests.
    LatEcho(Common),
    /// REQ: N round trips; reports p50/p99 latency and requests/s.
    LatReq(Common),
}

#[derive(Args, Debug)]
struct Common {
    /// Which implementation: zmesh sockets (safe defaults) or the raw engine.
    #[arg(long = "impl", value_enum, default_value = "zmesh")]
    imp: Impl,
    #[arg(long)]
    bind: Option<String>,
    #[arg(long)]
    connect: Option<String>,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    #[arg(long, default_value_t = 64)]
    size: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Impl {
    Zmesh,
    Raw,
}

enum BenchSocket {
    Zmesh(Socket),
    Raw(RawBenchSocket),
}

impl BenchSocket {
    async fn open(c: &Common, t: SocketType) -> anyhow::Result<Self> {
        let s = match c.imp {
            Impl::Zmesh => Self::Zmesh(Socket::new(
                t,
                SocketOptions::default().linger(Duration::from_secs(10)),
            )?),
            Impl::Raw => Self::Raw(RawBenchSocket::new(t)?),
        };
        if let Some(ep) = &c.bind {
            match &s {
                Self::Zmesh(z) => z.bind(ep).await?,
                Self::Raw(r) => r.bind(ep).await?,
            };
        }
        if let Some(ep) = &c.connect {
            match &s {
                Self::Zmesh(z) => z.connect(ep).await?,
                Self::Raw(r) => r.connect(ep).await?,
            }
        }
        Ok(s)
    }

    async fn send(&self, b: Bytes) -> anyhow::Result<()> {
        match self {
            Self::Zmesh(z) => z.send(Message::single(b)).await?,
            Self::Raw(r) => r.send(b).await?,
        }
        Ok(())
    }

    async fn recv(&self) -> anyhow::Result<usize> {
        Ok(match self {
            Self::Zmesh(z) => z.recv().await?.byte_len(),
            Self::Raw(r) => r.recv().await?,
        })
    }

    async fn close(self) -> anyhow::Result<()> {
        match self {
            Self::Zmesh(z) => z.close().await?,
            Self::Raw(r) => r.close(Duration::from_secs(10)).await?,
        }
        Ok(())
    }
}

/// Run one benchmark role.
pub async fn run(cmd: BenchCmd) -> anyhow::Result<i32> {
    match cmd.role {
        Role::ThrRecv(c) => {
            let s = BenchSocket::open(&c, SocketType::Pull).await?;
            s.recv().await?;
            let start = Instant::now();
            for _ in 1..c.count {
                s.recv().await?;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({ "msgs_per_s": (c.count - 1) as f64 / secs, "secs": secs })
            );
            s.close().await?;
        }
        Role::ThrSend(c) => {
            let s = BenchSocket::open(&c, SocketType::Push).await?;
            let payload = Bytes::from(vec![0x5a; c.size]);
            for _ in 0..c.count {
                s.send(payload.clone()).await?;
            }
            s.close().await?;
        }
        Role::LatEcho(c) => {
            let s = BenchSocket::open(&c, SocketType::Rep).await?;
            let payload = Bytes::from(vec![0x5a; c.size]);
            for _ in 0..c.count {
                s.recv().await?;
                s.send(payload.clone()).await?;
            }
            s.close().await?;
        }
        Role::LatReq(c) => {
            let s = BenchSocket::open(&c, SocketType::Req).await?;
            let payload = Bytes::from(vec![0x5a; c.size]);
            let mut rtts = Vec::with_capacity(c.count as usize);
            let start = Instant::now();
            for _ in 0..c.count {
                let t = Instant::now();
                s.send(payload.clone()).await?;
                s.recv().await?;
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let secs = start.elapsed().as_secs_f64();
            rtts.sort_by(f64::total_cmp);
            let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p) as usize];
            println!(
                "{}",
                serde_json::json!({ "p50_us": pct(0.5), "p99_us": pct(0.99), "req_per_s": c.count as f64 / secs })
            );
            s.close().await?;
        }
    }
    Ok(0)
}
