//! Helpers of the security tests.

use std::path::Path;
use std::time::Duration;

use zmesh::SocketOptions;
use zmesh::registry::ConnectionEvent;
use zmesh::security::{AuthPolicy, KeyPair, PublicKey, Security};
use zmesh_testkit::peer::PyPeer;

/// How long an expected event may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// `zmesh keygen --dir DIR NAME`; returns the public key it printed.
pub fn zmesh_keygen(dir: &Path, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args(["keygen", "--dir", dir.to_str().unwrap(), name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("public key  "))
        .unwrap()
        .to_owned()
}

/// pyzmq's `create_certificates(dir, name)`.
pub async fn py_keygen(dir: &Path, name: &str) {
    let mut p = PyPeer::start_raw(&[
        "keygen",
        "--type",
        "rep",
        "--bind",
        dir.to_str().unwrap(),
        "--identity",
        name,
    ])
    .await;
    let line = p.line().await;
    assert!(line.contains("public"), "{line}");
}

pub fn curve_server(keys: KeyPair, policy: AuthPolicy) -> SocketOptions {
    SocketOptions::default().security(Security::CurveServer { keys, policy })
}

pub fn curve_client(keys: KeyPair, server: PublicKey) -> SocketOptions {
    SocketOptions::default()
        .security(Security::CurveClient { keys, server })
        .backoff(Duration::from_millis(100), Duration::from_millis(500))
}

/// The next event whose reason contains `needle`.
pub async fn event_with(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    needle: &str,
) -> ConnectionEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = events.recv().await.unwrap();
            eprintln!("event: {ev:?}");
            if ev.reason.as_deref().is_some_and(|r| r.contains(needle)) {
                return ev;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no event mentioning {needle:?}"))
}
