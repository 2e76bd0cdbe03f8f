//! CURVE and PLAIN against libzmq (pyzmq) in both directions, authentication
//! policies, key files shared with pyzmq, keys swapped at run time, signed
//! messages. The CLI is in `security_cli.rs`, the handshake attacks in
//! `security_attacks.rs`.

mod common;

use std::time::Duration;

use zmesh::registry::PeerState;
use zmesh::security::signing::{NONCE_LEN, Signer, SigningKey, Verifier};
use zmesh::security::{AuthPolicy, KeyPair, PublicKey, Security};
use zmesh::{Message, Registry, Socket, SocketOptions, SocketType};
use zmesh_testkit::net::bounded;

use common::security::*;
use common::temp_dir;
use zmesh_testkit::peer::PyPeer;

const TEST_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn certificates_move_between_zmesh_and_pyzmq() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("certs");
        // zmesh writes, pyzmq reads.
        let public = zmesh_keygen(&dir, "svc");
        let path = dir.join("svc.key_secret");
        let mut p = PyPeer::start_raw(&[
            "loadcert",
            "--type",
            "rep",
            "--bind",
            path.to_str().unwrap(),
        ])
        .await;
        let v: serde_json::Value = serde_json::from_str(&p.line().await).unwrap();
        assert_eq!(v["public"], public.as_str());
        assert_eq!(v["secret"].as_str().unwrap().len(), 40);
        // pyzmq writes, zmesh reads (refusing a secret file others may read).
        py_keygen(&dir, "py").await;
        let secret = dir.join("py.key_secret");
        let pair = match KeyPair::load(&secret) {
            Ok(pair) => pair,
            Err(e) => {
                assert!(e.to_string().contains("chmod 600"), "{e}");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
                KeyPair::load(&secret).unwrap()
            }
        };
        let cert = zmesh::security::Certificate::read(&dir.join("py.key")).unwrap();
        assert_eq!(cert.public, pair.public);
        // A public file where a secret one is needed, and a mangled key, say so.
        let e = KeyPair::load(dir.join("py.key")).unwrap_err();
        assert!(e.to_string().contains("only a public key"), "{e}");
        std::fs::write(
            dir.join("bad.key"),
            "curve\n    public-key = \"tooshort\"\n",
        )
        .unwrap();
        let e = zmesh::security::Certificate::read(&dir.join("bad.key")).unwrap_err();
        assert!(e.to_string().contains("40 Z85 characters"), "{e}");
        assert!(
            PublicKey::from_z85("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]y 7")
                .unwrap_err()
                .to_string()
                .contains("not Z85")
        );
    })
    .await;
}

