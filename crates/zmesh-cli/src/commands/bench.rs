//! `zmesh bench`: the processes of a benchmark run, one role each.
//!
//! `scripts/bench` starts them in pairs (receiver, then sender) for zmesh, the
//! raw engine and libzmq (pyzmq), repeats each run and prints medians and
//! ratios. Each role prints one JSON line with its measurement.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use zmesh::raw_bench::RawBenchSocket;
use zmesh::security::signing::{NONCE_LEN, Signer, SigningKey, Verifier};
use zmesh::security::{AuthPolicy, KeyPair, PublicKey, SecretKey, Security};
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
    /// REQ: N times connect, one round trip, close; reports handshakes/s.
    HsClient(Common),
    /// Sign and verify N messages of --size bytes in-process; reports ops/s per algorithm.
    Sign(Common),
    /// Requests through the Majordomo broker from N concurrent zmesh clients.
    MdpLoad(super::bench_rr::LoadArgs),
    /// Baseline: a ROUTER echo server.
    DirectServer(super::bench_rr::LoadArgs),
    /// Baseline: N DEALER clients of the ROUTER echo server.
    DirectLoad(super::bench_rr::LoadArgs),
    /// Floor of a brokered path: a ROUTER/DEALER forwarder with no logic
    /// between direct-load clients (--endpoint) and a direct-server (--backend).
    DirectProxy(super::bench_rr::LoadArgs),
    /// NATS request/reply clients (needs --features nats-bench).
    NatsLoad(super::bench_rr::LoadArgs),
    /// NATS responders in a queue group (needs --features nats-bench).
    NatsEcho(super::bench_rr::LoadArgs),
    /// Durable queue: publish-to-confirm through the zmesh broker.
    QueuePublish(super::bench_queue::QueueLoadArgs),
    /// Durable queue: consume and ack through the zmesh broker.
    QueueConsume(super::bench_queue::QueueLoadArgs),
    /// The disk's raw write+fdatasync rate, for scale.
    FsyncRate(super::bench_queue::QueueLoadArgs),
    /// RabbitMQ durable queue with publisher confirms (needs --features rabbit-bench).
    RabbitPublish(super::bench_queue::QueueLoadArgs),
    /// RabbitMQ consume with manual acks (needs --features rabbit-bench).
    RabbitConsume(super::bench_queue::QueueLoadArgs),
    /// JetStream file-stream async publish (needs --features nats-bench).
    JsPublish(super::bench_queue::QueueLoadArgs),
    /// JetStream pull consume with acks (needs --features nats-bench).
    JsConsume(super::bench_queue::QueueLoadArgs),
    /// Stream: publish rate into a fresh stream.
    StreamPublish(super::bench_stream::StreamLoadArgs),
    /// Stream: live fan-out to --subscribers.
    StreamFanout(super::bench_stream::StreamLoadArgs),
    /// Stream: one subscriber reading a full stream from the start.
    StreamCatchup(super::bench_stream::StreamLoadArgs),
    /// The reliable channel over loopback (sender and receiver in-process).
    Channel(super::bench_stream::StreamLoadArgs),
    /// Make a broker hold unacked messages and subscriptions, then stay quiet
    /// (for measuring its idle CPU).
    IdleHold(super::bench_idle::IdleArgs),
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
    /// CURVE server: our secret key (Z85).
    #[arg(long)]
    curve_secret: Option<String>,
    /// CURVE client: the server's public key (Z85).
    #[arg(long)]
    curve_server_key: Option<String>,
    /// Sender: wait this long after the last send before closing, in ms.
    #[arg(long, default_value_t = 0)]
    drain_ms: u64,
}

