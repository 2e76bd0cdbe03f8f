//! Attacks that must fail against a zmesh CURVE server: each is refused with
//! an event while good clients keep being served.

mod common;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zmesh::registry::PeerState;
use zmesh::security::{AuthPolicy, KeyPair};
use zmesh::{Message, Registry, Socket, SocketType};
use zmesh_testkit::fault_proxy::FaultProxy;
use zmesh_testkit::net::bounded;
use zmesh_testkit::peer::PyPeer;

use common::security::*;
use common::temp_dir;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A zmesh CURVE REP server admitting any key, plus a good zmesh client factory.
async fn curve_rep(registry: &Registry) -> (Socket, String, KeyPair) {
    let server = KeyPair::generate();
    let rep = Socket::with_registry(
        SocketType::Rep,
        curve_server(server.clone(), AuthPolicy::new()),
        registry,
    )
    .unwrap();
    let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap();
    (rep, ep, server)
}

async fn good_client_served(rep: &Socket, ep: &str, server: &KeyPair) {
    let req = Socket::with_registry(
        SocketType::Req,
        curve_client(KeyPair::generate(), server.public),
        &Registry::new(),
    )
    .unwrap();
    req.connect(ep).await.unwrap();
    req.send("still serving?").await.unwrap();
    let m = rep.recv_timeout(WAIT).await.unwrap();
    rep.send(m).await.unwrap();
    assert_eq!(
        req.recv_timeout(WAIT).await.unwrap(),
        Message::single("still serving?")
    );
}

#[tokio::test]
async fn attack_null_client_against_curve_server() {
    bounded(TEST_LIMIT, async {
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let (rep, ep, server) = curve_rep(&registry).await;
        let mut null = PyPeer::start_raw(&[
            "send",
            "--type",
            "req",
            "--connect",
            &ep,
            "--timeout",
            "2",
            "--msg",
            "00",
        ])
        .await;
        // libzmq hangs up on a mechanism mismatch; the engine reports a failure,
        // or nothing (then the registry's handshake check finds it).
        let ev = event_with(&mut events, "handshake").await;
        assert_eq!(ev.to, PeerState::Closed);
        assert_eq!(null.line_after_ready().await, "TIMEOUT");
        assert!(rep.try_recv().unwrap().is_none(), "NULL message delivered");
        good_client_served(&rep, &ep, &server).await;
    })
    .await;
}

#[tokio::test]
async fn attack_wrong_server_key() {
    bounded(TEST_LIMIT, async {
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let (rep, ep, server) = curve_rep(&registry).await;
        let impostor_view = KeyPair::generate().public; // the client expects another server
        let req = Socket::with_registry(
            SocketType::Req,
            curve_client(KeyPair::generate(), impostor_view),
            &Registry::new(),
        )
        .unwrap();
        req.connect(&ep).await.unwrap();
        req.send("hello").await.unwrap();
        event_with(&mut events, "handshake failed").await;
        assert!(rep.try_recv().unwrap().is_none());
        assert!(matches!(
            req.recv_timeout(Duration::from_secs(1)).await,
            Err(zmesh::Error::Timeout(_))
        ));
        good_client_served(&rep, &ep, &server).await;
    })
    .await;
}

#[tokio::test]
async fn attack_replayed_handshake() {
    bounded(TEST_LIMIT, async {
        let registry = Registry::new();
        let (rep, ep, server) = curve_rep(&registry).await;
        let proxy = FaultProxy::start(ep.trim_start_matches("tcp://").parse().unwrap())
            .await
            .unwrap();
        // A real client handshakes (and sends a request) through the recording proxy.
        let req = Socket::with_registry(
            SocketType::Req,
            curve_client(KeyPair::generate(), server.public),
            &Registry::new(),
        )
        .unwrap();
        req.connect(&proxy.endpoint()).await.unwrap();
        req.send("original").await.unwrap();
        let m = rep.recv_timeout(WAIT).await.unwrap();
        rep.send(m).await.unwrap();
        req.recv_timeout(WAIT).await.unwrap();
        let recorded = proxy.recorded_client_bytes();
        assert!(recorded.len() > 64 + 200, "handshake not captured");
        // An attacker replays those bytes verbatim on a new connection.
        let mut events = registry.subscribe();
        let mut s = TcpStream::connect(ep.trim_start_matches("tcp://"))
            .await
            .unwrap();
        s.write_all(&recorded).await.unwrap();
        event_with(&mut events, "handshake failed").await;
        assert!(
            rep.try_recv().unwrap().is_none(),
            "a replayed request was delivered"
        );
        good_client_served(&rep, &ep, &server).await;
    })
    .await;
}

