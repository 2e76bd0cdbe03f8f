//! A broker's idle cost for `zmesh bench idle-hold`: a fixed number of peers
//! make the broker hold many unacknowledged queue messages and many stream
//! subscriptions, then stay quiet (only their heartbeats) while the caller
//! measures the broker process's CPU time. Prints one JSON line once all is
//! held, then holds it for `--hold-s`.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use zmesh::SocketOptions;
use zmesh_broker::queue::QueueOptions;
use zmesh_broker::stream::StreamOptions;
use zmesh_client::queue::{QueueClient, QueueClientConfig};
use zmesh_client::stream::{StreamClient, StreamClientConfig};
use zmesh_wire::stream::proto::Start;

/// Options of `idle-hold`.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Broker endpoint.
    #[arg(long)]
    pub endpoint: String,
    /// Queue messages published, then held unacknowledged by the peers.
    #[arg(long, default_value_t = 100_000)]
    pub unacked: u32,
    /// Stream subscriptions, spread over the peers.
    #[arg(long, default_value_t = 10_000)]
    pub subscriptions: u32,
    /// Peers: each one queue consumer and one stream client.
    #[arg(long, default_value_t = 10)]
    pub peers: u32,
    /// How long to hold everything once it is held.
    #[arg(long, default_value_t = 60)]
    pub hold_s: u64,
}

const QUEUE: &str = "idle";
const STREAM: &str = "idle";
/// Publishes awaiting their confirm at once while filling the queue.
const PUBLISH_WINDOW: usize = 1000;

/// Hold `unacked` messages and `subscriptions` subscriptions, then wait.
pub async fn idle_hold(a: IdleArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(a.peers > 0, "--peers must be at least 1");
    let opts = SocketOptions::default().send_hwm(100_000).recv_hwm(100_000);
    let qcfg = QueueClientConfig {
        attempt_timeout: Duration::from_secs(30),
        retries: 0,
        ..QueueClientConfig::default()
    };
    let publisher = QueueClient::connect_with(&a.endpoint, qcfg.clone(), opts.clone()).await?;
    let options = QueueOptions {
        // Nothing is redelivered while the broker is measured.
        ack_timeout_ms: 3_600_000,
        max_length: 100_000_000,
        max_bytes: 16 << 30,
        ..QueueOptions::default()
    };
    publisher.declare(QUEUE, Some(&options)).await?;
    let body = Bytes::from(vec![0x5a; 128]);
    let mut in_flight = FuturesUnordered::new();
    for _ in 0..a.unacked {
        if in_flight.len() >= PUBLISH_WINDOW {
            in_flight.next().await.expect("non-empty")?;
        }
        in_flight.push(publisher.publish(QUEUE, body.clone()));
    }
    while let Some(r) = in_flight.next().await {
        r?;
    }
    drop(in_flight);

    // Each peer takes its share and keeps it unacknowledged.
    let share = a.unacked.div_ceil(a.peers);
    let mut holders = Vec::new();
    let mut held = 0u32;
    for _ in 0..a.peers {
        let take = share.min(a.unacked - held);
        let client = QueueClient::connect_with(&a.endpoint, qcfg.clone(), opts.clone()).await?;
        if take > 0 {
            let mut consumer = client.consume(QUEUE, take).await?;
            for _ in 0..take {
                tokio::time::timeout(Duration::from_secs(30), consumer.next())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("consumer ended"))?;
            }
            held += take;
            holders.push((client, consumer));
        }
    }

    let scfg = StreamClientConfig {
        attempt_timeout: Duration::from_secs(30),
        retries: 0,
        ..StreamClientConfig::default()
    };
    let streams = StreamClient::connect_with(&a.endpoint, scfg.clone(), opts.clone()).await?;
    let _ = streams.delete(STREAM).await;
    streams
        .create(STREAM, Some(&StreamOptions::default()))
        .await?;
    let mut subscribers = Vec::new();
    let per_peer = a.subscriptions.div_ceil(a.peers);
    let mut subscribed = 0u32;
    for _ in 0..a.peers {
        let client = StreamClient::connect_with(&a.endpoint, scfg.clone(), opts.clone()).await?;
        let mut subs = Vec::new();
        while subs.len() < per_peer as usize && subscribed < a.subscriptions {
            subs.push(client.subscribe(STREAM, ">", Start::New, None).await?);
            subscribed += 1;
        }
        subscribers.push((client, subs));
    }
    println!(
        "{}",
        serde_json::json!({"kind": "idle-hold", "unacked": held, "subscriptions": subscribed, "peers": a.peers})
    );
    tokio::time::sleep(Duration::from_secs(a.hold_s)).await;
    drop((holders, subscribers));
    Ok(0)
}
