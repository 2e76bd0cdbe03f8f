//! `zmesh broker --config FILE`: the broker's settings from a TOML file,
//! under flags and environment variables. Precedence: flag > environment >
//! file > built-in default. Every key is checked at start; an error names the
//! key and the problem.

use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

use crate::broker_args::BrokerCmd;

/// The file: one `[broker]` table.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Broker settings.
    #[serde(default)]
    pub broker: BrokerSection,
}

/// `[broker]`: the same names as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    pub bind: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub no_queues: Option<bool>,
    pub idempotent: Option<Vec<String>>,
    pub rate_limit: Option<Vec<String>>,
    pub route: Option<Vec<String>>,
    pub worker_heartbeat_ms: Option<u64>,
    pub worker_busy_max_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub queue_max: Option<usize>,
    pub group_commit_ms: Option<u64>,
    pub group_commit_bytes: Option<u64>,
    pub segment_mib: Option<u64>,
    pub queue_memory_mib: Option<u64>,
    pub peer_outbox_soft_mib: Option<u64>,
    pub peer_outbox_hard_mib: Option<u64>,
    pub outbox_mib: Option<u64>,
    pub admin_bind: Option<String>,
    pub admin_token: Option<String>,
    pub admin_host: Option<Vec<String>>,
    pub drain_timeout_ms: Option<u64>,
    pub cluster: Option<String>,
    pub node_id: Option<u64>,
    pub peers: Option<Vec<String>>,
    pub advertise: Option<String>,
    pub cluster_snapshot_entries: Option<u64>,
    pub security: Option<SecuritySection>,
}

/// `[broker.security]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Serve CURVE with this secret key file (`zmesh keygen`).
    pub curve_secret_key_file: Option<PathBuf>,
    /// Admit only clients whose public keys are in this directory.
    pub curve_allow_dir: Option<PathBuf>,
    /// CIDR ranges to admit.
    pub allow: Option<Vec<String>>,
    /// CIDR ranges to refuse.
    pub deny: Option<Vec<String>>,
    /// PLAIN user:password file.
    pub plain_passwords: Option<PathBuf>,
}

/// A configuration mistake, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {problem}")]
pub struct ConfigError {
    file: String,
    problem: String,
}

fn from_user(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Check an endpoint the broker can bind.
pub fn check_endpoint(ep: &str) -> Result<(), String> {
    let ok = if let Some(rest) = ep.strip_prefix("tcp://") {
        rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && (port == "*" || port.parse::<u16>().is_ok())
        })
    } else if let Some(rest) = ep.strip_prefix("ipc://") {
        !rest.is_empty()
    } else if let Some(rest) = ep.strip_prefix("inproc://") {
        !rest.is_empty()
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{ep:?} is not an endpoint (expected tcp://HOST:PORT, ipc://PATH or inproc://NAME)"
        ))
    }
}

/// Apply `path` under the flags and environment already in `cmd`, then
/// validate the result.
pub fn apply(cmd: &mut BrokerCmd, m: &ArgMatches, path: Option<&Path>) -> Result<(), ConfigError> {
    let file_name = path.map_or("(flags)".to_owned(), |p| p.display().to_string());
    let err = |problem: String| ConfigError {
        file: file_name.clone(),
        problem,
    };
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        // Not the error's Display: it quotes the offending line, which may hold a secret.
        let file: ConfigFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            err(match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_owned(),
            })
        })?;
        let b = file.broker;
        macro_rules! take {
            ($field:ident) => {
                if !from_user(m, stringify!($field))
                    && let Some(v) = b.$field
                {
                    cmd.$field = v;
                }
            };
            ($field:ident, opt) => {
                if !from_user(m, stringify!($field)) && b.$field.is_some() {
                    cmd.$field = b.$field;
                }
            };
        }
        take!(bind);
        take!(data_dir);
        take!(no_queues);
        take!(idempotent);
        take!(rate_limit);
        take!(route);
        take!(worker_heartbeat_ms);
        take!(worker_busy_max_ms);
        take!(request_timeout_ms);
        take!(queue_max);
        take!(group_commit_ms);
        take!(group_commit_bytes);
        take!(segment_mib);
        take!(queue_memory_mib);
        take!(peer_outbox_soft_mib);
        take!(peer_outbox_hard_mib);
        take!(outbox_mib);
        take!(admin_bind, opt);
        take!(admin_token, opt);
        take!(admin_host);
        take!(drain_timeout_ms);
        take!(cluster, opt);
        take!(node_id, opt);
        take!(peers);
        take!(advertise, opt);
        take!(cluster_snapshot_entries);
        if let Some(s) = b.security {
            let sec = &mut cmd.socket.security;
            if !from_user(m, "curve_secret_key_file") && s.curve_secret_key_file.is_some() {
                sec.curve_secret_key_file = s.curve_secret_key_file;
                sec.curve_server = true;
            }
            if !from_user(m, "curve_allow_dir") && s.curve_allow_dir.is_some() {
                sec.curve_allow_dir = s.curve_allow_dir;
            }
            if !from_user(m, "allow")
                && let Some(v) = s.allow
            {
                sec.allow = v;
            }
            if !from_user(m, "deny")
                && let Some(v) = s.deny
            {
                sec.deny = v;
            }
            if !from_user(m, "plain_passwords") && s.plain_passwords.is_some() {
                sec.plain_passwords = s.plain_passwords;
            }
        }
    }
    // A secret key means serving CURVE, wherever the key came from (flag,
    // environment or file): never a key on disk and a NULL broker.
    if cmd.socket.security.curve_secret_key_file.is_some() {
        cmd.socket.security.curve_server = true;
    }
    validate(cmd).map_err(err)
}

