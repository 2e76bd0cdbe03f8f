//! Authentication policies: who may connect to a server socket (the role ZAP plays in libzmq).
//!
//! A policy decides once per handshake, after the mechanism has verified the
//! peer's credentials (CURVE: the client proved it holds its secret key;
//! PLAIN: user name and password are in hand):
//!
//! 1. the peer's IP must not match a `deny` network, and must match an `allow`
//!    network when any are given;
//! 2. CURVE: its public key must be in the allowed-keys directory (`*.key`
//!    certificates, reloaded whenever the directory changes), unless the policy
//!    admits any key that completes the handshake;
//! 3. PLAIN: user name and password must match the password file.
//!
//! Everything refused is reported (see [`AuthPolicy::on_refusal`]) with its reason.
//! A server configured with a policy never admits a client the policy does not know.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ipnet::IpNet;

use super::keys::{Certificate, KeyError, PublicKey};

/// Most keys an allowed-keys directory may hold.
pub const KEY_DIR_FILES_MAX: usize = 10_000;

/// The mechanism a peer used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// No security.
    Null,
    /// User name and password in clear.
    Plain,
    /// CurveZMQ.
    Curve,
}

/// What the mechanism learned about a peer.
#[derive(Clone, Debug)]
pub struct PeerCredentials<'a> {
    /// Mechanism of the handshake.
    pub mechanism: Mechanism,
    /// Transport address, `ip:port` for TCP.
    pub address: Option<&'a str>,
    /// CURVE client public key.
    pub public_key: Option<PublicKey>,
    /// PLAIN user name.
    pub username: Option<&'a str>,
    /// PLAIN password.
    pub password: Option<&'a str>,
}

/// What the engine verified about a message's sender (ROUTER sockets; see
/// [`crate::Message::sender_auth`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuth {
    /// NULL, PLAIN or CURVE.
    pub mechanism: Option<String>,
    /// The authenticated user: certificate name, CURVE key (Z85) or PLAIN user name.
    pub user_id: Option<String>,
    /// The sender's verified CURVE public key.
    pub public_key: Option<PublicKey>,
    /// Transport address.
    pub address: Option<String>,
}

/// The policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admit, with the authenticated user id (certificate name, key, or user name).
    Allow {
        /// Shown in the registry and on received messages.
        user_id: String,
    },
    /// Refuse, with the reason reported in the refusal event.
    Deny {
        /// Why.
        reason: String,
    },
}

/// A refused peer, as reported to the registry and logs.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// Transport address.
    pub address: Option<String>,
    /// Mechanism.
    pub mechanism: Mechanism,
    /// Why.
    pub reason: String,
}

/// Which CURVE clients are admitted.
#[derive(Clone, Debug)]
enum CurveClients {
    /// Any client that completes the handshake (it still needs our public key).
    Any,
    /// Only keys found in this directory.
    Dir(Arc<KeyDir>),
}

type RefusalSink = Arc<dyn Fn(Refusal) + Send + Sync>;

/// A server's admission policy. Cheap to clone (shared state).
///
/// ```no_run
/// use zmesh::security::AuthPolicy;
/// let policy = AuthPolicy::new()
///     .allow_cidr("10.0.0.0/8").unwrap()
///     .deny_cidr("10.9.0.0/16").unwrap()
///     .allowed_keys_dir("/etc/zmesh/clients").unwrap();
/// ```
#[derive(Clone)]
pub struct AuthPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    curve: CurveClients,
    passwords: Option<Arc<PasswordFile>>,
    on_refusal: Vec<RefusalSink>,
}

impl std::fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPolicy")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("curve", &self.curve)
            .field(
                "passwords",
                &self.passwords.as_ref().map(|p| p.path.clone()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// A network string that is not `ip` or `ip/prefix`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR network (e.g. 10.0.0.0/8, ::1)")]
pub struct BadCidr(pub String);

fn parse_net(s: &str) -> Result<IpNet, BadCidr> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| BadCidr(s.to_owned()))
}

