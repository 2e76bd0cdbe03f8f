//! Faults with real processes: a peer SIGKILLed and restarted, a peer frozen
//! with SIGSTOP, a slow consumer, a thousand connect/close cycles, and network
//! faults through the fault proxy.

mod common;

use std::time::Duration;

use common::zmesh;
use tokio::process::Child;
use tokio::time::Instant;
use zmesh::registry::{PeerSnapshot, PeerState};
use zmesh::{Message, Registry, Socket, SocketOptions, SocketType};
use zmesh_testkit::fault_proxy::FaultProxy;
use zmesh_testkit::net::free_port;
use zmesh_testkit::process::{self, SIGCONT, SIGSTOP};

const TEST_LIMIT: Duration = Duration::from_secs(60);

fn echo_server(port: u16) -> Child {
    zmesh(&[
        "router",
        "--bind",
        &format!("tcp://127.0.0.1:{port}"),
        "--echo",
        "--heartbeat-ms",
        "100",
        "--heartbeat-timeout-ms",
        "500",
    ])
}

fn client_options() -> SocketOptions {
    SocketOptions::default()
        .heartbeat_interval(Duration::from_millis(100))
        .heartbeat_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(100), Duration::from_millis(400))
}

/// Poll `sock`'s single dialed peer until `pred` holds; bounded.
async fn wait_peer(
    sock: &Socket,
    what: &str,
    pred: impl Fn(&PeerSnapshot) -> bool,
) -> PeerSnapshot {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(p) = sock.peers().into_iter().find(|p| pred(p)) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; peers: {:?}",
            sock.peers()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One echo through the server, once the link is up (a message queued on a link
/// whose handshake then fails is lost with it, as in libzmq).
async fn round_trip(dealer: &Socket, body: &str) {
    wait_peer(dealer, "active before round trip", |p| {
        p.state == PeerState::Active
    })
    .await;
    dealer.send(Message::single(body.to_owned())).await.unwrap();
    let reply = dealer
        .recv_timeout(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}; peers {:?}", dealer.peers()));
    assert_eq!(reply.frame(0).unwrap(), body.as_bytes());
}

#[tokio::test]
async fn peer_killed_and_restarted_reconnects_with_backoff() {
    tokio::time::timeout(TEST_LIMIT, async {
        let port = free_port();
        let mut server = echo_server(port);
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let dealer =
            Socket::with_registry(SocketType::Dealer, client_options(), &registry).unwrap();
        dealer
            .connect(&format!("tcp://127.0.0.1:{port}"))
            .await
            .unwrap();
        round_trip(&dealer, "before").await;

        server.kill().await.unwrap();
        wait_peer(&dealer, "link down", |p| p.state != PeerState::Active).await;
        // Let a few retries happen against the closed port, then restart.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut server = echo_server(port);
        let p = wait_peer(&dealer, "link back", |p| {
            p.state == PeerState::Active && p.reconnects == 1
        })
        .await;
        assert_eq!(p.reconnects, 1);
        round_trip(&dealer, "after").await;

        // The waits followed the policy: 100 ms doubling to a 400 ms cap, ±10 % jitter.
        let mut waits = Vec::new();
        while let Ok(ev) = events.try_recv() {
            if ev.to == PeerState::BackingOff {
                let r = ev.reason.unwrap();
                let ms: u64 = r
                    .split(" in ")
                    .nth(1)
                    .unwrap()
                    .trim_end_matches(" ms")
                    .parse()
                    .unwrap();
                let attempt: u32 = r
                    .trim_start_matches("retry #")
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                waits.push((attempt, ms));
            }
        }
        assert!(waits.len() >= 3, "expected several retries, saw {waits:?}");
        for (attempt, ms) in &waits {
            let base = (100u64 << (attempt - 1).min(2)).min(400);
            assert!(
                *ms >= base * 9 / 10 && *ms <= base * 11 / 10 + 1,
                "attempt {attempt}: {ms} ms vs base {base} ms ({waits:?})"
            );
        }
        server.kill().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn frozen_peer_is_detected_by_heartbeat_and_recovers() {
    tokio::time::timeout(TEST_LIMIT, async {
        let port = free_port();
        let server = echo_server(port);
        let pid = server.id().unwrap();
        let dealer =
            Socket::with_registry(SocketType::Dealer, client_options(), &Registry::new()).unwrap();
        dealer
            .connect(&format!("tcp://127.0.0.1:{port}"))
            .await
            .unwrap();
        round_trip(&dealer, "alive").await;

        process::signal(pid, SIGSTOP).unwrap();
        let frozen_at = Instant::now();
        let p = wait_peer(&dealer, "heartbeat expiry", |p| {
            p.state != PeerState::Active
        })
        .await;
        let detected = frozen_at.elapsed();
        // Configured timeout 500 ms; allow scheduling slack on a loaded 2-core machine.
        assert!(
            detected < Duration::from_secs(3),
            "detected after {detected:?}"
        );
        assert_eq!(p.heartbeat_timeouts, 1, "close reason: {:?}", p.last_error);

        process::signal(pid, SIGCONT).unwrap();
        wait_peer(&dealer, "recovered", |p| {
            p.state == PeerState::Active && p.reconnects >= 1
        })
        .await;
        round_trip(&dealer, "thawed").await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn slow_consumer_keeps_memory_bounded() {
    tokio::time::timeout(TEST_LIMIT, async {
        // A PULL that never reads: a zmesh process frozen with SIGSTOP.
        let port = free_port();
        let consumer = zmesh(&[
            "pull",
            "--bind",
            &format!("tcp://127.0.0.1:{port}"),
            "--hwm",
            "100",
        ]);
        let pid = consumer.id().unwrap();
        let ep = format!("tcp://127.0.0.1:{port}");
        let push = Socket::with_registry(
            SocketType::Push,
            SocketOptions::default()
                .send_hwm(100)
                .send_timeout(Some(Duration::from_millis(300))),
            &Registry::new(),
        )
        .unwrap();
        push.connect(&ep).await.unwrap();
        wait_peer(&push, "connected", |p| p.state == PeerState::Active).await;
        process::signal(pid, SIGSTOP).unwrap();

        // PUSH blocks at the high-water mark: with a send timeout it refuses, bounded.
        let payload = vec![7u8; 64 * 1024];
        let rss_before = process::rss_kib(std::process::id()).unwrap();
        let mut sent = 0u64;
        let refused = loop {
            match push.send(Message::single(payload.clone())).await {
                Ok(()) => sent += 1,
                Err(zmesh::Error::Timeout(_)) => break true,
                Err(e) => panic!("unexpected: {e}"),
            }
            if sent > 100_000 {
                break false;
            }
        };
        assert!(refused, "PUSH never blocked");
        // HWM (send + the frozen reader's receive side) plus kernel socket buffers.
        assert!(
            sent < 2_000,
            "{sent} messages of 64 KiB queued behind a frozen consumer"
        );
        assert_eq!(push.snapshot().unwrap().drops, 1);
        let grown = process::rss_kib(std::process::id())
            .unwrap()
            .saturating_sub(rss_before);
        assert!(grown < 256 * 1024, "RSS grew by {grown} KiB");

        // PUB never blocks: it drops for the slow subscriber, memory stays bounded.
        let sub_port = free_port();
        let sub = zmesh(&[
            "sub",
            "--connect",
            &format!("tcp://127.0.0.1:{sub_port}"),
            "--hwm",
            "100",
        ]);
        let publ = Socket::with_registry(
            SocketType::Pub,
            SocketOptions::default().send_hwm(100),
            &Registry::new(),
        )
        .unwrap();
        publ.bind(&format!("tcp://127.0.0.1:{sub_port}"))
            .await
            .unwrap();
        wait_peer(&publ, "subscriber", |p| p.state == PeerState::Active).await;
        process::signal(sub.id().unwrap(), SIGSTOP).unwrap();
        let rss_before = process::rss_kib(std::process::id()).unwrap();
        for _ in 0..20_000 {
            publ.send(Message::single(payload.clone())).await.unwrap();
        }
        let grown = process::rss_kib(std::process::id())
            .unwrap()
            .saturating_sub(rss_before);
        assert!(
            grown < 256 * 1024,
            "PUB RSS grew by {grown} KiB for 1.3 GB published"
        );
        process::signal(pid, SIGCONT).unwrap();
        process::signal(sub.id().unwrap(), SIGCONT).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn thousand_connect_close_cycles_leak_nothing() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let registry = Registry::new();
        let rep =
            Socket::with_registry(SocketType::Rep, SocketOptions::default(), &registry).unwrap();
        let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap();
        let me = std::process::id();
        let cycle = |i: u32| {
            let ep = ep.clone();
            let registry = registry.clone();
            let rep = rep.clone();
            async move {
                let req =
                    Socket::with_registry(SocketType::Req, SocketOptions::default(), &registry)
                        .unwrap();
                req.connect(&ep).await.unwrap();
                req.send(Message::single(i.to_string())).await.unwrap();
                let m = rep.recv_timeout(Duration::from_secs(10)).await.unwrap();
                rep.send(m).await.unwrap();
                req.recv_timeout(Duration::from_secs(10)).await.unwrap();
                req.close().await.unwrap();
            }
        };
        for i in 0..50 {
            cycle(i).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fds_before = process::open_fds(me).unwrap();
        let tasks_before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        for i in 0..1000 {
            cycle(i).await;
        }
        // Let closes finish, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fds = process::open_fds(me).unwrap();
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            if fds <= fds_before + 5 && tasks <= tasks_before + 5 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "leak: fds {fds_before} -> {fds}, tasks {tasks_before} -> {tasks}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The registry stays bounded too: closed sockets and peers are trimmed.
        let snap = registry.snapshot();
        assert!(
            snap.len() <= zmesh::registry::CLOSED_SOCKETS_KEPT_MAX + 2,
            "{} sockets kept",
            snap.len()
        );
        let rep_snap = snap.iter().find(|s| s.socket_type == "REP").unwrap();
        assert!(
            rep_snap.peers.len() <= 70,
            "{} peers kept",
            rep_snap.peers.len()
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn network_faults_through_the_proxy() {
    tokio::time::timeout(TEST_LIMIT, async {
        let port = free_port();
        let _server = echo_server(port);
        let proxy = FaultProxy::start(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let dealer =
            Socket::with_registry(SocketType::Dealer, client_options(), &Registry::new()).unwrap();
        dealer.connect(&proxy.endpoint()).await.unwrap();
        round_trip(&dealer, "direct").await;

        // Delay: slower, still correct.
        proxy.set_delay(Duration::from_millis(50));
        round_trip(&dealer, "delayed").await;
        proxy.set_delay(Duration::ZERO);

        // Cut: the link drops and comes back by itself.
        proxy.cut();
        wait_peer(&dealer, "reconnected after cut", |p| {
            p.reconnects >= 1 && p.state == PeerState::Active
        })
        .await;
        round_trip(&dealer, "after cut").await;

        // Stall: bytes stop but TCP stays up; only heartbeats can tell.
        proxy.set_stalled(true);
        let p = wait_peer(&dealer, "stall detected", |p| p.state != PeerState::Active).await;
        assert_eq!(p.heartbeat_timeouts, 1, "{:?}", p.last_error);
        proxy.set_stalled(false);
        wait_peer(&dealer, "back after stall", |p| {
            p.reconnects >= 2 && p.state == PeerState::Active
        })
        .await;
        round_trip(&dealer, "after stall").await;

        // Corruption: the damaged link is dropped, a fresh one carries on.
        let before = dealer.peers()[0].reconnects;
        proxy.corrupt_next(1);
        dealer
            .send(Message::single(vec![b'x'; 4096]))
            .await
            .unwrap();
        let recovered = async {
            loop {
                let p = wait_peer(&dealer, "active", |p| p.state == PeerState::Active).await;
                if dealer.send(Message::single("probe")).await.is_ok()
                    && let Ok(m) = dealer.recv_timeout(Duration::from_millis(500)).await
                    && m.frame(0).unwrap() == "probe"
                {
                    return p;
                }
            }
        };
        let p = tokio::time::timeout(Duration::from_secs(20), recovered)
            .await
            .expect("no recovery after corruption");
        assert!(
            p.reconnects > before || p.last_error.is_some(),
            "corruption went unnoticed: {p:?}"
        );
    })
    .await
    .unwrap();
}
