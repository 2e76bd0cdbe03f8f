//! Connection closes the broker never got an event for: a peer that spoke
//! and left before the broker's loop watched for closes is still handled as
//! closed, not kept until heartbeats lapse.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::inproc::{broker_router, client_config, test_config};
use zmesh::{Message, Socket, SocketOptions, SocketType};
use zmesh_broker::mdp::{Broker, BrokerConfig};
use zmesh_client::mdp::Client;
use zmesh_testkit::net::bounded;

/// Poll `connection_ids` until `done` holds for their number.
async fn wait_connections(router: &Socket, done: impl Fn(usize) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(router.connection_ids().await.unwrap().len()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never changed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_worker_gone_before_the_loop_started_is_removed() {
    bounded(Duration::from_secs(60), async {
        let router = broker_router();
        let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
        // A 7/MDP worker says READY and closes, all before the broker's loop
        // runs: its READY waits in the engine, its close event is gone.
        let worker = Socket::new(SocketType::Dealer, SocketOptions::default()).unwrap();
        worker.connect(&ep).await.unwrap();
        let ready = ["", "MDPW01", "\x01", "early"].map(|f| Bytes::from(f.to_owned()));
        worker
            .send(Message::from_frames(ready.to_vec()))
            .await
            .unwrap();
        wait_connections(&router, |n| n == 1).await;
        worker.close().await.unwrap();
        wait_connections(&router, |n| n == 0).await;

        let cfg = BrokerConfig {
            // Heartbeats would take a minute to notice: only the close can.
            heartbeat_interval: Duration::from_secs(20),
            ..test_config()
        };
        tokio::spawn(async move {
            zmesh_broker::driver::run(&router, Broker::new(cfg), std::future::pending()).await
        });
        let client = Client::connect(&ep, client_config()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = client.request("zmesh.services", vec![]).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&r[1]).unwrap();
            let early = v["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "early");
            // Registered from its READY, then removed as closed.
            if early.is_some_and(|s| s["workers"] == 0) {
                assert_eq!(v["stats"]["workers_disconnected"], 1, "{v}");
                assert_eq!(v["stats"]["workers_expired"], 0, "{v}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the closed worker is still registered: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