#[tokio::test]
async fn zmesh_curve_server_admits_only_allowed_pyzmq_clients() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("server");
        let clients = dir.join("clients");
        std::fs::create_dir_all(&clients).unwrap();
        let server = KeyPair::generate();
        zmesh::security::keys::write_key_pair(&dir, "server", &server).unwrap();
        py_keygen(&clients, "alice").await;
        py_keygen(&dir, "mallory").await; // not in the allowed directory
        let server_key = dir.join("server.key");
        let alice = clients.join("alice.key_secret");

        for (t, py_type) in [(SocketType::Rep, "req"), (SocketType::Router, "dealer")] {
            let registry = Registry::new();
            let mut events = registry.subscribe();
            let policy = AuthPolicy::new().allowed_keys_dir(&clients).unwrap();
            let sock =
                Socket::with_registry(t, curve_server(server.clone(), policy), &registry).unwrap();
            let ep = sock.bind("tcp://127.0.0.1:0").await.unwrap();

            // Mallory completes CURVE but is not allowed: refused, with the reason.
            let mut bad = PyPeer::start_raw(&[
                "send",
                "--type",
                py_type,
                "--connect",
                &ep,
                "--timeout",
                "2",
                "--msg",
                "6576696c",
                "--curve-client-cert",
                dir.join("mallory.key_secret").to_str().unwrap(),
                "--curve-server-key",
                server_key.to_str().unwrap(),
            ])
            .await;
            let ev = event_with(&mut events, "authentication refused").await;
            assert!(ev.reason.unwrap().contains("is not in"));
            assert_eq!(
                bad.line_after_ready().await,
                "TIMEOUT",
                "{t}: mallory got an answer"
            );

            // Alice is served, and the server knows who she is.
            let (mut good, _) = PyPeer::start(&[
                "send",
                "--type",
                py_type,
                "--connect",
                &ep,
                "--msg",
                "6869",
                "--curve-client-cert",
                alice.to_str().unwrap(),
                "--curve-server-key",
                server_key.to_str().unwrap(),
            ])
            .await;
            let m = sock.recv_timeout(WAIT).await.unwrap();
            if t == SocketType::Router {
                let auth = m
                    .sender_auth()
                    .expect("ROUTER messages carry the sender's authentication");
                assert_eq!(auth.user_id.as_deref(), Some("alice"));
                assert_eq!(auth.mechanism.as_deref(), Some("CURVE"));
            }
            sock.send(m).await.unwrap();
            assert_eq!(good.message().await.last().unwrap(), b"hi");
            let snap = sock.snapshot().unwrap();
            assert_eq!(snap.auth_refusals, 1);
            let alice_peer = snap
                .peers
                .iter()
                .find(|p| p.state == PeerState::Active)
                .unwrap();
            assert_eq!(
                (alice_peer.mechanism.as_deref(), alice_peer.user.as_deref()),
                (Some("CURVE"), Some("alice"))
            );
        }

        // PUB: a libzmq CURVE subscriber receives what the zmesh CURVE publisher sends.
        let policy = AuthPolicy::new().allowed_keys_dir(&clients).unwrap();
        let publ = Socket::with_registry(
            SocketType::Pub,
            curve_server(server.clone(), policy),
            &Registry::new(),
        )
        .unwrap();
        let ep = publ.bind("tcp://127.0.0.1:0").await.unwrap();
        let (mut sub, _) = PyPeer::start(&[
            "recv",
            "--type",
            "sub",
            "--connect",
            &ep,
            "--subscribe",
            "t",
            "--count",
            "3",
            "--curve-client-cert",
            alice.to_str().unwrap(),
            "--curve-server-key",
            server_key.to_str().unwrap(),
        ])
        .await;
        let publisher = async {
            for i in 0u64.. {
                publ.send(Message::single(format!("t{i}"))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let receiver = async {
            for _ in 0..3 {
                assert!(sub.message().await[0].starts_with(b"t"));
            }
        };
        tokio::select! { _ = publisher => {}, _ = receiver => {} }
    })
    .await;
}

#[tokio::test]
async fn zmesh_curve_clients_talk_to_pyzmq_curve_servers() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("client");
        let allowed = dir.join("allowed");
        std::fs::create_dir_all(&allowed).unwrap();
        py_keygen(&dir, "pyserver").await;
        zmesh_keygen(&allowed, "zclient");
        let server_public = zmesh::security::Certificate::read(&dir.join("pyserver.key"))
            .unwrap()
            .public;
        let me = KeyPair::load(allowed.join("zclient.key_secret")).unwrap();
        let server_cert = dir.join("pyserver.key_secret");

        // REQ -> REP, DEALER -> ROUTER.
        for (t, py_type) in [(SocketType::Req, "rep"), (SocketType::Dealer, "router")] {
            let (_py, ep) = PyPeer::start(&[
                "echo",
                "--type",
                py_type,
                "--bind",
                "tcp://127.0.0.1:0",
                "--curve-server-cert",
                server_cert.to_str().unwrap(),
                "--allow-dir",
                allowed.to_str().unwrap(),
            ])
            .await;
            let sock =
                Socket::with_registry(t, curve_client(me.clone(), server_public), &Registry::new())
                    .unwrap();
            sock.connect(&ep).await.unwrap();
            sock.send("secret").await.unwrap();
            assert_eq!(
                sock.recv_timeout(WAIT).await.unwrap(),
                Message::single("secret"),
                "{t}"
            );
            assert_eq!(sock.peers()[0].mechanism.as_deref(), Some("CURVE"));
        }
        // SUB <- PUB.
        let (_py, ep) = PyPeer::start(&[
            "pub",
            "--type",
            "pub",
            "--bind",
            "tcp://127.0.0.1:0",
            "--subscribe",
            "t",
            "--seconds",
            "20",
            "--curve-server-cert",
            server_cert.to_str().unwrap(),
        ])
        .await;
        let sub = Socket::with_registry(
            SocketType::Sub,
            curve_client(me.clone(), server_public),
            &Registry::new(),
        )
        .unwrap();
        sub.connect(&ep).await.unwrap();
        sub.subscribe("t").await.unwrap();
        assert!(
            sub.recv_timeout(WAIT)
                .await
                .unwrap()
                .frame(0)
                .unwrap()
                .starts_with(b"t")
        );

        // A zmesh client the pyzmq server does not allow never gets through.
        let (_py, ep) = PyPeer::start(&[
            "echo",
            "--type",
            "rep",
            "--bind",
            "tcp://127.0.0.1:0",
            "--curve-server-cert",
            server_cert.to_str().unwrap(),
            "--allow-dir",
            allowed.to_str().unwrap(),
        ])
        .await;
        let stranger = Socket::with_registry(
            SocketType::Req,
            curve_client(KeyPair::generate(), server_public),
            &Registry::new(),
        )
        .unwrap();
        stranger.connect(&ep).await.unwrap();
        stranger.send("let me in").await.unwrap();
        assert!(matches!(
            stranger.recv_timeout(Duration::from_secs(2)).await,
            Err(zmesh::Error::Timeout(_))
        ));
        let p = &stranger.peers()[0];
        assert_ne!(p.state, PeerState::Active);
        assert!(p.last_error.is_some(), "refusal not recorded: {p:?}");
    })
    .await;
}

