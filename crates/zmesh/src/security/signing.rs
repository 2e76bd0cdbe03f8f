//! Signed messages: integrity and origin end to end, across brokers and proxies
//! that transport encryption cannot cover.
//!
//! A signed message carries one extra frame, last, built as follows (all
//! integers big-endian); `docs/protocol/signing.md` has the same text with a
//! worked example for Python and Go implementers:
//!
//! ```text
//! magic "ZMS1" | alg u8 (1 = HMAC-SHA256, 2 = Ed25519) | key_id_len u8 | key_id
//!   | timestamp_ms u64 | nonce [16] | signature (32 bytes HMAC, 64 bytes Ed25519)
//!
//! digest = SHA-256("zmesh-sig-v1" | alg | key_id_len | key_id | timestamp_ms | nonce
//!                   | for each preceding frame: len u64 | bytes)
//! HMAC-SHA256: signature = HMAC(shared_key, digest)
//! Ed25519:     signature = Sign(secret_key, digest)
//! ```
//!
//! The verifier accepts a message only if its key id is known, the signature
//! checks, the timestamp is within the window of its clock, and the
//! `(key_id, nonce)` pair was not seen before (the replay cache spans the window).
//! This module is sans-IO: callers pass the time and the nonce in.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 4] = b"ZMS1";
const DOMAIN: &[u8] = b"zmesh-sig-v1";
const ALG_HMAC: u8 = 1;
const ALG_ED25519: u8 = 2;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 16;

/// Why a signed message was refused. The peer (or an attacker) is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The message has no signature frame.
    #[error("message is not signed")]
    Missing,
    /// The signature frame is malformed.
    #[error("malformed signature frame: {0}")]
    Malformed(&'static str),
    /// No verification key for this key id (or the algorithm differs).
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The signature does not match the content.
    #[error("signature does not verify (forged or altered message)")]
    BadSignature,
    /// The timestamp is outside the accepted window.
    #[error("timestamp {skew_ms} ms from now, outside the {window_ms} ms window")]
    OutOfWindow {
        /// Signed time minus local time.
        skew_ms: i64,
        /// The window.
        window_ms: u64,
    },
    /// This (key, nonce) was already accepted: a replay.
    #[error("replayed message (nonce already seen)")]
    Replayed,
}

/// A key that signs.
#[derive(Clone)]
pub enum SigningKey {
    /// Shared secret for HMAC-SHA256.
    Hmac(Vec<u8>),
    /// Ed25519 secret key.
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// A key that verifies.
#[derive(Clone)]
pub enum VerifyingKey {
    /// Shared secret for HMAC-SHA256.
    Hmac(Vec<u8>),
    /// Ed25519 public key.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl SigningKey {
    /// An Ed25519 key from its 32-byte seed.
    pub fn ed25519_from_seed(seed: [u8; 32]) -> Self {
        Self::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The key that verifies this one's signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Self::Hmac(k) => VerifyingKey::Hmac(k.clone()),
            Self::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
        }
    }

    fn alg(&self) -> u8 {
        match self {
            Self::Hmac(_) => ALG_HMAC,
            Self::Ed25519(_) => ALG_ED25519,
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "SigningKey::Hmac(<redacted>)",
            Self::Ed25519(_) => "SigningKey::Ed25519(<redacted>)",
        })
    }
}

fn digest<B: AsRef<[u8]>>(alg: u8, key_id: &[u8], ts: u64, nonce: &[u8], frames: &[B]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update([alg, key_id.len() as u8]);
    h.update(key_id);
    h.update(ts.to_be_bytes());
    h.update(nonce);
    for f in frames {
        h.update((f.as_ref().len() as u64).to_be_bytes());
        h.update(f.as_ref());
    }
    h.finalize().into()
}

/// Signs messages under one key id.
///
/// ```
/// use zmesh::security::signing::{Signer, SigningKey, Verifier};
/// let signer = Signer::new("svc-a", SigningKey::Hmac(b"shared secret".to_vec())).unwrap();
/// let mut verifier = Verifier::new(30_000);
/// verifier.add_key("svc-a", signer.key().verifying_key());
/// let frames = vec![bytes::Bytes::from("hello")];
/// let sig = signer.sign(1_000, [7; 16], &frames);
/// let mut signed = frames.clone();
/// signed.push(sig);
/// let body = verifier.verify(1_500, &signed).unwrap();
/// assert_eq!(body.frames, frames);
/// assert!(verifier.verify(1_500, &signed).is_err(), "a replay is refused");
/// ```
#[derive(Clone, Debug)]
pub struct Signer {
    key_id: String,
    key: SigningKey,
}