impl Common {
    fn security(&self) -> anyhow::Result<Security> {
        Ok(match (&self.curve_secret, &self.curve_server_key) {
            (Some(secret), _) => Security::CurveServer {
                keys: KeyPair::from_secret(SecretKey::from_z85(secret)?),
                policy: AuthPolicy::new(),
            },
            (None, Some(server)) => Security::CurveClient {
                keys: KeyPair::generate(),
                server: PublicKey::from_z85(server)?,
            },
            (None, None) => Security::Null,
        })
    }
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
            Impl::Zmesh if !matches!(c.security()?, Security::Null) => Self::Zmesh(Socket::new(
                t,
                SocketOptions::default()
                    .linger(Duration::from_secs(10))
                    .security(c.security()?),
            )?),
            Impl::Raw if !matches!(c.security()?, Security::Null) => {
                anyhow::bail!("--impl raw has no CURVE; use --impl zmesh")
            }
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
    use super::bench_queue as bq;
    use super::bench_rr as rr;
    match cmd.role {
        Role::MdpLoad(a) => return rr::mdp_load(a).await,
        Role::DirectServer(a) => return rr::direct_server(a).await,
        Role::DirectLoad(a) => return rr::direct_load(a).await,
        Role::DirectProxy(a) => return rr::direct_proxy(a).await,
        Role::NatsLoad(a) => return rr::nats_load(a).await,
        Role::NatsEcho(a) => return rr::nats_echo(a).await,
        Role::StreamPublish(a) => return super::bench_stream::stream_publish(a).await,
        Role::StreamFanout(a) => return super::bench_stream::stream_fanout(a).await,
        Role::StreamCatchup(a) => return super::bench_stream::stream_catchup(a).await,
        Role::Channel(a) => return super::bench_stream::channel_throughput(a).await,
        Role::IdleHold(a) => return super::bench_idle::idle_hold(a).await,
        Role::QueuePublish(a) => return bq::queue_publish(a).await,
        Role::QueueConsume(a) => return bq::queue_consume(a).await,
        Role::FsyncRate(a) => return bq::fsync_rate(a).await,
        #[cfg(feature = "rabbit-bench")]
        Role::RabbitPublish(a) => return bq::rabbit_publish(a).await,
        #[cfg(feature = "rabbit-bench")]
        Role::RabbitConsume(a) => return bq::rabbit_consume(a).await,
        #[cfg(not(feature = "rabbit-bench"))]
        Role::RabbitPublish(_) | Role::RabbitConsume(_) => return bq::not_built("rabbit-bench"),
        #[cfg(feature = "nats-bench")]
        Role::JsPublish(a) => return bq::js_publish(a).await,
        #[cfg(feature = "nats-bench")]
        Role::JsConsume(a) => return bq::js_consume(a).await,
        #[cfg(not(feature = "nats-bench"))]
        Role::JsPublish(_) | Role::JsConsume(_) => return bq::not_built("nats-bench"),
        Role::ThrRecv(c) => {
            let s = BenchSocket::open(&c, SocketType::Pull).await?;
            s.recv().await?;
            let start = Instant::now();
            for i in 1..c.count {
                // A stalled stream is a lost message: report it rather than wait forever.
                if tokio::time::timeout(Duration::from_secs(5), s.recv())
                    .await
                    .is_err()
                {
                    println!(
                        "{}",
                        serde_json::json!({ "error": "stalled", "received": i, "expected": c.count })
                    );
                    return Ok(1);
                }
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
            // See docs/engine.md: under CURVE the engine's close can drop queued
            // messages before its linger ends, so CURVE senders wait first.
            tokio::time::sleep(Duration::from_millis(c.drain_ms)).await;
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
        Role::HsClient(c) => {
            let start = Instant::now();
            let payload = Bytes::from(vec![0x5a; c.size]);
            for _ in 0..c.count {
                let s = BenchSocket::open(&c, SocketType::Req).await?;
                s.send(payload.clone()).await?;
                s.recv().await?;
                s.close().await?;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({ "handshakes_per_s": c.count as f64 / secs })
            );
        }
        Role::Sign(c) => {
            let frames = vec![Bytes::from(vec![0x5a; c.size])];
            let mut out = serde_json::Map::new();
            for (name, key) in [
                (
                    "hmac",
                    SigningKey::Hmac(b"benchmark key of 32 bytes.......".to_vec()),
                ),
                ("ed25519", SigningKey::ed25519_from_seed([7; 32])),
            ] {
                let signer = Signer::new("bench", key)?;
                let mut verifier = Verifier::new(u64::MAX / 4);
                verifier.add_key("bench", signer.key().verifying_key());
                let start = Instant::now();
                let sigs: Vec<Bytes> = (0..c.count)
                    .map(|i| {
                        let mut nonce = [0u8; NONCE_LEN];
                        nonce[..8].copy_from_slice(&i.to_be_bytes());
                        signer.sign(1_000 + i, nonce, &frames)
                    })
                    .collect();
                let sign_s = start.elapsed().as_secs_f64();
                let start = Instant::now();
                for sig in sigs {
                    verifier.verify(1_000, &[frames[0].clone(), sig])?;
                }
                let verify_s = start.elapsed().as_secs_f64();
                out.insert(
                    format!("{name}_sign_per_s"),
                    (c.count as f64 / sign_s).into(),
                );
                out.insert(
                    format!("{name}_verify_per_s"),
                    (c.count as f64 / verify_s).into(),
                );
            }
            println!("{}", serde_json::Value::Object(out));
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
