//! The broker's loop on an injected clock, with Majordomo workers holding
//! requests and more requests waiting for them: the wall clock jumps by
//! minutes either way (NTP, a resumed VM) and no request expires, no worker
//! is dropped. Monotonic time that really passes still expires the waiting
//! requests, which shows the loop reads the injected clock at all.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use zmesh::clock::ManualClock;
use zmesh::{Message, Socket, SocketOptions, SocketType};
use zmesh_broker::driver::{RunOptions, Stores, run_with_stores};
use zmesh_broker::mdp::{Broker, BrokerConfig};
use zmesh_testkit::net::bounded;
use zmesh_wire::mdp::{MDPC01, MDPW01, cmd};

const FIVE_MINUTES_MS: i64 = 5 * 60 * 1000;
const SERVICE: &str = "hold";

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

async fn dealer(ep: &str) -> Socket {
    let s = Socket::new(SocketType::Dealer, SocketOptions::default()).unwrap();
    s.connect(ep).await.unwrap();
    s
}

async fn send(s: &Socket, frames: Vec<Bytes>) {
    s.send(Message::from_frames(frames)).await.unwrap();
}

async fn recv(s: &Socket) -> Vec<Bytes> {
    let m = tokio::time::timeout(Duration::from_secs(10), s.recv())
        .await
        .expect("a message within 10 s")
        .unwrap();
    m.frames().to_vec()
}

/// A 7/MDP client request: `["", MDPC01, service, body]`.
fn request(body: &str) -> Vec<Bytes> {
    vec![
        Bytes::new(),
        b(MDPC01),
        b(SERVICE.as_bytes()),
        b(body.as_bytes()),
    ]
}

fn worker_command(command: u8, rest: &[Bytes]) -> Vec<Bytes> {
    let mut f = vec![Bytes::new(), b(MDPW01), b(&[command])];
    f.extend_from_slice(rest);
    f
}

/// The next request a worker gets, past heartbeats: (client address, body).
async fn next_request(worker: &Socket) -> (Bytes, Bytes) {
    loop {
        let f = recv(worker).await;
        assert_eq!(&f[1][..], MDPW01, "{f:?}");
        match f[2][0] {
            cmd::W1_HEARTBEAT => continue,
            cmd::W1_REQUEST => return (f[3].clone(), f[5].clone()),
            other => panic!("a worker got command {other}: {f:?}"),
        }
    }
}

/// Wait for the broker's next heartbeat to `worker`, and answer it: the
/// loop's timers have run since the clock last moved.
async fn heartbeat_round(worker: &Socket) {
    let f = recv(worker).await;
    assert_eq!(
        f,
        worker_command(cmd::W1_HEARTBEAT, &[]),
        "only heartbeats while the clock is stepped"
    );
    send(worker, worker_command(cmd::W1_HEARTBEAT, &[])).await;
}

/// A client's reply, `["", MDPC01, service, first body frame, ...]`: that
/// first frame (the worker's body, or the broker's status code).
fn final_status(f: &[Bytes]) -> String {
    assert_eq!(&f[1][..], MDPC01, "{f:?}");
    String::from_utf8_lossy(&f[3]).into_owned()
}

/// The broker's own view of the service, through its `zmesh.services` MMI.
async fn service_info(ep: &str) -> serde_json::Value {
    let s = dealer(ep).await;
    send(&s, vec![Bytes::new(), b(MDPC01), b(b"zmesh.services")]).await;
    let f = recv(&s).await;
    let v: serde_json::Value = serde_json::from_slice(f.last().unwrap()).unwrap();
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == SERVICE)
        .cloned()
        .unwrap_or_default()
}

/// Ask until the service looks as `done` says (events, not a sleep, end the wait).
async fn wait_service(ep: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = service_info(ep).await;
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "service never got there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stepped_wall_clock_expires_no_request_and_drops_no_worker() {
    bounded(Duration::from_secs(90), async {
        let clock = ManualClock::new();
        let router = Socket::new(
            SocketType::Router,
            SocketOptions::default().router_mandatory(true),
        )
        .unwrap();
        let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
        let cfg = BrokerConfig {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_liveness: 3,
            request_timeout: Duration::from_secs(10),
            worker_busy_max: Duration::from_secs(60),
            ..BrokerConfig::default()
        };
        let opts = RunOptions {
            clock: clock.shared(),
            drain_timeout: Duration::ZERO,
            ..RunOptions::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let broker = tokio::spawn(async move {
            run_with_stores(&router, Broker::new(cfg), Stores::default(), opts, async {
                let _ = stopped.await;
            })
            .await
            .map(|(broker, _)| broker.stats().clone())
        });

        // Two workers, one request each; three more requests wait for them.
        let workers = [dealer(&ep).await, dealer(&ep).await];
        for w in &workers {
            send(w, worker_command(cmd::W1_READY, &[b(SERVICE.as_bytes())])).await;
        }
        wait_service(&ep, |s| s["workers"] == 2).await;
        let mut clients = Vec::new();
        for i in 0..5 {
            clients.push((format!("r{i}"), dealer(&ep).await));
        }
        for (id, c) in &clients[..2] {
            send(c, request(id)).await;
        }
        let mut held = Vec::new();
        for w in &workers {
            held.push(next_request(w).await);
        }
        let held_ids: BTreeSet<_> = held.iter().map(|(_, body)| body.clone()).collect();
        assert_eq!(held_ids, BTreeSet::from([b(b"r0"), b(b"r1")]));
        for (id, c) in &clients[2..] {
            send(c, request(id)).await;
        }
        wait_service(&ep, |s| s["queued"] == 3).await;

        // The wall clock steps back 5 minutes, forward 10, back 5, a second
        // of monotonic time passing each time: each round ends with the
        // broker's heartbeat, so its timers ran after the step.
        for step_ms in [-FIVE_MINUTES_MS, 2 * FIVE_MINUTES_MS, -FIVE_MINUTES_MS] {
            clock.step_wall_ms(step_ms);
            clock.advance(Duration::from_secs(1));
            for w in &workers {
                heartbeat_round(w).await;
            }
        }
        let after_steps = service_info(&ep).await;
        assert_eq!(after_steps["workers"], 2, "{after_steps}");
        assert_eq!(after_steps["queued"], 3, "{after_steps}");
        assert_eq!(after_steps["errors"], 0, "{after_steps}");

        // Monotonic time past the request timeout: the three waiting get 503
        // (before the workers are free again, or one would be handed to them).
        clock.advance(Duration::from_secs(11));
        let mut answers = BTreeMap::new();
        for (id, c) in &clients[2..] {
            answers.insert(id.clone(), final_status(&recv(c).await));
        }
        // Then the workers answer what they held.
        for (w, (client, body)) in workers.iter().zip(&held) {
            let reply = [client.clone(), Bytes::new(), body.clone()];
            send(w, worker_command(cmd::W1_REPLY, &reply)).await;
        }
        for (id, c) in &clients[..2] {
            answers.insert(id.clone(), final_status(&recv(c).await));
        }
        let expected: BTreeMap<_, _> = [
            ("r0", "r0"),
            ("r1", "r1"),
            ("r2", "503"),
            ("r3", "503"),
            ("r4", "503"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(answers, expected);

        stop.send(()).unwrap();
        let stats = broker.await.unwrap().unwrap();
        assert_eq!(stats.workers_expired, 0, "{stats:?}");
    })
    .await;
}
