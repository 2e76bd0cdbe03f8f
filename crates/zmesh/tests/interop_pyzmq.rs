//! zmesh against libzmq (pyzmq) on the wire: every socket pair, both roles,
//! both sides binding; multipart with empty frames, 10 MiB messages, 100 peers.

use std::time::Duration;

use bytes::Bytes;
use zmesh::{Message, Socket, SocketOptions, SocketType};
use zmesh_testkit::net::bounded;
use zmesh_testkit::peer::{PyPeer, encode_hex};

/// Bound on every test: nothing here may hang CI.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Who binds the endpoint.
#[derive(Clone, Copy, Debug)]
enum Binder {
    Zmesh,
    Python,
}

const BOTH: [Binder; 2] = [Binder::Zmesh, Binder::Python];

/// A multipart message with empty frames and binary bytes.
fn tricky() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        b"alpha".to_vec(),
        b"".to_vec(),
        vec![0x00, 0xff, 0x7f],
    ]
}

fn msg_arg(frames: &[Vec<u8>]) -> String {
    frames
        .iter()
        .map(|f| encode_hex(f))
        .collect::<Vec<_>>()
        .join(",")
}

fn to_vecs(m: &Message) -> Vec<Vec<u8>> {
    m.to_vec().into_iter().map(<[u8]>::to_vec).collect()
}

/// Start the python side and the zmesh socket, wired according to `binder`.
async fn pair_up(binder: Binder, t: SocketType, py_args: &[&str]) -> (Socket, PyPeer) {
    let sock = Socket::new(t, SocketOptions::default()).unwrap();
    match binder {
        Binder::Zmesh => {
            let ep = sock.bind("tcp://127.0.0.1:0").await.unwrap();
            let mut args = py_args.to_vec();
            args.extend(["--connect", &ep]);
            let (peer, _) = PyPeer::start(&args).await;
            (sock, peer)
        }
        Binder::Python => {
            let mut args = py_args.to_vec();
            args.extend(["--bind", "tcp://127.0.0.1:0"]);
            let (peer, ep) = PyPeer::start(&args).await;
            sock.connect(&ep).await.unwrap();
            (sock, peer)
        }
    }
}

#[tokio::test]
async fn zmesh_req_to_libzmq_rep() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            let (req, mut py) = pair_up(
                b,
                SocketType::Req,
                &["echo", "--type", "rep", "--count", "2"],
            )
            .await;
            for frames in [tricky(), vec![b"hello".to_vec()]] {
                req.send(Message::from_frames(frames.clone()))
                    .await
                    .unwrap();
                let reply = req.recv_timeout(Duration::from_secs(10)).await.unwrap();
                assert_eq!(to_vecs(&reply), frames, "{b:?}");
                assert_eq!(py.message().await, frames);
            }
            assert_eq!(py.wait().await, Some(0));
        }
    })
    .await;
}

#[tokio::test]
async fn libzmq_req_to_zmesh_rep() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            let m = msg_arg(&tricky());
            let (rep, mut py) = pair_up(
                b,
                SocketType::Rep,
                &["send", "--type", "req", "--msg", &m, "--msg", "6869"],
            )
            .await;
            for _ in 0..2 {
                let req = rep.recv_timeout(Duration::from_secs(10)).await.unwrap();
                rep.send(req).await.unwrap();
            }
            assert_eq!(py.message().await, tricky(), "{b:?}");
            assert_eq!(py.message().await, vec![b"hi".to_vec()]);
            assert_eq!(py.wait().await, Some(0));
        }
    })
    .await;
}

#[tokio::test]
async fn zmesh_dealer_to_libzmq_router() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            let (dealer, mut py) = pair_up(
                b,
                SocketType::Dealer,
                &["echo", "--type", "router", "--count", "1"],
            )
            .await;
            dealer.send(Message::from_frames(tricky())).await.unwrap();
            let reply = dealer.recv_timeout(Duration::from_secs(10)).await.unwrap();
            assert_eq!(to_vecs(&reply), tricky(), "{b:?}");
            // The ROUTER saw our routing identity first, then the frames.
            let seen = py.message().await;
            assert_eq!(&seen[1..], &tricky()[..]);
            assert!(!seen[0].is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn libzmq_dealer_to_zmesh_router() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            let m = msg_arg(&tricky());
            let (router, mut py) = pair_up(
                b,
                SocketType::Router,
                &[
                    "send",
                    "--type",
                    "dealer",
                    "--identity",
                    "py-dealer",
                    "--msg",
                    &m,
                ],
            )
            .await;
            let got = router.recv_timeout(Duration::from_secs(10)).await.unwrap();
            let frames = to_vecs(&got);
            assert_eq!(frames[0], b"py-dealer", "{b:?}");
            assert_eq!(&frames[1..], &tricky()[..]);
            router.send(got).await.unwrap();
            assert_eq!(py.message().await, tricky());
        }
    })
    .await;
}

