//! Stream and channel load for `zmesh bench`: publish rate, fan-out to N
//! subscribers, catch-up read rate, and the reliable channel's throughput.
//! Each role prints one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use zmesh::SocketOptions;
use zmesh_broker::stream::StreamOptions;
use zmesh_client::stream::{StreamClient, StreamClientConfig};
use zmesh_wire::stream::proto::Start;

/// Options of the stream and channel roles.
#[derive(Args, Debug, Clone)]
pub struct StreamLoadArgs {
    /// Broker endpoint (stream roles).
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    pub endpoint: String,
    /// Stream name.
    #[arg(long, default_value = "bench")]
    pub stream: String,
    /// Messages.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Publishes awaiting their STORED at once.
    #[arg(long, default_value_t = 1000)]
    pub window: usize,
    /// Subscribers (fan-out).
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Stream durability: always, group or os.
    #[arg(long, default_value = "group")]
    pub durability: String,
}

async fn client(a: &StreamLoadArgs) -> anyhow::Result<StreamClient> {
    let cfg = StreamClientConfig {
        attempt_timeout: Duration::from_secs(30),
        retries: 0,
        credit: 10_000,
        ..StreamClientConfig::default()
    };
    let opts = SocketOptions::default().send_hwm(100_000).recv_hwm(100_000);
    Ok(StreamClient::connect_with(&a.endpoint, cfg, opts).await?)
}

async fn create(c: &StreamClient, a: &StreamLoadArgs) -> anyhow::Result<()> {
    let _ = c.delete(&a.stream).await;
    let o = StreamOptions {
        durability: zmesh_log::Durability::parse(&a.durability)?,
        max_bytes: None,
        ..StreamOptions::default()
    };
    c.create(&a.stream, Some(&o)).await?;
    Ok(())
}

/// Publish `count` with `window` in flight; per-publish latencies in µs.
async fn publish_all(c: &StreamClient, a: &StreamLoadArgs) -> anyhow::Result<Vec<f64>> {
    let body = Bytes::from(vec![0x5a; a.size]);
    let mut in_flight = FuturesUnordered::new();
    let mut lat = Vec::with_capacity(a.count as usize);
    for i in 0..a.count {
        if in_flight.len() >= a.window.max(1) {
            lat.push(in_flight.next().await.expect("non-empty")?);
        }
        let (c, b, s) = (c.clone(), body.clone(), a.stream.clone());
        in_flight.push(async move {
            let t = Instant::now();
            c.publish(&s, &format!("bench.k{}", i % 16), b).await?;
            anyhow::Ok(t.elapsed().as_secs_f64() * 1e6)
        });
    }
    while let Some(r) = in_flight.next().await {
        lat.push(r?);
    }
    Ok(lat)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Publish rate into a fresh stream.
pub async fn stream_publish(a: StreamLoadArgs) -> anyhow::Result<i32> {
    let c = client(&a).await?;
    create(&c, &a).await?;
    let start = Instant::now();
    let mut lat = publish_all(&c, &a).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"kind": "stream-publish", "msg_per_s": a.count as f64 / secs,
            "p50_us": pct(&mut lat, 0.5), "p99_us": pct(&mut lat, 0.99)})
    );
    Ok(0)
}

/// Publish while `subscribers` follow live; time until every one has all.
pub async fn stream_fanout(a: StreamLoadArgs) -> anyhow::Result<i32> {
    let c = client(&a).await?;
    create(&c, &a).await?;
    let got = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..a.subscribers {
        let sc = client(&a).await?;
        let mut sub = sc.subscribe(&a.stream, ">", Start::First, None).await?;
        let (got, n) = (got.clone(), a.count);
        tasks.push(tokio::spawn(async move {
            let _keep = sc;
            for _ in 0..n {
                if tokio::time::timeout(Duration::from_secs(30), sub.next())
                    .await
                    .is_err()
                {
                    break;
                }
                got.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    publish_all(&c, &a).await?;
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let delivered = got.load(Ordering::Relaxed);
    anyhow::ensure!(
        delivered == a.count * a.subscribers as u64,
        "only {delivered} delivered"
    );
    println!(
        "{}",
        serde_json::json!({"kind": "stream-fanout", "subscribers": a.subscribers,
            "msg_per_s": a.count as f64 / secs, "deliveries_per_s": delivered as f64 / secs})
    );
    Ok(0)
}

/// Fill a stream, then time one subscriber reading it all from the start.
pub async fn stream_catchup(a: StreamLoadArgs) -> anyhow::Result<i32> {
    let c = client(&a).await?;
    create(&c, &a).await?;
    publish_all(&c, &a).await?;
    let sc = client(&a).await?;
    let start = Instant::now();
    let mut sub = sc.subscribe(&a.stream, ">", Start::First, None).await?;
    for _ in 0..a.count {
        tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("subscription ended"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"kind": "stream-catchup", "msg_per_s": a.count as f64 / secs})
    );
    Ok(0)
}

/// The reliable channel over loopback, sender and receiver in this process.
pub async fn channel_throughput(a: StreamLoadArgs) -> anyhow::Result<i32> {
    use zmesh_channel::{ChannelReceiver, ChannelSender, ReceiverOptions, SenderOptions};
    let dir = std::env::temp_dir().join(format!("zmesh-bench-channel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut rx, ep) =
        ChannelReceiver::bind("tcp://127.0.0.1:0", ReceiverOptions::new(dir.join("state"))).await?;
    let mut opts = SenderOptions::new("bench", dir.join("outbox"));
    opts.fsync = a.durability == "always";
    let tx = ChannelSender::open(&ep, opts).await?;
    let n = a.count;
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            let Some(d) = rx.recv().await else { break };
            got += 1;
            if got.is_multiple_of(256) || got == n {
                rx.commit(&d.channel, d.seq + 1, 0);
            }
        }
        (got, rx)
    });
    let body = Bytes::from(vec![0x5a; a.size]);
    let start = Instant::now();
    // Many sends in flight: each resolves once its message is in the outbox.
    let mut in_flight = FuturesUnordered::new();
    for _ in 0..n {
        if in_flight.len() >= a.window.max(1) {
            in_flight.next().await.expect("non-empty")?;
        }
        in_flight.push(tx.send(body.clone()));
    }
    while let Some(r) = in_flight.next().await {
        r?;
    }
    anyhow::ensure!(
        tx.wait_committed(Duration::from_secs(120)).await,
        "not all committed"
    );
    let secs = start.elapsed().as_secs_f64();
    let (got, _rx) = reader.await?;
    anyhow::ensure!(got == n, "received {got} of {n}");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::json!({"kind": "channel", "msg_per_s": n as f64 / secs,
            "mib_per_s": (n as f64 * a.size as f64) / secs / (1 << 20) as f64})
    );
    Ok(0)
}