fn validate(cmd: &BrokerCmd) -> Result<(), String> {
    if cmd.bind.is_empty() {
        return Err("broker.bind: at least one endpoint".into());
    }
    for (i, ep) in cmd.bind.iter().enumerate() {
        check_endpoint(ep).map_err(|e| format!("broker.bind[{i}]: {e}"))?;
    }
    if cmd
        .admin_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err("broker.admin_token: empty (leave it out to refuse every change)".into());
    }
    for (i, h) in cmd.admin_host.iter().enumerate() {
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        if !ok {
            return Err(format!(
                "broker.admin_host[{i}]: {h:?} is not a host name (letters, digits, '-' and '.')"
            ));
        }
    }
    if let Some(a) = &cmd.admin_bind {
        a.parse::<std::net::SocketAddr>().map_err(|_| {
            format!("broker.admin_bind: {a:?} is not HOST:PORT (e.g. 127.0.0.1:8222)")
        })?;
    }
    if cmd.worker_heartbeat_ms == 0
        || cmd.worker_busy_max_ms == 0
        || cmd.request_timeout_ms == 0
        || cmd.queue_max == 0
    {
        return Err(
            "broker.worker_heartbeat_ms, worker_busy_max_ms, request_timeout_ms and queue_max must be positive".into(),
        );
    }
    if cmd.segment_mib == 0 || cmd.segment_mib > 4096 {
        return Err("broker.segment_mib must be 1 to 4096".into());
    }
    if cmd.queue_memory_mib == 0 || cmd.queue_memory_mib > 1 << 30 {
        return Err("broker.queue_memory_mib must be 1 to 1073741824".into());
    }
    if cmd.peer_outbox_soft_mib == 0
        || cmd.peer_outbox_soft_mib > cmd.peer_outbox_hard_mib
        || cmd.peer_outbox_hard_mib > cmd.outbox_mib
        || cmd.outbox_mib > 1 << 20
    {
        return Err(
            "broker outbox bounds need 0 < peer_outbox_soft_mib <= peer_outbox_hard_mib <= outbox_mib <= 1048576"
                .into(),
        );
    }
    cluster_members(cmd)?;
    let sec = &cmd.socket.security;
    for (key, p) in [
        (
            "broker.security.curve_secret_key_file",
            &sec.curve_secret_key_file,
        ),
        ("broker.security.curve_allow_dir", &sec.curve_allow_dir),
        ("broker.security.plain_passwords", &sec.plain_passwords),
    ] {
        if let Some(p) = p
            && !p.exists()
        {
            return Err(format!("{key}: {} does not exist", p.display()));
        }
    }
    Ok(())
}

/// The cluster this broker joins, if it is one of a cluster: its name, this
/// node's id and every node's cluster endpoint by id.
pub type ClusterMembers = (String, u64, std::collections::BTreeMap<u64, String>);

/// Where clients reach this node, as it advertises it to the cluster:
/// `advertise` if set, else `bound` (the first client endpoint as bound)
/// with a wildcard host replaced by the host of `cluster_endpoint` (this
/// node's entry in the peers), which the other nodes reach it by.
pub fn client_endpoint(advertise: Option<&str>, bound: &str, cluster_endpoint: &str) -> String {
    if let Some(advertise) = advertise {
        return advertise.to_owned();
    }
    let host_of = |ep: &str| {
        ep.strip_prefix("tcp://")
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(host, port)| (host.to_owned(), port.to_owned()))
    };
    match (host_of(bound), host_of(cluster_endpoint)) {
        (Some((host, port)), Some((cluster_host, _)))
            if matches!(host.as_str(), "*" | "0.0.0.0" | "[::]" | "::") =>
        {
            format!("tcp://{cluster_host}:{port}")
        }
        _ => bound.to_owned(),
    }
}

