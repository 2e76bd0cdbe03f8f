//! CURVE keys and their certificate files.
//!
//! Files follow the format of CZMQ's `zcert` and pyzmq's
//! `zmq.auth.create_certificates`, so keys move freely between them:
//!
//! ```text
//! #   ZeroMQ CURVE Public Certificate            (NAME.key)
//! metadata
//!     name = "orders"
//! curve
//!     public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
//! ```
//!
//! `NAME.key_secret` holds `secret-key` as well, and is written mode 0600.
//! Loading a secret file that others may read is refused.

use std::fmt;
use std::path::{Path, PathBuf};

use super::z85;

/// Why a key could not be used. Each names the file (if any) and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Caller: a key is 32 bytes, written as 40 Z85 characters.
    #[error("{what}: a CURVE key is 40 Z85 characters (32 bytes), got {got} characters")]
    WrongLength {
        /// Which key or file.
        what: String,
        /// Characters found.
        got: usize,
    },
    /// Caller: the key text is not Z85.
    #[error("{what}: not a Z85 key: {source}")]
    BadZ85 {
        /// Which key or file.
        what: String,
        /// The Z85 error.
        source: z85::Z85Error,
    },
    /// Environment: the secret key file can be read by other users.
    #[error("{path}: secret key file is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    SecretFileTooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Caller: a public certificate was given where a secret one is needed.
    #[error("{path}: holds only a public key; a secret key file (NAME.key_secret) is needed here")]
    PublicWhereSecretNeeded {
        /// The file.
        path: String,
    },
    /// Caller: the file has no `public-key` line.
    #[error("{path}: no public-key found (is this a ZeroMQ certificate?)")]
    NoPublicKey {
        /// The file.
        path: String,
    },
    /// Caller: the secret key does not belong to the public key in the same file.
    #[error("{path}: the secret key does not match the public key")]
    Mismatch {
        /// The file.
        path: String,
    },
    /// Environment: the file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A CURVE public key (X25519), shown as Z85.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// A CURVE secret key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub [u8; 32]);

/// A CURVE key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Public half.
    pub public: PublicKey,
    /// Secret half.
    pub secret: SecretKey,
}

fn parse_z85_key(what: &str, text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.len() != 40 {
        return Err(KeyError::WrongLength {
            what: what.to_owned(),
            got: text.chars().count(),
        });
    }
    let raw = z85::decode(text).map_err(|source| KeyError::BadZ85 {
        what: what.to_owned(),
        source,
    })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&raw);
    Ok(out)
}

impl PublicKey {
    /// Parse 40 Z85 characters.
    ///
    /// ```
    /// let k = zmesh::security::PublicKey::from_z85("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7").unwrap();
    /// assert_eq!(k.to_z85(), "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    /// ```
    pub fn from_z85(text: &str) -> Result<Self, KeyError> {
        parse_z85_key("public key", text).map(Self)
    }