#[tokio::test]
async fn attack_tampered_ciphertext_is_never_delivered() {
    bounded(TEST_LIMIT, async {
        let registry = Registry::new();
        let server = KeyPair::generate();
        let pull = Socket::with_registry(
            SocketType::Pull,
            curve_server(server.clone(), AuthPolicy::new()),
            &registry,
        )
        .unwrap();
        let ep = pull.bind("tcp://127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy::start(ep.trim_start_matches("tcp://").parse().unwrap())
            .await
            .unwrap();
        let push = Socket::with_registry(
            SocketType::Push,
            curve_client(KeyPair::generate(), server.public),
            &Registry::new(),
        )
        .unwrap();
        push.connect(&proxy.endpoint()).await.unwrap();
        push.send(vec![b'a'; 1000]).await.unwrap();
        assert_eq!(pull.recv_timeout(WAIT).await.unwrap().byte_len(), 1000);
        // Flip a byte inside the next encrypted message.
        proxy.corrupt_next(1);
        push.send(vec![b'b'; 1000]).await.unwrap();
        // Whatever arrives later must be intact; the tampered one never does.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut i = 0u8;
        while tokio::time::Instant::now() < deadline {
            i = i.wrapping_add(1);
            let _ = push.try_send(vec![b'c'; 1000]);
            if let Ok(m) = pull.recv_timeout(Duration::from_millis(200)).await {
                let body = m.frame(0).unwrap();
                assert!(
                    body.iter().all(|&b| b == body[0]),
                    "tampered bytes delivered"
                );
                assert_ne!(
                    &body[..],
                    &vec![b'b'; 1000][..],
                    "the tampered message was delivered"
                );
                if body[0] == b'c' {
                    break;
                }
            }
        }
        let snap = pull.snapshot().unwrap();
        assert!(
            snap.peers
                .iter()
                .any(|p| p.state == PeerState::Closed && p.last_error.is_some()),
            "the damaged link was not dropped: {:?}",
            snap.peers
        );
    })
    .await;
}

#[tokio::test]
async fn key_file_swapped_while_running() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("swap");
        let clients = dir.join("clients");
        std::fs::create_dir_all(&clients).unwrap();
        let alice = KeyPair::generate();
        let bob = KeyPair::generate();
        zmesh::security::keys::write_key_pair(&clients, "alice", &alice).unwrap();
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let server = KeyPair::generate();
        let policy = AuthPolicy::new().allowed_keys_dir(&clients).unwrap();
        let rep = Socket::with_registry(
            SocketType::Rep,
            curve_server(server.clone(), policy),
            &registry,
        )
        .unwrap();
        let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap();
        let ask = |keys: KeyPair| {
            let ep = ep.clone();
            let rep = rep.clone();
            async move {
                let req = Socket::with_registry(
                    SocketType::Req,
                    curve_client(keys, server.public),
                    &Registry::new(),
                )
                .unwrap();
                req.connect(&ep).await.unwrap();
                req.send("q").await.unwrap();
                match rep.recv_timeout(Duration::from_secs(2)).await {
                    Ok(m) => {
                        rep.send(m).await.unwrap();
                        req.recv_timeout(WAIT).await.is_ok()
                    }
                    Err(_) => false,
                }
            }
        };
        assert!(ask(alice.clone()).await, "alice allowed at first");
        assert!(!ask(bob.clone()).await, "bob refused at first");
        event_with(&mut events, "is not in").await;
        // Swap: alice's certificate replaced by bob's.
        std::fs::remove_file(clients.join("alice.key")).unwrap();
        zmesh::security::keys::write_key_pair(&clients, "bob", &bob).unwrap();
        assert!(ask(bob).await, "bob allowed after the swap");
        assert!(!ask(alice).await, "alice refused after the swap");
    })
    .await;
}