impl AuthPolicy {
    /// Admit every address and any CURVE key; PLAIN needs a password file.
    pub fn new() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            curve: CurveClients::Any,
            passwords: None,
            on_refusal: Vec::new(),
        }
    }

    /// Admit only addresses in these networks (repeatable).
    pub fn allow_cidr(mut self, net: &str) -> Result<Self, BadCidr> {
        self.allow.push(parse_net(net)?);
        Ok(self)
    }

    /// Refuse addresses in this network (wins over allow).
    pub fn deny_cidr(mut self, net: &str) -> Result<Self, BadCidr> {
        self.deny.push(parse_net(net)?);
        Ok(self)
    }

    /// Admit only CURVE clients whose public certificate (`*.key`) is in `dir`.
    pub fn allowed_keys_dir(mut self, dir: impl Into<PathBuf>) -> Result<Self, KeyError> {
        self.curve = CurveClients::Dir(Arc::new(KeyDir::open(dir.into())?));
        Ok(self)
    }

    /// Check PLAIN credentials against a password file (`user:password` lines).
    pub fn password_file(mut self, path: impl Into<PathBuf>) -> Result<Self, KeyError> {
        self.passwords = Some(Arc::new(PasswordFile::load(path.into())?));
        Ok(self)
    }

    /// Also call `f` for each refusal.
    pub fn on_refusal(mut self, f: impl Fn(Refusal) + Send + Sync + 'static) -> Self {
        self.on_refusal.push(Arc::new(f));
        self
    }

    /// Decide about one peer, reporting a refusal.
    pub fn decide(&self, peer: &PeerCredentials<'_>) -> Decision {
        let d = self.evaluate(peer);
        if let Decision::Deny { reason } = &d {
            let r = Refusal {
                address: peer.address.map(str::to_owned),
                mechanism: peer.mechanism,
                reason: reason.clone(),
            };
            tracing::info!(address = ?r.address, mechanism = ?r.mechanism, reason = %r.reason, "peer refused");
            for sink in &self.on_refusal {
                sink(r.clone());
            }
        }
        d
    }

    fn evaluate(&self, peer: &PeerCredentials<'_>) -> Decision {
        let deny = |reason: String| Decision::Deny { reason };
        if !self.allow.is_empty() || !self.deny.is_empty() {
            let ip = peer.address.and_then(|a| {
                a.parse::<std::net::SocketAddr>()
                    .map(|s| s.ip())
                    .ok()
                    .or_else(|| a.parse::<IpAddr>().ok())
            });
            match ip {
                Some(ip) => {
                    if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
                        return deny(format!("address {ip} is in denied network {net}"));
                    }
                    if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
                        return deny(format!("address {ip} is not in an allowed network"));
                    }
                }
                // An address filter cannot vouch for a peer without an IP (ipc, inproc).
                None if !self.allow.is_empty() => {
                    return deny("peer has no IP address to check".into());
                }
                None => {}
            }
        }
        match peer.mechanism {
            Mechanism::Null => Decision::Allow {
                user_id: String::new(),
            },
            Mechanism::Curve => {
                let Some(key) = peer.public_key else {
                    return deny("no client key".into());
                };
                match &self.curve {
                    CurveClients::Any => Decision::Allow {
                        user_id: key.to_z85(),
                    },
                    CurveClients::Dir(dir) => match dir.lookup(&key) {
                        Ok(Some(name)) => Decision::Allow { user_id: name },
                        Ok(None) => {
                            deny(format!("client key {key} is not in {}", dir.path.display()))
                        }
                        Err(e) => deny(format!("allowed-keys directory unreadable: {e}")),
                    },
                }
            }
            Mechanism::Plain => {
                let Some(pw) = &self.passwords else {
                    return deny("no password file configured".into());
                };
                let user = peer.username.unwrap_or("");
                if pw.check(user, peer.password.unwrap_or("")) {
                    Decision::Allow {
                        user_id: user.to_owned(),
                    }
                } else {
                    deny(format!("wrong user name or password for {user:?}"))
                }
            }
        }
    }
}

/// A directory of public certificates, reloaded when it changes.
#[derive(Debug)]
pub struct KeyDir {
    path: PathBuf,
    state: Mutex<KeyDirState>,
}

#[derive(Debug, Default)]
struct KeyDirState {
    stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
    keys: HashMap<PublicKey, String>,
}

impl KeyDir {
    /// Open and read `path` now (an unreadable directory is an error at start).
    pub fn open(path: PathBuf) -> Result<Self, KeyError> {
        let dir = Self {
            path,
            state: Mutex::new(KeyDirState::default()),
        };
        dir.refresh()?;
        Ok(dir)
    }

    fn stamp(&self) -> Result<Vec<(PathBuf, Option<SystemTime>, u64)>, KeyError> {
        let io = |source| KeyError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut stamp = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "key") {
                let meta = entry.metadata().map_err(io)?;
                stamp.push((p, meta.modified().ok(), meta.len()));
                if stamp.len() > KEY_DIR_FILES_MAX {
                    break;
                }
            }
        }
        stamp.sort();
        Ok(stamp)
    }

    /// Reload if any `*.key` file was added, removed or changed. Returns whether it reloaded.
    pub fn refresh(&self) -> Result<bool, KeyError> {
        let stamp = self.stamp()?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.stamp == stamp && !stamp.is_empty() {
            return Ok(false);
        }
        let mut keys = HashMap::new();
        for (p, _, _) in &stamp {
            // A bad file is skipped, not fatal: one typo must not lock everyone out.
            match Certificate::read(p) {
                Ok(cert) => {
                    let name = cert.meta("name").map(str::to_owned).unwrap_or_else(|| {
                        p.file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    });
                    keys.insert(cert.public, name);
                }
                Err(e) => tracing::warn!(error = %e, "skipping unreadable certificate"),
            }
        }
        tracing::info!(dir = %self.path.display(), keys = keys.len(), "allowed keys loaded");
        *st = KeyDirState { stamp, keys };
        Ok(true)
    }

    /// The name of an allowed key (after reloading if the directory changed).
    pub fn lookup(&self, key: &PublicKey) -> Result<Option<String>, KeyError> {
        self.refresh()?;
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(st.keys.get(key).cloned())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// PLAIN credentials: `user:password` per line, `#` comments.
#[derive(Debug)]
pub struct PasswordFile {
    path: PathBuf,
    users: HashMap<String, String>,
}

impl PasswordFile {
    /// Read the file; like a secret key, it must not be readable by others.
    pub fn load(path: PathBuf) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        super::keys::check_private_file(&path)?;
        let users = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect();
        Ok(Self { path, users })
    }

    fn check(&self, user: &str, password: &str) -> bool {
        // Compare every stored password in constant time so timing reveals nothing.
        let mut ok = false;
        for (u, p) in &self.users {
            ok |= u == user && constant_time_eq(p.as_bytes(), password.as_bytes());
        }
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
