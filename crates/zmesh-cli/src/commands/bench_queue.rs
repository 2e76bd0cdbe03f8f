//! Durable-queue load for `zmesh bench`: publish-to-confirm and
//! consume+ack through the zmesh broker, RabbitMQ (`--features rabbit-bench`,
//! the lapin client) and NATS JetStream (`--features nats-bench`), plus the
//! disk's raw fsync rate for scale. Each role prints one JSON line.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use zmesh_broker::queue::QueueOptions;
use zmesh_client::queue::{QueueClient, QueueClientConfig};

/// Options of the queue load roles.
#[derive(Args, Debug, Clone)]
pub struct QueueLoadArgs {
    /// Broker / server endpoint (zmesh: tcp://…, RabbitMQ: amqp://…, NATS: nats://…).
    #[arg(long)]
    pub endpoint: String,
    /// Queue, stream or subject name.
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// Messages.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Publishes awaiting their confirm at once.
    #[arg(long, default_value_t = 1000)]
    pub window: usize,
    /// Consumer prefetch (unacknowledged at once).
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u32,
    /// zmesh queue durability: always, group or os.
    #[arg(long, default_value = "group")]
    pub durability: String,
    /// Directory for `fsync-rate`.
    #[arg(long, default_value = ".")]
    pub dir: std::path::PathBuf,
}

fn report(kind: &str, n: u64, secs: f64, mut lat_us: Vec<f64>) {
    lat_us.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat_us.is_empty() {
            0.0
        } else {
            lat_us[((lat_us.len() as f64 - 1.0) * p) as usize]
        }
    };
    println!(
        "{}",
        serde_json::json!({ "kind": kind, "msg_per_s": n as f64 / secs, "p50_us": pct(0.5), "p99_us": pct(0.99) })
    );
}

/// Publish with a window of unconfirmed messages; time each publish to its confirm.
async fn publish_window<F, Fut, E>(a: &QueueLoadArgs, kind: &str, publish: F) -> anyhow::Result<i32>
where
    F: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let body = Bytes::from(vec![0x5a; a.size]);
    let mut in_flight = FuturesUnordered::new();
    let mut lat = Vec::with_capacity(a.count as usize);
    let start = Instant::now();
    let timed = |b: Bytes| {
        let t = Instant::now();
        let f = publish(b);
        async move { f.await.map(|()| t.elapsed().as_secs_f64() * 1e6) }
    };
    for _ in 0..a.count {
        if in_flight.len() >= a.window.max(1) {
            let r: Result<f64, E> = in_flight.next().await.expect("non-empty");
            lat.push(r.map_err(Into::into)?);
        }
        in_flight.push(timed(body.clone()));
    }
    while let Some(r) = in_flight.next().await {
        lat.push(r.map_err(Into::into)?);
    }
    report(kind, a.count, start.elapsed().as_secs_f64(), lat);
    Ok(0)
}

async fn zmesh_client(a: &QueueLoadArgs) -> anyhow::Result<QueueClient> {
    let cfg = QueueClientConfig {
        attempt_timeout: Duration::from_secs(30),
        retries: 0,
        ..QueueClientConfig::default()
    };
    let opts = zmesh::SocketOptions::default()
        .send_hwm(100_000)
        .recv_hwm(100_000);
    Ok(QueueClient::connect_with(&a.endpoint, cfg, opts).await?)
}

/// Publish-to-confirm through the zmesh broker.
pub async fn queue_publish(a: QueueLoadArgs) -> anyhow::Result<i32> {
    let client = zmesh_client(&a).await?;
    let options = QueueOptions {
        durability: zmesh_log::Durability::parse(&a.durability)?,
        max_length: 100_000_000,
        max_bytes: 16 << 30,
        ..QueueOptions::default()
    };
    client.declare(&a.queue, Some(&options)).await?;
    let kind = format!("zmesh-publish-{}", a.durability);
    publish_window(&a, &kind, |b| {
        let c = client.clone();
        let q = a.queue.clone();
        async move { c.publish(&q, b).await.map(|_| ()) }
    })
    .await
}

