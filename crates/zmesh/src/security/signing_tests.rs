//! Known answers and attacks for the signature format.

use bytes::Bytes;

use super::*;

fn hmac_pair() -> (Signer, Verifier) {
    let signer = Signer::new("svc", SigningKey::Hmac(b"k".to_vec())).unwrap();
    let mut v = Verifier::new(10_000);
    v.add_key("svc", signer.key().verifying_key());
    (signer, v)
}

fn signed(signer: &Signer, ts: u64, nonce: u8, frames: &[&str]) -> Vec<Bytes> {
    let mut f: Vec<Bytes> = frames.iter().map(|s| Bytes::from(s.to_string())).collect();
    let sig = signer.sign(ts, [nonce; NONCE_LEN], &f);
    f.push(sig);
    f
}

#[test]
fn hmac_known_answer() {
    // Fixed key, time, nonce and body: the frame must never change (other
    // languages implement this format from docs/protocol/signing.md).
    let signer = Signer::new("svc", SigningKey::Hmac(b"secret".to_vec())).unwrap();
    let sig = signer.sign(
        1_700_000_000_000,
        [0x11; NONCE_LEN],
        &[Bytes::from_static(b"hello"), Bytes::new()],
    );
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(&hex[..10], "5a4d533101", "magic ZMS1 + alg 1");
    // Computed independently with Python's hashlib/hmac from the documented format.
    assert_eq!(
        hex,
        concat!(
            "5a4d533101037376630000018bcfe56800",
            "11111111111111111111111111111111",
            "c1402647e8592a609c258a953330e6f6cc7fe17c20ec294ba46759aeb9d83dce"
        ),
        "known answer changed"
    );
}

#[test]
fn ed25519_known_answer_verifies() {
    let signer = Signer::new("ed", SigningKey::ed25519_from_seed([9; 32])).unwrap();
    let mut v = Verifier::new(1_000);
    v.add_key("ed", signer.key().verifying_key());
    let f = signed(&signer, 5_000, 1, &["a", "b"]);
    assert_eq!(f.last().unwrap().len(), 4 + 2 + 2 + 8 + 16 + 64);
    let ok = v.verify(5_000, &f).unwrap();
    assert_eq!(ok.key_id, "ed");
    assert_eq!(ok.frames, vec![Bytes::from("a"), Bytes::from("b")]);
    // Ed25519 is deterministic: the same input signs the same.
    assert_eq!(signed(&signer, 5_000, 1, &["a", "b"]), f);
}

#[test]
fn forged_and_altered_messages_are_refused() {
    let (signer, mut v) = hmac_pair();
    let mut f = signed(&signer, 1_000, 1, &["pay", "100"]);
    f[1] = Bytes::from("999");
    assert_eq!(v.verify(1_000, &f), Err(SignatureError::BadSignature));
    // Moving a frame boundary changes the digest too (lengths are signed).
    let g = signed(&signer, 1_000, 2, &["ab", "c"]);
    let moved = vec![Bytes::from("a"), Bytes::from("bc"), g[2].clone()];
    assert_eq!(v.verify(1_000, &moved), Err(SignatureError::BadSignature));
    let forger = Signer::new("svc", SigningKey::Hmac(b"guess".to_vec())).unwrap();
    assert_eq!(
        v.verify(1_000, &signed(&forger, 1_000, 3, &["x"])),
        Err(SignatureError::BadSignature)
    );
    let stranger = Signer::new("who", SigningKey::Hmac(b"k".to_vec())).unwrap();
    assert!(matches!(
        v.verify(1_000, &signed(&stranger, 1_000, 4, &["x"])),
        Err(SignatureError::UnknownKey(_))
    ));
    assert_eq!(v.stats().failed, 4);
}

#[test]
fn replays_and_stale_messages_are_refused() {
    let (signer, mut v) = hmac_pair();
    let f = signed(&signer, 50_000, 1, &["x"]);
    assert!(v.verify(50_000, &f).is_ok());
    assert_eq!(v.verify(50_001, &f), Err(SignatureError::Replayed));
    let old = signed(&signer, 10_000, 2, &["x"]);
    assert!(matches!(
        v.verify(50_000, &old),
        Err(SignatureError::OutOfWindow { .. })
    ));
    let future = signed(&signer, 90_000, 3, &["x"]);
    assert!(matches!(
        v.verify(50_000, &future),
        Err(SignatureError::OutOfWindow { .. })
    ));
    assert_eq!(
        v.stats(),
        VerifyStats {
            ok: 1,
            failed: 3,
            replayed: 1
        }
    );
}

#[test]
fn a_full_replay_cache_refuses_what_it_can_no_longer_check() {
    let signer = Signer::new("svc", SigningKey::Hmac(b"k".to_vec())).unwrap();
    let mut v = Verifier::with_capacity(10_000, 2);
    v.add_key("svc", signer.key().verifying_key());
    let first = signed(&signer, 1_000, 1, &["x"]);
    assert!(v.verify(1_000, &first).is_ok());
    assert!(v.verify(1_001, &signed(&signer, 1_001, 2, &["x"])).is_ok());
    assert!(v.verify(1_002, &signed(&signer, 1_002, 3, &["x"])).is_ok());
    // The first nonce was evicted, yet its replay is still refused.
    assert!(v.verify(1_003, &first).is_err());
}

#[test]
fn malformed_frames_name_the_problem() {
    let (_, mut v) = hmac_pair();
    assert_eq!(v.verify::<Bytes>(0, &[]), Err(SignatureError::Missing));
    assert_eq!(
        v.verify(0, &[Bytes::from("plain")]),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        SignatureFrame::parse(b"ZMS1"),
        Err(SignatureError::Malformed("truncated"))
    );
    assert_eq!(
        SignatureFrame::parse(b"ZMS1\x09\x01a"),
        Err(SignatureError::Malformed("unknown algorithm"))
    );
    assert_eq!(
        SignatureFrame::parse(b"ZMS1\x01\x00"),
        Err(SignatureError::Malformed("empty key id"))
    );
    assert_eq!(
        SignatureFrame::parse(b"ZMS1\x01\x01a123"),
        Err(SignatureError::Malformed("wrong length"))
    );
}