#[tokio::test]
async fn plain_both_directions() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("plain");
        let pw = dir.join("passwords");
        std::fs::write(&pw, "admin:s3cret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

        // zmesh PLAIN server, pyzmq clients: right and wrong password.
        let registry = Registry::new();
        let mut events = registry.subscribe();
        let policy = AuthPolicy::new().password_file(&pw).unwrap();
        let rep = Socket::with_registry(
            SocketType::Rep,
            SocketOptions::default().security(Security::PlainServer { policy }),
            &registry,
        )
        .unwrap();
        let ep = rep.bind("tcp://127.0.0.1:0").await.unwrap();
        let mut bad = PyPeer::start_raw(&[
            "send",
            "--type",
            "req",
            "--connect",
            &ep,
            "--timeout",
            "2",
            "--msg",
            "00",
            "--plain-client",
            "admin:guess",
        ])
        .await;
        event_with(&mut events, "wrong user name or password").await;
        assert_eq!(bad.line_after_ready().await, "TIMEOUT");
        let (mut good, _) = PyPeer::start(&[
            "send",
            "--type",
            "req",
            "--connect",
            &ep,
            "--msg",
            "6f6b",
            "--plain-client",
            "admin:s3cret",
        ])
        .await;
        let m = rep.recv_timeout(WAIT).await.unwrap();
        rep.send(m).await.unwrap();
        assert_eq!(good.message().await, vec![b"ok".to_vec()]);
        assert!(
            rep.peers()
                .iter()
                .any(|p| p.user.as_deref() == Some("admin"))
        );

        // pyzmq PLAIN server, zmesh client.
        let (_py, ep) = PyPeer::start(&[
            "echo",
            "--type",
            "rep",
            "--bind",
            "tcp://127.0.0.1:0",
            "--plain-server",
            "ops:pw",
        ])
        .await;
        let plain = |pw: &str| {
            SocketOptions::default().security(Security::PlainClient {
                username: "ops".into(),
                password: pw.into(),
            })
        };
        let req = Socket::with_registry(SocketType::Req, plain("pw"), &Registry::new()).unwrap();
        req.connect(&ep).await.unwrap();
        req.send("x").await.unwrap();
        assert_eq!(req.recv_timeout(WAIT).await.unwrap(), Message::single("x"));
    })
    .await;
}