/// A key id that cannot be carried (empty or over 255 bytes).
#[derive(Debug, thiserror::Error)]
#[error("key id must be 1..=255 bytes, got {0}")]
pub struct BadKeyId(pub usize);

impl Signer {
    /// A signer for `key_id`.
    pub fn new(key_id: impl Into<String>, key: SigningKey) -> Result<Self, BadKeyId> {
        let key_id = key_id.into();
        if key_id.is_empty() || key_id.len() > 255 {
            return Err(BadKeyId(key_id.len()));
        }
        Ok(Self { key_id, key })
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The signature frame for `frames`, signed at `now_ms` with `nonce` (random per message).
    pub fn sign<B: AsRef<[u8]>>(&self, now_ms: u64, nonce: [u8; NONCE_LEN], frames: &[B]) -> Bytes {
        let alg = self.key.alg();
        let id = self.key_id.as_bytes();
        let d = digest(alg, id, now_ms, &nonce, frames);
        let sig: Vec<u8> = match &self.key {
            SigningKey::Hmac(k) => {
                let mut mac = HmacSha256::new_from_slice(k).expect("HMAC takes any key length");
                mac.update(&d);
                mac.finalize().into_bytes().to_vec()
            }
            SigningKey::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(&d).to_bytes().to_vec()
            }
        };
        let mut out = Vec::with_capacity(4 + 2 + id.len() + 8 + NONCE_LEN + sig.len());
        out.extend_from_slice(MAGIC);
        out.push(alg);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&now_ms.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sig);
        Bytes::from(out)
    }
}

/// A parsed signature frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFrame<'a> {
    /// Algorithm code.
    pub alg: u8,
    /// Key id.
    pub key_id: &'a [u8],
    /// Signed time.
    pub timestamp_ms: u64,
    /// Nonce.
    pub nonce: &'a [u8],
    /// Signature bytes.
    pub signature: &'a [u8],
}

impl<'a> SignatureFrame<'a> {
    /// Parse a signature frame; the fuzzed entry point.
    pub fn parse(b: &'a [u8]) -> Result<Self, SignatureError> {
        let rest = b.strip_prefix(MAGIC).ok_or(SignatureError::Missing)?;
        let (&alg, rest) = rest
            .split_first()
            .ok_or(SignatureError::Malformed("truncated"))?;
        let (&id_len, rest) = rest
            .split_first()
            .ok_or(SignatureError::Malformed("truncated"))?;
        let sig_len = match alg {
            ALG_HMAC => 32,
            ALG_ED25519 => 64,
            _ => return Err(SignatureError::Malformed("unknown algorithm")),
        };
        if id_len == 0 {
            return Err(SignatureError::Malformed("empty key id"));
        }
        let need = id_len as usize + 8 + NONCE_LEN + sig_len;
        if rest.len() != need {
            return Err(SignatureError::Malformed("wrong length"));
        }
        let (key_id, rest) = rest.split_at(id_len as usize);
        let (ts, rest) = rest.split_at(8);
        let (nonce, signature) = rest.split_at(NONCE_LEN);
        Ok(Self {
            alg,
            key_id,
            timestamp_ms: u64::from_be_bytes(ts.try_into().expect("8 bytes")),
            nonce,
            signature,
        })
    }
}

/// A message whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The frames without the signature frame.
    pub frames: Vec<Bytes>,
    /// Who signed.
    pub key_id: String,
    /// When.
    pub timestamp_ms: u64,
}

/// Counts of verification outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyStats {
    /// Accepted.
    pub ok: u64,
    /// Refused, any reason.
    pub failed: u64,
    /// Of which: replays.
    pub replayed: u64,
}

/// A (key id, nonce) pair seen by the verifier.
type SeenNonce = (Vec<u8>, [u8; NONCE_LEN]);

/// Most (key, nonce) pairs remembered for replay detection.
pub const REPLAY_CACHE_MAX: usize = 1 << 20;

/// Verifies signed messages, with a replay window. Sans-IO: pass the time in.
pub struct Verifier {
    keys: HashMap<Vec<u8>, VerifyingKey>,
    window_ms: u64,
    seen: HashSet<SeenNonce>,
    /// Seen entries in arrival order with the time they may be forgotten.
    expiry: VecDeque<(u64, SeenNonce)>,
    /// Messages signed at or before this time are refused: their nonces may
    /// have been evicted from a full cache.
    floor_ms: u64,
    capacity: usize,
    stats: VerifyStats,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("window_ms", &self.window_ms)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Accept timestamps within ±`window_ms` of the local clock.
    pub fn new(window_ms: u64) -> Self {
        Self::with_capacity(window_ms, REPLAY_CACHE_MAX)
    }

