//! Policy decisions, from credentials to allow/deny with a reason.

use super::*;
use crate::security::keys::{KeyPair, write_key_pair};

fn curve(addr: &str, key: PublicKey) -> PeerCredentials<'_> {
    PeerCredentials {
        mechanism: Mechanism::Curve,
        address: Some(addr),
        public_key: Some(key),
        username: None,
        password: None,
    }
}

#[test]
fn deny_wins_over_allow_and_allow_is_exclusive() {
    let p = AuthPolicy::new()
        .allow_cidr("10.0.0.0/8")
        .unwrap()
        .deny_cidr("10.9.0.0/16")
        .unwrap();
    let k = KeyPair::generate().public;
    assert!(matches!(
        p.decide(&curve("10.1.2.3:5000", k)),
        Decision::Allow { .. }
    ));
    let Decision::Deny { reason } = p.decide(&curve("10.9.1.1:5000", k)) else {
        panic!()
    };
    assert!(reason.contains("denied network 10.9.0.0/16"), "{reason}");
    let Decision::Deny { reason } = p.decide(&curve("192.168.1.1:5000", k)) else {
        panic!()
    };
    assert!(reason.contains("not in an allowed network"), "{reason}");
    assert!(AuthPolicy::new().allow_cidr("10.0.0.0/33").is_err());
    assert!(AuthPolicy::new().allow_cidr("::1").is_ok());
}

#[test]
fn key_directory_admits_known_keys_and_reloads_on_change() {
    let dir = std::env::temp_dir().join(format!("zmesh-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let alice = KeyPair::generate();
    let bob = KeyPair::generate();
    write_key_pair(&dir, "alice", &alice).unwrap();
    let refused = Arc::new(Mutex::new(Vec::new()));
    let sink = refused.clone();
    let p = AuthPolicy::new()
        .allowed_keys_dir(&dir)
        .unwrap()
        .on_refusal(move |r| sink.lock().unwrap().push(r.reason));
    assert_eq!(
        p.decide(&curve("127.0.0.1:1", alice.public)),
        Decision::Allow {
            user_id: "alice".into()
        }
    );
    assert!(matches!(
        p.decide(&curve("127.0.0.1:1", bob.public)),
        Decision::Deny { .. }
    ));
    // Add bob, remove alice: the next handshake sees the change.
    write_key_pair(&dir, "bob", &bob).unwrap();
    std::fs::remove_file(dir.join("alice.key")).unwrap();
    assert_eq!(
        p.decide(&curve("127.0.0.1:1", bob.public)),
        Decision::Allow {
            user_id: "bob".into()
        }
    );
    assert!(matches!(
        p.decide(&curve("127.0.0.1:1", alice.public)),
        Decision::Deny { .. }
    ));
    let reasons = refused.lock().unwrap().clone();
    assert_eq!(reasons.len(), 2);
    assert!(reasons[0].contains("is not in"), "{reasons:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plain_needs_the_password_file_to_match() {
    let path = std::env::temp_dir().join(format!("zmesh-pw-{}", std::process::id()));
    std::fs::write(&path, "# users\nadmin:s3cret\nops:x:y\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AuthPolicy::new().password_file(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let p = AuthPolicy::new().password_file(&path).unwrap();
    let plain = |u, pw| PeerCredentials {
        mechanism: Mechanism::Plain,
        address: None,
        public_key: None,
        username: Some(u),
        password: Some(pw),
    };
    assert_eq!(
        p.decide(&plain("admin", "s3cret")),
        Decision::Allow {
            user_id: "admin".into()
        }
    );
    assert_eq!(
        p.decide(&plain("ops", "x:y")),
        Decision::Allow {
            user_id: "ops".into()
        }
    );
    assert!(matches!(
        p.decide(&plain("admin", "wrong")),
        Decision::Deny { .. }
    ));
    assert!(matches!(
        p.decide(&plain("nobody", "")),
        Decision::Deny { .. }
    ));
    assert!(matches!(
        AuthPolicy::new().decide(&plain("admin", "s3cret")),
        Decision::Deny { .. }
    ));
    std::fs::remove_file(&path).unwrap();
}
