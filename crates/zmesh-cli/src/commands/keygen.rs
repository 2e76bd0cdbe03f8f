//! `zmesh keygen`: CURVE certificates that pyzmq and CZMQ read as they are.

use std::path::PathBuf;

use clap::Args;
use zmesh::security::KeyPair;
use zmesh::security::keys::write_key_pair;

use super::UsageError;

/// Options of `zmesh keygen`.
#[derive(Args, Debug)]
#[command(
    after_help = "Writes DIR/NAME.key (public, share it) and DIR/NAME.key_secret (mode 600, keep it).
The format is zcert's and pyzmq's (zmq.auth.load_certificate reads it).

Example: a server and a client, the client allowed by the server
  zmesh keygen --dir keys server
  zmesh keygen --dir keys/clients alice
  zmesh rep --bind tcp://*:5555 --echo --curve-server --curve-secret-key-file keys/server.key_secret --curve-allow-dir keys/clients
  zmesh req --connect tcp://127.0.0.1:5555 --curve-server-key keys/server.key --curve-secret-key-file keys/clients/alice.key_secret hi"
)]
pub struct KeygenCmd {
    /// Certificate name (file stem and `name` metadata).
    pub name: String,
    /// Directory to write into (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Replace existing files of that name.
    #[arg(long)]
    pub force: bool,
}

/// Run `zmesh keygen`.
pub async fn run(cmd: KeygenCmd) -> anyhow::Result<i32> {
    let valid = !cmd.name.is_empty()
        && cmd
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        && !cmd.name.starts_with('.');
    if !valid {
        return Err(
            UsageError(format!("name {:?}: use letters, digits, - _ . @", cmd.name)).into(),
        );
    }
    let public = cmd.dir.join(format!("{}.key", cmd.name));
    let secret = cmd.dir.join(format!("{}.key_secret", cmd.name));
    if !cmd.force && (public.exists() || secret.exists()) {
        return Err(UsageError(format!(
            "{} exists; pass --force to replace it",
            public.display()
        ))
        .into());
    }
    let pair = KeyPair::generate();
    let (public, secret) =
        write_key_pair(&cmd.dir, &cmd.name, &pair).map_err(|e| UsageError(e.to_string()))?;
    println!("public key  {}", pair.public);
    println!("public      {}", public.display());
    println!("secret      {}", secret.display());
    Ok(0)
}