    /// With a smaller replay cache (tests, constrained hosts).
    pub fn with_capacity(window_ms: u64, capacity: usize) -> Self {
        Self {
            keys: HashMap::new(),
            window_ms,
            seen: HashSet::new(),
            expiry: VecDeque::new(),
            floor_ms: 0,
            capacity: capacity.max(1),
            stats: VerifyStats::default(),
        }
    }

    /// Trust `key` for messages signed as `key_id`.
    pub fn add_key(&mut self, key_id: impl Into<String>, key: VerifyingKey) {
        self.keys.insert(key_id.into().into_bytes(), key);
    }

    /// Outcome counts so far.
    pub fn stats(&self) -> VerifyStats {
        self.stats
    }

    /// Verify a message whose last frame is the signature; returns the body.
    pub fn verify<B: AsRef<[u8]>>(
        &mut self,
        now_ms: u64,
        frames: &[B],
    ) -> Result<Verified, SignatureError> {
        let r = self.check(now_ms, frames);
        match &r {
            Ok(_) => self.stats.ok += 1,
            Err(e) => {
                self.stats.failed += 1;
                if *e == SignatureError::Replayed {
                    self.stats.replayed += 1;
                }
            }
        }
        r
    }

    fn check<B: AsRef<[u8]>>(
        &mut self,
        now_ms: u64,
        frames: &[B],
    ) -> Result<Verified, SignatureError> {
        let (sig_frame, body) = frames.split_last().ok_or(SignatureError::Missing)?;
        let sig = SignatureFrame::parse(sig_frame.as_ref())?;
        let key = self.keys.get(sig.key_id).ok_or_else(|| {
            SignatureError::UnknownKey(String::from_utf8_lossy(sig.key_id).into_owned())
        })?;
        let d = digest(sig.alg, sig.key_id, sig.timestamp_ms, sig.nonce, body);
        let good = match (key, sig.alg) {
            (VerifyingKey::Hmac(k), ALG_HMAC) => {
                let mut mac = HmacSha256::new_from_slice(k).expect("HMAC takes any key length");
                mac.update(&d);
                mac.verify_slice(sig.signature).is_ok()
            }
            (VerifyingKey::Ed25519(k), ALG_ED25519) => {
                let bytes: [u8; 64] = sig.signature.try_into().expect("length checked by parse");
                k.verify_strict(&d, &ed25519_dalek::Signature::from_bytes(&bytes))
                    .is_ok()
            }
            _ => {
                return Err(SignatureError::UnknownKey(
                    String::from_utf8_lossy(sig.key_id).into_owned(),
                ));
            }
        };
        if !good {
            return Err(SignatureError::BadSignature);
        }
        let skew = sig.timestamp_ms as i64 - now_ms as i64;
        if skew.unsigned_abs() > self.window_ms || sig.timestamp_ms <= self.floor_ms {
            return Err(SignatureError::OutOfWindow {
                skew_ms: skew,
                window_ms: self.window_ms,
            });
        }
        self.forget_expired(now_ms);
        let nonce: [u8; NONCE_LEN] = sig.nonce.try_into().expect("length checked by parse");
        let entry = (sig.key_id.to_vec(), nonce);
        if self.seen.contains(&entry) {
            return Err(SignatureError::Replayed);
        }
        if self.seen.len() >= self.capacity
            && let Some((evicted_exp, evicted)) = self.expiry.pop_front()
        {
            self.seen.remove(&evicted);
            // A replay of the evicted message carries its timestamp: refuse
            // everything signed up to then, since its nonce is forgotten.
            self.floor_ms = self.floor_ms.max(evicted_exp - self.window_ms);
        }
        self.seen.insert(entry.clone());
        self.expiry
            .push_back((sig.timestamp_ms + self.window_ms, entry));
        Ok(Verified {
            frames: body
                .iter()
                .map(|f| Bytes::copy_from_slice(f.as_ref()))
                .collect(),
            key_id: String::from_utf8_lossy(sig.key_id).into_owned(),
            timestamp_ms: sig.timestamp_ms,
        })
    }

    /// Drop cache entries whose messages are now outside the window anyway.
    fn forget_expired(&mut self, now_ms: u64) {
        while let Some((exp, _)) = self.expiry.front() {
            if *exp >= now_ms {
                break;
            }
            let (_, entry) = self.expiry.pop_front().expect("front exists");
            self.seen.remove(&entry);
        }
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
