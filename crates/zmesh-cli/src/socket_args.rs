//! Command-line flags for socket options, shared by every socket command.

use std::time::Duration;

use clap::Args;
use zmesh::SocketOptions;
use zmesh::security::{self, AuthPolicy, KeyPair, Security, Signer, SigningKey, Verifier};

use crate::commands::UsageError;

/// Connection settings. Defaults are zmesh's safe defaults.
#[derive(Args, Debug, Clone)]
pub struct SocketArgs {
    /// Heartbeat interval in ms (0 turns heartbeats off).
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Close a link silent for this long, in ms.
    #[arg(long, default_value_t = 5000)]
    pub heartbeat_timeout_ms: u64,
    /// First reconnect wait, in ms (doubles up to --reconnect-max-ms, ±10 % jitter).
    #[arg(long, default_value_t = 100)]
    pub reconnect_ms: u64,
    /// Longest reconnect wait, in ms.
    #[arg(long, default_value_t = 5000)]
    pub reconnect_max_ms: u64,
    /// Send and receive high-water marks, in messages.
    #[arg(long, default_value_t = 1000)]
    pub hwm: u32,
    /// How long closing waits for queued messages, in ms.
    #[arg(long, default_value_t = 1000)]
    pub linger_ms: u64,
    /// Largest accepted message, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_message_size: usize,
    /// Routing identity to announce (for ROUTER peers).
    #[arg(long)]
    pub identity: Option<String>,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Encryption, authentication and signing flags.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Be a CURVE server (needs --curve-secret-key-file or ZMESH_CURVE_SECRET_KEY).
    #[arg(long, help_heading = "Security")]
    pub curve_server: bool,
    /// Our CURVE secret certificate (NAME.key_secret, from `zmesh keygen`).
    #[arg(long, env = "ZMESH_CURVE_SECRET_KEY_FILE", help_heading = "Security")]
    pub curve_secret_key_file: Option<std::path::PathBuf>,
    /// Be a CURVE client of the server with this public key (40 Z85 characters or a .key file).
    #[arg(long, env = "ZMESH_CURVE_SERVER_KEY", help_heading = "Security")]
    pub curve_server_key: Option<String>,
    /// CURVE server: admit only clients whose NAME.key is in this directory (reloaded on change).
    #[arg(long, help_heading = "Security")]
    pub curve_allow_dir: Option<std::path::PathBuf>,
    /// Server: admit only these networks (repeatable), e.g. 10.0.0.0/8.
    #[arg(long = "allow", help_heading = "Security")]
    pub allow: Vec<String>,
    /// Server: refuse these networks (repeatable; wins over --allow).
    #[arg(long = "deny", help_heading = "Security")]
    pub deny: Vec<String>,
    /// Be a PLAIN server checking this password file (`user:password` lines, mode 600).
    #[arg(long, help_heading = "Security")]
    pub plain_passwords: Option<std::path::PathBuf>,
    /// PLAIN client user name.
    #[arg(long, help_heading = "Security")]
    pub plain_user: Option<String>,
    /// PLAIN client password.
    #[arg(
        long,
        env = "ZMESH_PLAIN_PASSWORD",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub plain_password: Option<String>,
    /// Sign sent and verify received messages with HMAC-SHA256 using this key file.
    #[arg(long, help_heading = "Security")]
    pub hmac_key_file: Option<std::path::PathBuf>,
    /// Key id carried in signatures (with --hmac-key-file).
    #[arg(long, default_value = "default", help_heading = "Security")]
    pub key_id: String,
    /// Accepted clock difference for signed messages, in ms (also the replay window).
    #[arg(long, default_value_t = 30_000, help_heading = "Security")]
    pub signature_window_ms: u64,
}

impl SecurityArgs {
    fn policy(&self) -> anyhow::Result<AuthPolicy> {
        let mut p = AuthPolicy::new();
        for net in &self.allow {
            p = p.allow_cidr(net).map_err(|e| UsageError(e.to_string()))?;
        }
        for net in &self.deny {
            p = p.deny_cidr(net).map_err(|e| UsageError(e.to_string()))?;
        }
        if let Some(dir) = &self.curve_allow_dir {
            p = p.allowed_keys_dir(dir).map_err(usage)?;
        }
        if let Some(f) = &self.plain_passwords {
            p = p.password_file(f).map_err(usage)?;
        }
        Ok(p)
    }

