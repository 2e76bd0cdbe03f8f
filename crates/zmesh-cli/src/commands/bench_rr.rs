//! Request/reply load for `zmesh bench`: through the broker, direct DEALER/ROUTER,
//! and NATS request/reply (with `--features nats-bench`), N concurrent clients each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use zmesh::{Message, Socket, SocketOptions, SocketType};
use zmesh_client::mdp::{Client, ClientConfig};

/// Options of the request/reply load roles.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Broker, server or NATS endpoint.
    #[arg(long)]
    pub endpoint: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Connections the clients share (0: one per client). Client `i` uses
    /// connection `i % connections`, as tasks of one service share its client.
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// Requests in total.
    #[arg(long, default_value_t = 50_000)]
    pub count: u64,
    /// Request size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Service or subject name.
    #[arg(long, default_value = "echo")]
    pub service: String,
    /// direct-proxy: the direct-server to forward to.
    #[arg(long)]
    pub backend: Option<String>,
}

impl LoadArgs {
    fn connection_count(&self) -> usize {
        match self.connections {
            0 => self.clients,
            n => n.min(self.clients),
        }
    }
}

/// Run `clients` loops that each take requests from a shared budget; print rate and percentiles.
async fn drive<C, Fut>(
    a: &LoadArgs,
    conns: Vec<C>,
    one: impl Fn(Arc<C>, Bytes) -> Fut + Send + Sync + 'static,
) -> anyhow::Result<i32>
where
    C: Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let budget = Arc::new(AtomicU64::new(a.count));
    let payload = Bytes::from(vec![0x5a; a.size]);
    let one = Arc::new(one);
    let start = Instant::now();
    let conns: Vec<Arc<C>> = conns.into_iter().map(Arc::new).collect();
    let tasks: Vec<_> = (0..a.clients)
        .map(|i| {
            let c = conns[i % conns.len()].clone();
            let (budget, payload, one) = (budget.clone(), payload.clone(), one.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    one(c.clone(), payload.clone()).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize];
    println!(
        "{}",
        serde_json::json!({ "req_per_s": all.len() as f64 / secs, "p50_us": pct(0.5), "p99_us": pct(0.99) })
    );
    Ok(0)
}

/// Requests through the broker with zmesh's client.
pub async fn mdp_load(a: LoadArgs) -> anyhow::Result<i32> {
    let cfg = ClientConfig {
        attempt_timeout: Duration::from_secs(10),
        retries: 0,
        ..Default::default()
    };
    let mut conns = Vec::new();
    for _ in 0..a.connection_count() {
        conns.push(Client::connect(&a.endpoint, cfg.clone()).await?);
    }
    let service = a.service.clone();
    drive(&a, conns, move |c: Arc<Client>, p| {
        let service = service.clone();
        async move {
            c.request(&service, vec![p]).await?;
            Ok(())
        }
    })
    .await
}

/// The baseline without a broker: a ROUTER that echoes.
pub async fn direct_server(a: LoadArgs) -> anyhow::Result<i32> {
    let router = Socket::new(
        SocketType::Router,
        SocketOptions::default().send_hwm(100_000).recv_hwm(100_000),
    )?;
    router.bind(&a.endpoint).await?;
    loop {
        let m = router.recv().await?;
        router.send(m).await?;
    }
}

/// The floor of any broker on this engine and transport: four hops through
/// three processes like the broker's path, with nothing done in between. A
/// ROUTER takes [client, body] and a DEALER forwards it to the echo server,
/// whose reply comes back the same way (zmq_proxy's shape).
pub async fn direct_proxy(a: LoadArgs) -> anyhow::Result<i32> {
    let backend = a
        .backend
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("direct-proxy needs --backend"))?;
    let opts = SocketOptions::default().send_hwm(100_000).recv_hwm(100_000);
    let front = Socket::new(SocketType::Router, opts.clone())?;
    front.bind(&a.endpoint).await?;
    let back = Socket::new(SocketType::Dealer, opts)?;
    back.connect(backend).await?;
    loop {
        tokio::select! {
            m = front.recv() => back.send(m?).await?,
            m = back.recv() => front.send(m?).await?,
        }
    }
}

/// Clients of [`direct_server`]: DEALERs, one request at a time each.
pub async fn direct_load(a: LoadArgs) -> anyhow::Result<i32> {
    let mut conns = Vec::new();
    for _ in 0..a.connection_count() {
        let d = Socket::new(SocketType::Dealer, SocketOptions::default())?;
        d.connect(&a.endpoint).await?;
        conns.push(d);
    }
    drive(&a, conns, |d: Arc<Socket>, p| async move {
        d.send(Message::single(p)).await?;
        d.recv().await?;
        Ok(())
    })
    .await
}

/// NATS request/reply clients (async-nats).
#[cfg(feature = "nats-bench")]
pub async fn nats_load(a: LoadArgs) -> anyhow::Result<i32> {
    let mut conns = Vec::new();
    for _ in 0..a.connection_count() {
        conns.push(async_nats::connect(&a.endpoint).await?);
    }
    let subject = a.service.clone();
    drive(&a, conns, move |c: Arc<async_nats::Client>, p| {
        let subject = subject.clone();
        async move {
            c.request(subject, p).await?;
            Ok(())
        }
    })
    .await
}

/// NATS responders: `clients` subscriptions in one queue group, echoing.
#[cfg(feature = "nats-bench")]
pub async fn nats_echo(a: LoadArgs) -> anyhow::Result<i32> {
    use futures::StreamExt;
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let c = async_nats::connect(&a.endpoint).await?;
        let mut sub = c
            .queue_subscribe(a.service.clone(), "workers".into())
            .await?;
        tasks.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = c.publish(reply, m.payload).await;
                }
            }
        }));
    }
    println!("READY");
    for t in tasks {
        let _ = t.await;
    }
    Ok(0)
}

#[cfg(not(feature = "nats-bench"))]
pub async fn nats_load(_a: LoadArgs) -> anyhow::Result<i32> {
    anyhow::bail!("built without NATS support: cargo build --release --features nats-bench")
}

#[cfg(not(feature = "nats-bench"))]
pub async fn nats_echo(_a: LoadArgs) -> anyhow::Result<i32> {
    nats_load(_a).await
}