#[tokio::test]
async fn signed_messages_from_python_verify_and_forgeries_and_replays_do_not() {
    bounded(TEST_LIMIT, async {
        let key = "a shared key of 32 bytes........";
        let mut verifier = Verifier::new(30_000);
        verifier.add_key(
            "py",
            SigningKey::Hmac(key.as_bytes().to_vec()).verifying_key(),
        );
        let registry = Registry::new();
        let pull = Socket::with_registry(
            SocketType::Pull,
            SocketOptions::default().verify_with(verifier),
            &registry,
        )
        .unwrap();
        let ep = pull.bind("tcp://127.0.0.1:0").await.unwrap();

        // Python signs per docs/protocol/signing.md: accepted, signature stripped.
        let (_py, _) = PyPeer::start(&[
            "send",
            "--type",
            "push",
            "--connect",
            &ep,
            "--msg",
            "6f72646572,31",
            "--hmac-key",
            key,
            "--key-id",
            "py",
        ])
        .await;
        let m = pull.recv_timeout(WAIT).await.unwrap();
        assert_eq!(m.to_vec(), vec![b"order".as_slice(), b"1"]);

        // A forger (wrong key) and a replay are dropped and counted.
        let raw =
            Socket::with_registry(SocketType::Push, SocketOptions::default(), &Registry::new())
                .unwrap();
        raw.connect(&ep).await.unwrap();
        let forger = Signer::new(
            "py",
            SigningKey::Hmac(b"not the key at all..............".to_vec()),
        )
        .unwrap();
        let body = vec![bytes::Bytes::from("pay 1000")];
        let forged = forger.sign(zmesh::registry::now_ms(), [1; NONCE_LEN], &body);
        raw.send(Message::from_frames(body.iter().cloned().chain([forged])))
            .await
            .unwrap();
        let honest = Signer::new("py", SigningKey::Hmac(key.as_bytes().to_vec())).unwrap();
        let sig = honest.sign(zmesh::registry::now_ms(), [2; NONCE_LEN], &body);
        let signed = Message::from_frames(body.iter().cloned().chain([sig]));
        raw.send(signed.clone()).await.unwrap();
        raw.send(signed).await.unwrap(); // the replay
        raw.send(Message::single("unsigned")).await.unwrap();
        let got = pull.recv_timeout(WAIT).await.unwrap();
        assert_eq!(
            got,
            Message::single("pay 1000"),
            "only the honest one gets through"
        );
        assert!(matches!(
            pull.recv_timeout(Duration::from_millis(500)).await,
            Err(zmesh::Error::Timeout(_))
        ));
        let snap = pull.snapshot().unwrap();
        assert_eq!(snap.signature_failures, 3, "forged, replayed, unsigned");
    })
    .await;
}

/// The queue and stream clients stop at a refused handshake, as the
/// Majordomo client does: with a clear error, not a timeout after every
/// attempt.
#[tokio::test]
async fn queue_and_stream_clients_stop_when_the_broker_refuses_the_handshake() {
    use zmesh_client::queue::{QueueClient, QueueClientConfig, QueueError};
    use zmesh_client::stream::{StreamClient, StreamClientConfig, StreamError};

    bounded(TEST_LIMIT, async {
        let dir = temp_dir("clients-refused");
        let allowed = dir.join("allowed");
        std::fs::create_dir_all(&allowed).unwrap(); // empty: every client refused
        let server = KeyPair::generate();
        let policy = AuthPolicy::new().allowed_keys_dir(&allowed).unwrap();
        let router = Socket::new(SocketType::Router, curve_server(server.clone(), policy)).unwrap();
        let ep = router.bind("tcp://127.0.0.1:0").await.unwrap();
        let client_options = || curve_client(KeyPair::generate(), server.public);

        // 4 attempts of 5 s would take 20 s: the refusal must end the first.
        let quick = Duration::from_secs(4);
        let queue_cfg = QueueClientConfig {
            attempt_timeout: Duration::from_secs(5),
            retries: 3,
            ..QueueClientConfig::default()
        };
        let queues = QueueClient::connect_with(&ep, queue_cfg, client_options())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let declared = queues.declare("jobs", None).await;
        assert!(
            matches!(declared, Err(QueueError::HandshakeRefused { .. })),
            "{declared:?}"
        );
        let published = queues.publish("jobs", "body").await;
        assert!(
            matches!(published, Err(QueueError::HandshakeRefused { .. })),
            "{published:?}"
        );
        assert!(started.elapsed() < quick, "{:?}", started.elapsed());

        let stream_cfg = StreamClientConfig {
            attempt_timeout: Duration::from_secs(5),
            retries: 3,
            ..StreamClientConfig::default()
        };
        let streams = StreamClient::connect_with(&ep, stream_cfg, client_options())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let created = streams.create("orders", None).await;
        assert!(
            matches!(created, Err(StreamError::HandshakeRefused { .. })),
            "{created:?}"
        );
        assert!(started.elapsed() < quick, "{:?}", started.elapsed());
    })
    .await;
}