/// Consume and ack (acks batched per half window) through the zmesh broker.
pub async fn queue_consume(a: QueueLoadArgs) -> anyhow::Result<i32> {
    let client = zmesh_client(&a).await?;
    let mut consumer = client.consume(&a.queue, a.prefetch).await?;
    let start = Instant::now();
    let mut tags = Vec::new();
    for _ in 0..a.count {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("consumer ended"))?;
        tags.push(d.tag);
        if tags.len() >= (a.prefetch as usize / 2).max(1) {
            consumer.ack_many(&std::mem::take(&mut tags)).await?;
        }
    }
    consumer.ack_many(&tags).await?;
    report(
        "zmesh-consume-ack",
        a.count,
        start.elapsed().as_secs_f64(),
        Vec::new(),
    );
    consumer.cancel().await?;
    Ok(0)
}

/// The disk's rate of small write + fdatasync, one after another.
pub async fn fsync_rate(a: QueueLoadArgs) -> anyhow::Result<i32> {
    use std::io::Write;
    let path = a
        .dir
        .join(format!("zmesh-fsync-probe-{}", std::process::id()));
    let mut f = std::fs::File::create(&path)?;
    let start = Instant::now();
    let mut n = 0u64;
    let body = vec![0u8; a.size];
    while start.elapsed() < Duration::from_secs(2) {
        f.write_all(&body)?;
        f.sync_data()?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    report("fsync", n, secs, Vec::new());
    Ok(0)
}

/// RabbitMQ: a durable queue, persistent messages, publisher confirms.
#[cfg(feature = "rabbit-bench")]
pub async fn rabbit_publish(a: QueueLoadArgs) -> anyhow::Result<i32> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(&a.endpoint, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        a.queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let props = BasicProperties::default().with_delivery_mode(2);
    publish_window(&a, "rabbitmq-publish", |b| {
        let (ch, props, q) = (ch.clone(), props.clone(), a.queue.clone());
        async move {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    &b,
                    props,
                )
                .await?;
            let c = confirm.await?;
            anyhow::ensure!(c.is_ack(), "RabbitMQ nacked a publish");
            anyhow::Ok(())
        }
    })
    .await
}

/// RabbitMQ: consume with manual acks (batched, `multiple`) and a prefetch.
#[cfg(feature = "rabbit-bench")]
pub async fn rabbit_consume(a: QueueLoadArgs) -> anyhow::Result<i32> {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties};
    let conn = Connection::connect(&a.endpoint, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(a.prefetch.min(65_535) as u16, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            a.queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let start = Instant::now();
    let batch = (a.prefetch as u64 / 2).max(1);
    for i in 1..=a.count {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
        if i % batch == 0 || i == a.count {
            d.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    report(
        "rabbitmq-consume-ack",
        a.count,
        start.elapsed().as_secs_f64(),
        Vec::new(),
    );
    Ok(0)
}

/// JetStream: a file-backed stream, async publish with a window of pending acks.
#[cfg(feature = "nats-bench")]
pub async fn js_publish(a: QueueLoadArgs) -> anyhow::Result<i32> {
    use async_nats::jetstream::{self, stream};
    let client = async_nats::connect(&a.endpoint).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(&a.queue).await;
    js.create_stream(stream::Config {
        name: a.queue.clone(),
        subjects: vec![format!("{}.>", a.queue)],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let subject = format!("{}.msgs", a.queue);
    publish_window(&a, "jetstream-publish", |b| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            js.publish(subject, b).await?.await?;
            anyhow::Ok(())
        }
    })
    .await
}

/// JetStream: a durable pull consumer with explicit acks.
#[cfg(feature = "nats-bench")]
pub async fn js_consume(a: QueueLoadArgs) -> anyhow::Result<i32> {
    use async_nats::jetstream::{self, consumer};
    let client = async_nats::connect(&a.endpoint).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&a.queue).await?;
    let c = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: a.prefetch as i64,
            ..Default::default()
        })
        .await?;
    let mut messages = c.messages().await?;
    let start = Instant::now();
    for _ in 0..a.count {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("consumer ended"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    report(
        "jetstream-consume-ack",
        a.count,
        start.elapsed().as_secs_f64(),
        Vec::new(),
    );
    Ok(0)
}

/// A role whose client was not compiled in.
#[allow(dead_code)]
pub fn not_built(feature: &str) -> anyhow::Result<i32> {
    anyhow::bail!("this role needs `--features {feature}` (scripts/bench builds it)")
}