#[tokio::test]
async fn push_pull_both_ways() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            // zmesh PUSH -> libzmq PULL
            let (push, mut py) = pair_up(
                b,
                SocketType::Push,
                &["recv", "--type", "pull", "--count", "50"],
            )
            .await;
            for i in 0..50u32 {
                push.send(Message::from_frames([
                    Bytes::from(i.to_be_bytes().to_vec()),
                    Bytes::new(),
                ]))
                .await
                .unwrap();
            }
            for i in 0..50u32 {
                assert_eq!(
                    py.message().await,
                    vec![i.to_be_bytes().to_vec(), vec![]],
                    "{b:?}"
                );
            }
            push.close().await.unwrap();
            // libzmq PUSH -> zmesh PULL
            let m = msg_arg(&tricky());
            let (pull, _py) = pair_up(
                b,
                SocketType::Pull,
                &["send", "--type", "push", "--msg", &m, "--msg", &m],
            )
            .await;
            for _ in 0..2 {
                let got = pull.recv_timeout(Duration::from_secs(10)).await.unwrap();
                assert_eq!(to_vecs(&got), tricky(), "{b:?}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn libzmq_pub_to_zmesh_sub_filters_by_prefix() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            let (sub, _py) = pair_up(
                b,
                SocketType::Sub,
                &[
                    "pub",
                    "--type",
                    "pub",
                    "--subscribe",
                    "wx.",
                    "--seconds",
                    "20",
                ],
            )
            .await;
            sub.subscribe("wx.").await.unwrap();
            let mut last: Option<u64> = None;
            for _ in 0..20 {
                let m = sub.recv_timeout(Duration::from_secs(10)).await.unwrap();
                let body = m.frame(0).unwrap();
                assert!(body.starts_with(b"wx."), "{b:?}");
                let seq: u64 = std::str::from_utf8(&body[3..]).unwrap().parse().unwrap();
                // In order, no gaps once joined.
                if let Some(prev) = last {
                    assert_eq!(seq, prev + 1);
                }
                last = Some(seq);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn zmesh_pub_to_libzmq_sub() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            let (publ, mut py) = pair_up(
                b,
                SocketType::Pub,
                &["recv", "--type", "sub", "--subscribe", "t", "--count", "5"],
            )
            .await;
            // Publish until the subscriber has joined and seen five (slow-joiner safe).
            let sender = async {
                for i in 0u64.. {
                    publ.send(Message::from_frames([format!("t{i}"), "x".into()]))
                        .await
                        .unwrap();
                    publ.send(Message::single("other")).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let receiver = async {
                for _ in 0..5 {
                    let m = py.message().await;
                    assert!(m[0].starts_with(b"t"), "{b:?}: got {m:?}");
                    assert_eq!(m[1], b"x");
                }
            };
            tokio::select! { _ = sender => {}, _ = receiver => {} }
        }
    })
    .await;
}

#[tokio::test]
async fn pair_both_ways() {
    bounded(TEST_LIMIT, async {
        for b in BOTH {
            let (pair, mut py) = pair_up(
                b,
                SocketType::Pair,
                &["echo", "--type", "pair", "--count", "1"],
            )
            .await;
            pair.send(Message::from_frames(tricky())).await.unwrap();
            assert_eq!(
                to_vecs(&pair.recv_timeout(Duration::from_secs(10)).await.unwrap()),
                tricky(),
                "{b:?}"
            );
            assert_eq!(py.message().await, tricky());
        }
    })
    .await;
}

#[tokio::test]
async fn ten_mib_message_round_trips_through_libzmq() {
    bounded(TEST_LIMIT, async {
        let n = 10 * 1024 * 1024;
        let big: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        for b in BOTH {
            let (req, mut py) = pair_up(
                b,
                SocketType::Req,
                &["echo", "--type", "rep", "--count", "1"],
            )
            .await;
            req.send(Message::single(big.clone())).await.unwrap();
            let reply = req.recv_timeout(Duration::from_secs(20)).await.unwrap();
            assert_eq!(reply.byte_len(), n);
            assert!(reply.frame(0).unwrap() == big, "{b:?}: payload corrupted");
            assert_eq!(py.message().await[0].len(), n);
        }
        // And a libzmq REQ sending 10 MiB to a zmesh REP.
        let (rep, mut py) = pair_up(
            Binder::Zmesh,
            SocketType::Rep,
            &["send", "--type", "req", "--big", &n.to_string()],
        )
        .await;
        let got = rep.recv_timeout(Duration::from_secs(20)).await.unwrap();
        assert!(got.frame(0).unwrap() == big);
        rep.send(got).await.unwrap();
        assert_eq!(py.message().await[0].len(), n);
    })
    .await;
}

#[tokio::test]
async fn hundred_libzmq_peers_on_one_zmesh_router() {
    bounded(TEST_LIMIT, async {
        let router = Socket::new(SocketType::Router, SocketOptions::default()).unwrap();
        let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
        let (mut py, _) = PyPeer::start(&[
            "many",
            "--type",
            "dealer",
            "--connect",
            &ep,
            "--peers",
            "100",
        ])
        .await;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let m = router.recv_timeout(Duration::from_secs(10)).await.unwrap();
            seen.insert(m.frame(0).unwrap());
            router.send(m).await.unwrap();
        }
        assert_eq!(seen.len(), 100, "every peer has its own identity");
        assert_eq!(py.line().await, r#"{"ok": 100}"#);
        let active = router
            .peers()
            .iter()
            .filter(|p| p.state == zmesh::registry::PeerState::Active)
            .count();
        assert_eq!(active, 100, "the registry shows all 100 links");
    })
    .await;
}
