//! The `zmesh` binary with CURVE: the socket CLI against pyzmq, `serve` and
//! `call` against a CURVE broker, and refused handshakes that say why.

mod common;

use std::time::Duration;

use zmesh_testkit::net::{bounded, free_endpoint};

use common::security::*;
use common::temp_dir;
use zmesh_testkit::peer::PyPeer;

const TEST_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn cli_speaks_curve_with_pyzmq_and_refuses_bad_keys() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("cli");
        zmesh_keygen(&dir, "server");
        py_keygen(&dir, "client").await;
        let ep = free_endpoint();
        let server = tokio::process::Command::new(env!("CARGO_BIN_EXE_zmesh"))
            .args([
                "rep",
                "--bind",
                &ep,
                "--echo",
                "--count",
                "1",
                "--timeout",
                "20",
                "--curve-server",
            ])
            .arg("--curve-secret-key-file")
            .arg(dir.join("server.key_secret"))
            .output();
        let server = tokio::spawn(server);
        // No wait for the bind: the libzmq client reconnects until the server is up.
        let (mut py, _) = PyPeer::start(&[
            "send",
            "--type",
            "req",
            "--connect",
            &ep,
            "--msg",
            "6869",
            "--curve-client-cert",
            dir.join("client.key_secret").to_str().unwrap(),
            "--curve-server-key",
            dir.join("server.key").to_str().unwrap(),
        ])
        .await;
        assert_eq!(py.message().await, vec![b"hi".to_vec()]);
        let out = server.await.unwrap().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

        // A secret key file others can read is refused with the fix in the message.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key_secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        refused_with(
            &[
                "rep",
                "--bind",
                "tcp://127.0.0.1:0",
                "--curve-server",
                "--curve-secret-key-file",
            ],
            Some(&dir.join("server.key_secret")),
            "chmod 600",
        );
        // A public file where the secret one belongs, and a bad server key.
        refused_with(
            &[
                "rep",
                "--bind",
                "tcp://127.0.0.1:0",
                "--curve-server",
                "--curve-secret-key-file",
            ],
            Some(&dir.join("server.key")),
            "only a public key",
        );
        refused_with(
            &[
                "req",
                "--connect",
                "tcp://127.0.0.1:1",
                "--curve-server-key",
                "abc",
                "x",
            ],
            None,
            "40 Z85 characters",
        );
    })
    .await;
}

/// Run `zmesh ARGS [PATH]`; it must exit 2 (a usage error) saying `needle`.
fn refused_with(args: &[&str], path: Option<&std::path::Path>, needle: &str) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zmesh"));
    cmd.args(args);
    if let Some(p) = path {
        cmd.arg(p);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

/// `zmesh serve`, `call`, `services` and `route` take the security flags: a
/// worker and a client reach a CURVE broker, and a client without the
/// server's key gets nothing through.
#[tokio::test]
async fn serve_and_call_speak_curve_to_a_curve_broker() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("mdp-curve");
        zmesh_keygen(&dir, "server");
        let secret = dir.join("server.key_secret");
        let public = dir.join("server.key");
        let (secret, public) = (secret.to_str().unwrap(), public.to_str().unwrap());
        let ep = free_endpoint();
        let (_broker, _log) = common::broker_listening(&[
            "--no-queues",
            "--bind",
            &ep,
            "--curve-server",
            "--curve-secret-key-file",
            secret,
        ])
        .await;
        let _worker = common::zmesh(&[
            "serve",
            "echo",
            "--echo",
            "--broker",
            &ep,
            "--curve-server-key",
            public,
        ]);
        // The worker may still be registering: the client retries within its deadline.
        let out = common::zmesh_stdout(&[
            "call",
            "echo",
            "hi",
            "--broker",
            &ep,
            "--curve-server-key",
            public,
            "--timeout",
            "5",
            "--retries",
            "5",
        ])
        .await;
        assert_eq!(out, "hi\n");
        let out = common::zmesh_stdout(&[
            "services",
            "--broker",
            &ep,
            "--curve-server-key",
            public,
            "--json",
        ])
        .await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let echo = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "echo");
        assert_eq!(echo.map(|s| s["workers"].clone()), Some(1.into()), "{v}");
        let out = common::zmesh_stdout(&[
            "route",
            "alias",
            "echo:1",
            "--broker",
            &ep,
            "--curve-server-key",
            public,
        ])
        .await;
        assert_eq!(out, "ok\n");
        // Without the key: nothing gets through.
        let out = common::zmesh_output(&[
            "call",
            "echo",
            "hi",
            "--broker",
            &ep,
            "--timeout",
            "1",
            "--retries",
            "0",
        ])
        .await;
        assert_ne!(out.status.code(), Some(0));
        assert!(out.stdout.is_empty());
    })
    .await;
}

/// A client or worker the broker's policy refuses hears why at once and
/// exits 3, instead of retrying into a timeout or dialing forever.
#[tokio::test]
async fn a_refused_call_or_serve_says_why_and_exits_3_without_retrying() {
    bounded(TEST_LIMIT, async {
        let dir = temp_dir("mdp-refused");
        zmesh_keygen(&dir, "server");
        let allowed = dir.join("allowed");
        std::fs::create_dir_all(&allowed).unwrap(); // no client key in it: every client refused
        let ep = free_endpoint();
        let (_broker, _log) = common::broker_listening(&[
            "--no-queues",
            "--bind",
            &ep,
            "--curve-server",
            "--curve-secret-key-file",
            dir.join("server.key_secret").to_str().unwrap(),
            "--curve-allow-dir",
            allowed.to_str().unwrap(),
        ])
        .await;
        let started = std::time::Instant::now();
        let server_key = dir.join("server.key");
        let out = common::zmesh_output(&[
            "call",
            "echo",
            "hi",
            "--broker",
            &ep,
            "--timeout",
            "5",
            "--retries",
            "3",
            "--curve-server-key",
            server_key.to_str().unwrap(),
        ])
        .await;
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("refused"), "{stderr}");
        // 4 attempts of 5 s would be 20 s: the refusal ends it at the first.
        assert!(took < Duration::from_secs(4), "{took:?}: {stderr}");

        // A refused worker says why and exits 3 instead of dialing forever.
        let out = common::zmesh_output(&[
            "serve",
            "echo",
            "--echo",
            "--broker",
            &ep,
            "--curve-server-key",
            server_key.to_str().unwrap(),
        ])
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("refused"), "{stderr}");
    })
    .await;
}