/// Checks the cluster settings: all three or none, ids unique, this node
/// among them, each endpoint a TCP one.
pub fn cluster_members(cmd: &BrokerCmd) -> Result<Option<ClusterMembers>, String> {
    let name = match (&cmd.cluster, cmd.node_id, cmd.peers.is_empty()) {
        (None, None, true) => return Ok(None),
        (Some(name), Some(_), false) => name,
        _ => {
            return Err(
                "broker.cluster, broker.node_id and broker.peers go together: set all three or none"
                    .into(),
            );
        }
    };
    if name.trim().is_empty() {
        return Err("broker.cluster: empty".into());
    }
    if cmd.no_queues {
        return Err(
            "broker.cluster: a cluster agrees on queues; it needs them (no no_queues)".into(),
        );
    }
    let mut members = std::collections::BTreeMap::new();
    for (i, peer) in cmd.peers.iter().enumerate() {
        let (id, endpoint) = peer
            .split_once('=')
            .ok_or_else(|| format!("broker.peers[{i}]: {peer:?} is not ID=ENDPOINT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("broker.peers[{i}]: {id:?} is not a node id (a number)"))?;
        let endpoint = endpoint.trim();
        if !endpoint.starts_with("tcp://") || endpoint.contains('*') {
            return Err(format!(
                "broker.peers[{i}]: {endpoint:?}: a cluster endpoint is tcp://HOST:PORT that the other nodes can reach"
            ));
        }
        check_endpoint(endpoint).map_err(|e| format!("broker.peers[{i}]: {e}"))?;
        if members.values().any(|e| e == endpoint) {
            return Err(format!(
                "broker.peers[{i}]: {endpoint} is listed for two nodes"
            ));
        }
        if members.insert(id, endpoint.to_owned()).is_some() {
            return Err(format!("broker.peers[{i}]: node {id} is listed twice"));
        }
    }
    let node_id = cmd.node_id.expect("checked above");
    if !members.contains_key(&node_id) {
        return Err(format!(
            "broker.node_id: {node_id} is not among broker.peers ({:?})",
            members.keys().collect::<Vec<_>>()
        ));
    }
    if let Some(advertise) = &cmd.advertise {
        check_endpoint(advertise).map_err(|e| format!("broker.advertise: {e}"))?;
    }
    Ok(Some((name.clone(), node_id, members)))
}

/// The effective settings as TOML, secrets hidden.
pub fn effective(cmd: &BrokerCmd) -> String {
    let sec = &cmd.socket.security;
    let file = ConfigFile {
        broker: BrokerSection {
            bind: Some(cmd.bind.clone()),
            data_dir: Some(cmd.data_dir.clone()),
            no_queues: Some(cmd.no_queues),
            idempotent: Some(cmd.idempotent.clone()),
            rate_limit: Some(cmd.rate_limit.clone()),
            route: Some(cmd.route.clone()),
            worker_heartbeat_ms: Some(cmd.worker_heartbeat_ms),
            worker_busy_max_ms: Some(cmd.worker_busy_max_ms),
            request_timeout_ms: Some(cmd.request_timeout_ms),
            queue_max: Some(cmd.queue_max),
            group_commit_ms: Some(cmd.group_commit_ms),
            group_commit_bytes: Some(cmd.group_commit_bytes),
            segment_mib: Some(cmd.segment_mib),
            queue_memory_mib: Some(cmd.queue_memory_mib),
            peer_outbox_soft_mib: Some(cmd.peer_outbox_soft_mib),
            peer_outbox_hard_mib: Some(cmd.peer_outbox_hard_mib),
            outbox_mib: Some(cmd.outbox_mib),
            admin_bind: cmd.admin_bind.clone(),
            admin_token: cmd.admin_token.as_ref().map(|_| "(set, hidden)".to_owned()),
            admin_host: Some(cmd.admin_host.clone()),
            drain_timeout_ms: Some(cmd.drain_timeout_ms),
            cluster: cmd.cluster.clone(),
            node_id: cmd.node_id,
            peers: Some(cmd.peers.clone()),
            advertise: cmd.advertise.clone(),
            cluster_snapshot_entries: Some(cmd.cluster_snapshot_entries),
            security: Some(SecuritySection {
                curve_secret_key_file: sec.curve_secret_key_file.clone(),
                curve_allow_dir: sec.curve_allow_dir.clone(),
                allow: Some(sec.allow.clone()),
                deny: Some(sec.deny.clone()),
                plain_passwords: sec.plain_passwords.clone(),
            }),
        },
    };
    toml::to_string_pretty(&file).expect("settings serialize")
}

#[cfg(test)]
mod tests {
    use super::client_endpoint;

    #[test]
    fn the_client_endpoint_takes_the_peers_host_for_a_wildcard() {
        let cluster = "tcp://10.0.0.1:5570";
        assert_eq!(
            client_endpoint(None, "tcp://0.0.0.0:5555", cluster),
            "tcp://10.0.0.1:5555"
        );
        assert_eq!(
            client_endpoint(None, "tcp://*:5555", cluster),
            "tcp://10.0.0.1:5555"
        );
        assert_eq!(
            client_endpoint(None, "tcp://192.168.1.4:5555", cluster),
            "tcp://192.168.1.4:5555"
        );
        assert_eq!(
            client_endpoint(Some("tcp://broker-1.example:5555"), "tcp://*:5555", cluster),
            "tcp://broker-1.example:5555"
        );
        assert_eq!(
            client_endpoint(None, "ipc:///tmp/zmesh", cluster),
            "ipc:///tmp/zmesh"
        );
    }
}