    /// The socket security these flags describe.
    pub fn security(&self) -> anyhow::Result<Security> {
        let own_keys = || -> anyhow::Result<Option<KeyPair>> {
            self.curve_secret_key_file
                .as_ref()
                .map(|f| KeyPair::load(f).map_err(usage))
                .transpose()
        };
        let modes = [
            self.curve_server,
            self.curve_server_key.is_some(),
            self.plain_passwords.is_some(),
            self.plain_user.is_some(),
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(UsageError(
                "choose one of --curve-server, --curve-server-key, --plain-passwords, --plain-user"
                    .into(),
            )
            .into());
        }
        if self.curve_server {
            let keys = own_keys()?
                .ok_or_else(|| UsageError("--curve-server needs --curve-secret-key-file".into()))?;
            return Ok(Security::CurveServer {
                keys,
                policy: self.policy()?,
            });
        }
        if let Some(server) = &self.curve_server_key {
            let server = security::keys::public_key_from_arg(server).map_err(usage)?;
            // Without our own certificate, a fresh key pair: fine unless the server checks client keys.
            let keys = own_keys()?.unwrap_or_else(KeyPair::generate);
            return Ok(Security::CurveClient { keys, server });
        }
        if self.plain_passwords.is_some() {
            return Ok(Security::PlainServer {
                policy: self.policy()?,
            });
        }
        if let Some(user) = &self.plain_user {
            let password = self.plain_password.clone().unwrap_or_default();
            return Ok(Security::PlainClient {
                username: user.clone(),
                password,
            });
        }
        if self.curve_allow_dir.is_some() {
            return Err(UsageError("--curve-allow-dir needs --curve-server".into()).into());
        }
        if !self.allow.is_empty() || !self.deny.is_empty() {
            return Ok(Security::NullServer {
                policy: self.policy()?,
            });
        }
        Ok(Security::Null)
    }

    /// `o` with the security and signing these flags describe.
    pub fn apply(&self, o: SocketOptions) -> anyhow::Result<SocketOptions> {
        let mut o = o.security(self.security()?);
        if let Some((signer, verifier)) = self.signing()? {
            o = o.sign_with(signer).verify_with(verifier);
        }
        Ok(o)
    }

    fn signing(&self) -> anyhow::Result<Option<(Signer, Verifier)>> {
        let Some(path) = &self.hmac_key_file else {
            return Ok(None);
        };
        let key =
            std::fs::read(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        let key = key.trim_ascii().to_vec();
        if key.len() < 16 {
            return Err(UsageError(format!(
                "{}: an HMAC key needs at least 16 bytes",
                path.display()
            ))
            .into());
        }
        let signer = Signer::new(self.key_id.clone(), SigningKey::Hmac(key))
            .map_err(|e| UsageError(e.to_string()))?;
        let mut verifier = Verifier::new(self.signature_window_ms);
        verifier.add_key(self.key_id.clone(), signer.key().verifying_key());
        Ok(Some((signer, verifier)))
    }
}

fn usage(e: security::KeyError) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

impl SocketArgs {
    /// The options these flags describe.
    pub fn options(&self) -> anyhow::Result<SocketOptions> {
        let mut o = SocketOptions::default()
            .backoff(
                Duration::from_millis(self.reconnect_ms),
                Duration::from_millis(self.reconnect_max_ms),
            )
            .send_hwm(self.hwm)
            .recv_hwm(self.hwm)
            .linger(Duration::from_millis(self.linger_ms))
            .max_message_size(Some(self.max_message_size));
        o = if self.heartbeat_ms == 0 {
            o.no_heartbeat()
        } else {
            o.heartbeat_interval(Duration::from_millis(self.heartbeat_ms))
                .heartbeat_timeout(Duration::from_millis(self.heartbeat_timeout_ms))
        };
        if let Some(id) = &self.identity {
            o = o.identity(id.clone().into_bytes());
        }
        self.security.apply(o)
    }
}
