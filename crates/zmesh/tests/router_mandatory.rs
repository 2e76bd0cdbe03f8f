//! A ROUTER that reports what it cannot deliver, against libzmq (pyzmq) peers:
//! a full peer hands the message back, a gone peer is unroutable, each
//! received message names its connection, closes are reported, and one
//! connection can be closed on purpose.

use std::time::Duration;

use bytes::Bytes;
use zmesh::{ConnectionClosed, Error, Message, Socket, SocketOptions, SocketType, TrySendError};
use zmesh_testkit::net::bounded;
use zmesh_testkit::peer::{PyPeer, encode_hex};

/// Bound on every test: nothing here may hang CI.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// How long any one event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn mandatory_router() -> (Socket, String) {
    let options = SocketOptions::default().router_mandatory(true).send_hwm(4);
    let router = Socket::new(SocketType::Router, options).unwrap();
    let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
    (router, ep)
}

async fn next_close(closes: &mut zmesh::ClosedConnections) -> ConnectionClosed {
    tokio::time::timeout(EVENT_WAIT, closes.next())
        .await
        .expect("a close within the deadline")
        .expect("the socket is open")
}

#[tokio::test]
async fn full_peer_hands_the_message_back_and_a_gone_peer_is_unroutable() {
    bounded(TEST_LIMIT, async {
        let (router, ep) = mandatory_router().await;
        let mut closes = router.closed_connections();
        let hello = encode_hex(b"hello");
        let (py, _) = PyPeer::start(&[
            "stall",
            "--type",
            "dealer",
            "--identity",
            "stall",
            "--rcvhwm",
            "1",
            "--msg",
            &hello,
            "--seconds",
            "60",
            "--connect",
            &ep,
        ])
        .await;
        let got = router.recv_timeout(EVENT_WAIT).await.unwrap();
        assert_eq!(got.frame(0).unwrap(), "stall");
        let conn = got
            .connection_id()
            .expect("a ROUTER message names its connection");
        assert!(router.connection_ids().await.unwrap().contains(&conn));

        // The peer never reads: its pipe and the kernel's buffers fill, and then
        // the message comes back instead of vanishing. 256 KiB x 4,000 bounds the try.
        let body = Bytes::from(vec![7u8; 256 * 1024]);
        let mut sent = 0;
        let handed_back = loop {
            assert!(
                sent < 4000,
                "{sent} sends to a peer that never reads were all taken"
            );
            match router.try_send(Message::from_frames([
                Bytes::from_static(b"stall"),
                body.clone(),
            ])) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(m)) => break m,
                Err(e) => panic!("after {sent} sends: {e}"),
            }
        };
        assert_eq!(
            handed_back.frame(0).unwrap(),
            "stall",
            "the envelope comes back too"
        );
        assert_eq!(handed_back.frame(1).unwrap(), body);

        drop(py); // SIGKILL: the connection closes under a full pipe
        assert_eq!(
            next_close(&mut closes).await,
            ConnectionClosed::Closed {
                connection_id: conn
            }
        );
        assert!(!router.connection_ids().await.unwrap().contains(&conn));
        match router.try_send(Message::from_frames(["stall", "late"])) {
            Err(TrySendError::Failed(Error::Unroutable)) => {}
            other => panic!("a send to a gone peer must be unroutable, got {other:?}"),
        }
        // An identity nobody ever had is unroutable too, not dropped.
        match router.try_send(Message::from_frames(["nobody", "x"])) {
            Err(TrySendError::Failed(Error::Unroutable)) => {}
            other => panic!("a send to an unknown peer must be unroutable, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn disconnect_peer_closes_that_connection_only() {
    bounded(TEST_LIMIT, async {
        let (router, ep) = mandatory_router().await;
        let mut closes = router.closed_connections();
        let hello = encode_hex(b"hello");
        let (_a, _) = PyPeer::start(&[
            "stall",
            "--type",
            "dealer",
            "--identity",
            "a",
            "--msg",
            &hello,
            "--seconds",
            "60",
            "--connect",
            &ep,
        ])
        .await;
        let (mut b, _) = PyPeer::start(&[
            "send",
            "--type",
            "dealer",
            "--identity",
            "b",
            "--msg",
            &hello,
            "--count",
            "1",
            "--connect",
            &ep,
        ])
        .await;
        let mut conns = std::collections::HashMap::new();
        for _ in 0..2 {
            let m = router.recv_timeout(EVENT_WAIT).await.unwrap();
            conns.insert(m.frame(0).unwrap(), m.connection_id().unwrap());
        }
        let (conn_a, conn_b) = (conns[&b"a"[..]], conns[&b"b"[..]]);
        assert_ne!(conn_a, conn_b);

        router.disconnect_peer(conn_a).await.unwrap();
        assert_eq!(
            next_close(&mut closes).await,
            ConnectionClosed::Closed {
                connection_id: conn_a
            }
        );
        let live = router.connection_ids().await.unwrap();
        assert!(
            !live.contains(&conn_a) && live.contains(&conn_b),
            "{live:?}"
        );
        match router.disconnect_peer(conn_a).await {
            Err(Error::Unroutable) => {}
            other => panic!("closing a closed connection again: {other:?}"),
        }
        router
            .try_send(Message::from_frames(["b", "still here"]))
            .unwrap();
        assert_eq!(b.message().await, vec![b"still here".to_vec()]);
    })
    .await;
}

#[test]
fn a_message_made_locally_names_no_connection() {
    assert_eq!(Message::from_frames(["a", "b"]).connection_id(), None);
}

fn signed(options: SocketOptions) -> SocketOptions {
    use zmesh::security::signing::{Signer, SigningKey, Verifier};
    let signer = Signer::new("k", SigningKey::Hmac(b"0123456789abcdef".to_vec())).unwrap();
    let mut verifier = Verifier::new(30_000);
    verifier.add_key("k", signer.key().verifying_key());
    options.sign_with(signer).verify_with(verifier)
}

/// With signing on, a message handed back by a full peer is the caller's,
/// unsigned (sent again, it is signed once), and a verified ROUTER message
/// still names its connection.
#[tokio::test]
async fn signing_keeps_the_handed_back_message_and_the_sender() {
    bounded(TEST_LIMIT, async {
        let router = Socket::new(
            SocketType::Router,
            signed(
                SocketOptions::default()
                    .router_mandatory(true)
                    .send_hwm(2)
                    .recv_hwm(2),
            ),
        )
        .unwrap();
        let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
        let dealer = Socket::new(
            SocketType::Dealer,
            signed(SocketOptions::default().identity("d").recv_hwm(1)),
        )
        .unwrap();
        dealer.connect(&ep).await.unwrap();
        dealer.send("hello").await.unwrap();
        let got = router.recv_timeout(EVENT_WAIT).await.unwrap();
        assert_eq!(got.len(), 2, "the signature frame is stripped: {got:?}");
        assert_eq!(got.frame(0).unwrap(), "d");
        let conn = got
            .connection_id()
            .expect("verified, it still names its connection");
        assert!(router.connection_ids().await.unwrap().contains(&conn));
        // The dealer reads nothing: fill its pipe until a message comes back.
        let body = Bytes::from(vec![1u8; 256 * 1024]);
        for sent in 0.. {
            assert!(sent < 4000, "never full");
            match router.try_send(Message::from_frames([
                Bytes::from_static(b"d"),
                body.clone(),
            ])) {
                Ok(()) => {}
                Err(TrySendError::Full(m)) => {
                    assert_eq!(m.len(), 2, "handed back unsigned, as given");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
}