    /// The key as 40 Z85 characters.
    pub fn to_z85(&self) -> String {
        z85::encode(&self.0).expect("32 bytes is a multiple of 4")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl SecretKey {
    /// Parse 40 Z85 characters.
    pub fn from_z85(text: &str) -> Result<Self, KeyError> {
        parse_z85_key("secret key", text).map(Self)
    }

    /// The key as 40 Z85 characters (for writing a secret file).
    pub fn to_z85(&self) -> String {
        z85::encode(&self.0).expect("32 bytes is a multiple of 4")
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        let (public, secret) = crate::engine::generate_curve_keypair();
        Self {
            public: PublicKey(public),
            secret: SecretKey(secret),
        }
    }

    /// The pair of a secret key (the public half is derived).
    pub fn from_secret(secret: SecretKey) -> Self {
        let public = PublicKey(crate::engine::derive_curve_public(&secret.0));
        Self { public, secret }
    }

    /// Load a secret certificate file (`NAME.key_secret`), refusing one others can read.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let cert = Certificate::read(path)?;
        let secret = cert
            .secret
            .ok_or_else(|| KeyError::PublicWhereSecretNeeded {
                path: display(path),
            })?;
        check_private_file(path)?;
        let pair = Self::from_secret(secret);
        if pair.public != cert.public {
            return Err(KeyError::Mismatch {
                path: display(path),
            });
        }
        Ok(pair)
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Refuse a file that other users may read (secret keys, password files).
#[cfg(unix)]
pub(crate) fn check_private_file(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: display(path),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::SecretFileTooOpen {
            path: display(path),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_private_file(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// The contents of a certificate file.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The public key.
    pub public: PublicKey,
    /// The secret key, in a secret certificate.
    pub secret: Option<SecretKey>,
    /// `metadata` entries (e.g. `name`).
    pub metadata: Vec<(String, String)>,
}

/// Longest certificate file read (they are a few hundred bytes).
const CERT_FILE_MAX_BYTES: u64 = 64 * 1024;

impl Certificate {
    /// Parse certificate text (ZPL as written by zcert and pyzmq). `what` names it in errors.
    pub fn parse(what: &str, text: &str) -> Result<Self, KeyError> {
        let mut public = None;
        let mut secret = None;
        let mut metadata = Vec::new();
        let mut section = "";
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !line.starts_with([' ', '\t']) {
                section = if trimmed == "metadata" {
                    "metadata"
                } else if trimmed == "curve" {
                    "curve"
                } else {
                    ""
                };
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                continue;
            };
            let key = key.trim();
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            match (section, key) {
                ("curve", "public-key") => public = Some(PublicKey(parse_z85_key(what, value)?)),
                ("curve", "secret-key") => secret = Some(SecretKey(parse_z85_key(what, value)?)),
                ("metadata", k) => metadata.push((k.to_owned(), value.to_owned())),
                _ => {}
            }
        }
        let public = public.ok_or_else(|| KeyError::NoPublicKey {
            path: what.to_owned(),
        })?;
        Ok(Self {
            public,
            secret,
            metadata,
        })
    }

    /// Read and parse a certificate file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        use std::io::Read;
        let io = |source| KeyError::Io {
            path: display(path),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        file.take(CERT_FILE_MAX_BYTES)
            .read_to_string(&mut text)
            .map_err(io)?;
        Self::parse(&display(path), &text)
    }

    /// The value of a metadata entry.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The certificate as file text (public only, or with the secret key).
    pub fn to_text(&self, with_secret: bool) -> String {
        let mut s = String::new();
        if with_secret {
            s.push_str("#   ZeroMQ CURVE **Secret** Certificate\n");
            s.push_str(
                "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n",
            );
        } else {
            s.push_str("#   ZeroMQ CURVE Public Certificate\n");
            s.push_str("#   Exchange securely, or use a secure mechanism to verify the contents\n");
            s.push_str("#   of this file after exchange.\n\n");
        }
        s.push_str("metadata\n");
        for (k, v) in &self.metadata {
            s.push_str(&format!("    {k} = \"{v}\"\n"));
        }
        s.push_str("curve\n");
        s.push_str(&format!("    public-key = \"{}\"\n", self.public.to_z85()));
        if with_secret && let Some(secret) = &self.secret {
            s.push_str(&format!("    secret-key = \"{}\"\n", secret.to_z85()));
        }
        s
    }
}

/// Write `DIR/NAME.key` (public, 0644) and `DIR/NAME.key_secret` (secret, 0600) for a new key pair.
/// Returns the two paths.
pub fn write_key_pair(
    dir: &Path,
    name: &str,
    pair: &KeyPair,
) -> Result<(PathBuf, PathBuf), KeyError> {
    let cert = Certificate {
        public: pair.public,
        secret: Some(pair.secret.clone()),
        metadata: vec![("name".into(), name.into())],
    };
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: display(dir),
        source,
    })?;
    let public_path = dir.join(format!("{name}.key"));
    let secret_path = dir.join(format!("{name}.key_secret"));
    write_file(&public_path, &cert.to_text(false), 0o644)?;
    write_file(&secret_path, &cert.to_text(true), 0o600)?;
    Ok((public_path, secret_path))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), KeyError> {
    use std::io::Write;
    let io = |source| KeyError::Io {
        path: display(path),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    #[cfg(unix)]
    {
        // An existing file keeps its old mode under open(); set it explicitly.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    f.sync_all().map_err(io)
}

/// A public key given as 40 Z85 characters or as the path of a certificate file.
pub fn public_key_from_arg(arg: &str) -> Result<PublicKey, KeyError> {
    let path = Path::new(arg);
    // A file if it exists or looks like one; otherwise the key itself, so a
    // mistyped key is reported as a bad key, not as a missing file.
    if path.exists() || arg.contains('/') || arg.ends_with(".key") || arg.ends_with(".key_secret") {
        return Certificate::read(path).map(|c| c.public);
    }
    PublicKey::from_z85(arg)
}
