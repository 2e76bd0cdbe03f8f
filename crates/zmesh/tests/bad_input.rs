//! Hostile and broken peers: each is dropped with an event naming why, and a
//! good peer on the same socket keeps being served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zmesh::registry::{ConnectionEvent, PeerState};
use zmesh::{Message, Registry, Socket, SocketOptions, SocketType};
use zmesh_testkit::peer::PyPeer;

const TEST_LIMIT: Duration = Duration::from_secs(30);

/// A REP server in its own registry, plus an event subscription.
async fn server(
    opts: SocketOptions,
) -> (
    Socket,
    String,
    tokio::sync::broadcast::Receiver<ConnectionEvent>,
) {
    let registry = Registry::new();
    let events = registry.subscribe();
    let rep = Socket::with_registry(SocketType::Rep, opts, &registry).unwrap();
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap();
    (rep, ep, events)
}

fn addr(ep: &str) -> String {
    ep.trim_start_matches("tcp://").to_owned()
}

/// Wait for an event closing an inbound peer; returns its reason.
async fn closed_reason(events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>) -> String {
    loop {
        let ev = events.recv().await.unwrap();
        if ev.to == PeerState::Closed && ev.peer.starts_with("in:") {
            return ev.reason.unwrap_or_default();
        }
    }
}

/// A good libzmq client still gets answers from `rep`.
async fn good_peer_still_served(rep: &Socket, ep: &str) {
    let (mut py, _) =
        PyPeer::start(&["send", "--type", "req", "--connect", ep, "--msg", "6f6b"]).await;
    let m = rep.recv_timeout(Duration::from_secs(10)).await.unwrap();
    rep.send(m).await.unwrap();
    assert_eq!(py.message().await, vec![b"ok".to_vec()]);
}

#[tokio::test]
async fn garbage_on_the_port_is_dropped_with_a_reason() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (rep, ep, mut events) = server(SocketOptions::default()).await;
        let mut s = TcpStream::connect(addr(&ep)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let reason = closed_reason(&mut events).await;
        assert!(reason.contains("handshake"), "reason: {reason}");
        // The connection really is closed by us.
        let mut buf = [0u8; 128];
        let n = tokio::time::timeout(Duration::from_secs(5), async {
            let mut total = 0;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        })
        .await
        .expect("server kept a garbage connection open");
        assert!(n <= 64, "server sent more than a greeting to garbage");
        good_peer_still_served(&rep, &ep).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_protocol_version_is_refused() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (rep, ep, mut events) = server(SocketOptions::default()).await;
        let mut s = TcpStream::connect(addr(&ep)).await.unwrap();
        // A ZMTP greeting claiming version 9.9 with a bogus mechanism.
        let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 9, 9];
        greeting.extend_from_slice(b"BOGUS\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        greeting.push(0);
        greeting.extend_from_slice(&[0u8; 31]);
        s.write_all(&greeting).await.unwrap();
        let reason = closed_reason(&mut events).await;
        assert!(!reason.is_empty());
        good_peer_still_served(&rep, &ep).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn silent_client_is_cut_at_the_handshake_deadline() {
    tokio::time::timeout(TEST_LIMIT, async {
        let opts = SocketOptions::default().handshake_timeout(Duration::from_millis(300));
        let (rep, ep, mut events) = server(opts).await;
        let _silent = TcpStream::connect(addr(&ep)).await.unwrap();
        let started = tokio::time::Instant::now();
        let reason = closed_reason(&mut events).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not cut in time"
        );
        assert!(
            reason.to_lowercase().contains("handshake") || reason.contains("time"),
            "reason: {reason}"
        );
        good_peer_still_served(&rep, &ep).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn oversize_message_drops_the_sender_not_the_socket() {
    tokio::time::timeout(TEST_LIMIT, async {
        let opts = SocketOptions::default().max_message_size(Some(1024));
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let pull = Socket::with_registry(SocketType::Pull, opts, &registry).unwrap();
        let ep = pull.bind("tcp://127.0.0.1:0").await.unwrap();
        let big = "ab".repeat(4096);
        let (_py, _) =
            PyPeer::start(&["send", "--type", "push", "--connect", &ep, "--msg", &big]).await;
        let reason = closed_reason(&mut events).await;
        assert!(!reason.is_empty());
        // Nothing oversize was delivered; a normal message still is.
        assert!(pull.try_recv().unwrap().is_none());
        let (_py2, _) =
            PyPeer::start(&["send", "--type", "push", "--connect", &ep, "--msg", "6869"]).await;
        let m = pull.recv_timeout(Duration::from_secs(10)).await.unwrap();
        assert_eq!(m, Message::single("hi"));
    })
    .await
    .unwrap();
}
