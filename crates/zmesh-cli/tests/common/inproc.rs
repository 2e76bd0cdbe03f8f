//! An in-process broker and the helpers the broker and worker tests share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use zmesh::{Socket, SocketOptions, SocketType};
use zmesh_broker::mdp::{Broker, BrokerConfig};
use zmesh_client::mdp::{Client, ClientConfig};
use zmesh_client::worker::{WorkerConfig, handler};

/// Heartbeats fast enough for tests; python's mdp_peer.py uses the same 300 ms.
pub const HB: Duration = Duration::from_millis(300);

pub fn test_config() -> BrokerConfig {
    BrokerConfig {
        heartbeat_interval: HB,
        request_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

/// The ROUTER a broker's driver runs on, not yet bound.
pub fn broker_router() -> Socket {
    Socket::new(
        SocketType::Router,
        SocketOptions::default()
            .name("broker")
            .router_mandatory(true),
    )
    .unwrap()
}

/// A broker in this process; returns its endpoint.
pub async fn broker(cfg: BrokerConfig) -> String {
    let router = broker_router();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
    tokio::spawn(async move {
        zmesh_broker::driver::run(&router, Broker::new(cfg), std::future::pending()).await
    });
    ep
}

pub fn worker_config() -> WorkerConfig {
    WorkerConfig {
        heartbeat_interval: HB,
        reconnect_initial: Duration::from_millis(100),
        ..Default::default()
    }
}

pub fn client_config() -> ClientConfig {
    ClientConfig {
        attempt_timeout: Duration::from_secs(2),
        retries: 3,
        ..Default::default()
    }
}

pub fn text(frames: &[Bytes]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Spawn each future and collect the outputs in order.
pub async fn futures_join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

pub fn slow_echo(delay: Duration) -> (zmesh_client::worker::Handler, Arc<AtomicU32>) {
    let started = Arc::new(AtomicU32::new(0));
    let counter = started.clone();
    let h = handler(move |body: Vec<Bytes>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            Ok(body)
        }
    });
    (h, started)
}

/// Poll `done` every 10 ms for up to 10 s.
pub async fn wait_until(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the broker reports `n` workers for `service`.
pub async fn wait_workers(client: &Client, service: &str, n: u64) {
    wait_service(client, service, &format!("{n} workers"), |s| {
        s.map_or(0, |s| s["workers"].as_u64().unwrap()) == n
    })
    .await
}

/// Wait until `done` holds for the broker's view of `service`
/// (`zmesh.services`; `None` while the broker does not know it).
pub async fn wait_service(
    client: &Client,
    service: &str,
    what: &str,
    done: impl Fn(Option<&serde_json::Value>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = client.request("zmesh.services", vec![]).await {
            let v: serde_json::Value = serde_json::from_slice(&r[1]).unwrap();
            let found = v["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == service);
            if done(found) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never reached {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
