//! `zmesh broker`'s options: flags and environment here; the settings file
//! is layered under them by [`crate::config`].

use clap::Args;

use crate::socket_args::SocketArgs;

/// Default broker endpoint of the tools.
pub const DEFAULT_BROKER: &str = "tcp://127.0.0.1:5555";

/// Options of `zmesh broker`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  zmesh broker --bind tcp://*:5555
  zmesh broker --bind tcp://*:5555 --idempotent resize --rate-limit orders=500 --route orders=orders@v1:95,orders@v2:5")]
pub struct BrokerCmd {
    /// Endpoint(s) for clients and workers; repeatable.
    #[arg(short, long, default_value = DEFAULT_BROKER, env = "ZMESH_BIND", value_delimiter = ',')]
    pub bind: Vec<String>,
    /// Services whose requests may run twice: a dead worker's request goes to another worker.
    #[arg(long, env = "ZMESH_IDEMPOTENT", value_delimiter = ',')]
    pub idempotent: Vec<String>,
    /// SERVICE=N: at most N requests per second (then "429").
    #[arg(long, env = "ZMESH_RATE_LIMIT", value_delimiter = ',')]
    pub rate_limit: Vec<String>,
    /// SERVICE=TARGET:WEIGHT,...: split a service between versions
    /// (repeatable; several in one value, as in ZMESH_ROUTE, separated by `;`).
    #[arg(long, env = "ZMESH_ROUTE", value_delimiter = ';')]
    pub route: Vec<String>,
    /// MDP heartbeat interval with workers, in ms (workers must use the same).
    #[arg(long, default_value_t = 2500, env = "ZMESH_WORKER_HEARTBEAT_MS")]
    pub worker_heartbeat_ms: u64,
    /// How long a 7/MDP worker may hold a request without a word, in ms.
    /// Reference workers send no heartbeats while busy, so a busy one is
    /// ended by its connection closing, or by this limit.
    #[arg(long, default_value_t = 600_000, env = "ZMESH_WORKER_BUSY_MAX_MS")]
    pub worker_busy_max_ms: u64,
    /// How long a request may wait for a worker, in ms (then "503").
    #[arg(long, default_value_t = 10_000, env = "ZMESH_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: u64,
    /// Requests a service may queue.
    #[arg(long, default_value_t = 10_000, env = "ZMESH_QUEUE_MAX")]
    pub queue_max: usize,
    /// Directory of the queues' journal and the streams' logs (created if missing).
    #[arg(long, default_value = "zmesh-data", env = "ZMESH_DATA_DIR")]
    pub data_dir: std::path::PathBuf,
    /// Serve MDP only: no durable queues or streams, nothing written to disk.
    #[arg(long, env = "ZMESH_NO_QUEUES")]
    pub no_queues: bool,
    /// Group commit: longest a confirm waits for its fsync to start, in ms
    /// (0: as soon as the previous fsync ends).
    #[arg(long, default_value_t = 0, env = "ZMESH_GROUP_COMMIT_MS")]
    pub group_commit_ms: u64,
    /// Group commit: unsynced bytes that start an fsync at once.
    #[arg(long, default_value_t = 1 << 20, env = "ZMESH_GROUP_COMMIT_BYTES")]
    pub group_commit_bytes: u64,
    /// Journal segment size in MiB.
    #[arg(long, default_value_t = 64, env = "ZMESH_SEGMENT_MIB")]
    pub segment_mib: u64,
    /// Message bodies the queues keep in memory together, in MiB: past it,
    /// bodies stay on disk only and are read back when needed (each queue
    /// also has its own max_bytes, in memory or not). Bodies waiting for
    /// their write are bounded by as much again, on their own: past that,
    /// while the disk lags, publishes get 503.
    #[arg(long, default_value_t = 4096, env = "ZMESH_QUEUE_MEMORY_MIB")]
    pub queue_memory_mib: u64,
    /// Benchmarks only (feature `slow-disk`): every read of the storage logs
    /// takes this many microseconds longer, a slow disk with no page cache.
    #[cfg(feature = "slow-disk")]
    #[arg(long, hide = true, default_value_t = 0)]
    pub slow_disk_read_us: u64,
    /// Replies and deliveries waiting for one peer that reads slowly, in MiB:
    /// past it the peer gets no new work (requests, deliveries) until half
    /// of it has drained.
    #[arg(long, default_value_t = 8, env = "ZMESH_PEER_OUTBOX_SOFT_MIB")]
    pub peer_outbox_soft_mib: u64,
    /// Past this, in MiB, a peer that reads too slowly is disconnected and
    /// what waited for it is dropped, counted in zmesh_outbox_dropped_messages.
    #[arg(long, default_value_t = 64, env = "ZMESH_PEER_OUTBOX_HARD_MIB")]
    pub peer_outbox_hard_mib: u64,
    /// All peers' waiting messages together, in MiB: past it the peer with
    /// the most waiting is disconnected.
    #[arg(long, default_value_t = 1024, env = "ZMESH_OUTBOX_MIB")]
    pub outbox_mib: u64,
    /// Admin HTTP port (metrics, API, probes), e.g. 127.0.0.1:8222; off when absent.
    #[arg(long, env = "ZMESH_ADMIN_BIND")]
    pub admin_bind: Option<String>,
    /// Token required for changes through the admin API (Bearer).
    #[arg(long, env = "ZMESH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A host name the admin port answers to, besides IP addresses and
    /// localhost (repeatable): requests naming any other host are refused, so
    /// a web page cannot reach the port through DNS rebinding.
    #[arg(long, env = "ZMESH_ADMIN_HOST", value_delimiter = ',')]
    pub admin_host: Vec<String>,
    /// On SIGTERM/SIGINT: how long held requests may take to finish.
    #[arg(long, default_value_t = 10_000, env = "ZMESH_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: u64,
    /// Join the cluster of this name (with --node-id and --peers): queue
    /// declarations and deletions are agreed by the cluster's nodes.
    #[arg(long, env = "ZMESH_CLUSTER")]
    pub cluster: Option<String>,
    /// This broker's id in its cluster; one of the ids in --peers.
    #[arg(long, env = "ZMESH_NODE_ID")]
    pub node_id: Option<u64>,
    /// ID=ENDPOINT of every node of the cluster, this one included: where
    /// each node's cluster traffic goes (apart from clients'), e.g.
    /// 1=tcp://10.0.0.1:5570,2=tcp://10.0.0.2:5570,3=tcp://10.0.0.3:5570.
    #[arg(long, env = "ZMESH_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// In a cluster: where clients reach this broker, as the other nodes
    /// tell clients they redirect (tcp://HOST:PORT). Default: the first
    /// --bind endpoint as bound, a wildcard host (`*`, 0.0.0.0, [::])
    /// replaced by this node's host in --peers.
    #[arg(long, env = "ZMESH_ADVERTISE")]
    pub advertise: Option<String>,
    /// In a cluster: a shard snapshots its queues (every message, bodies
    /// included) and drops its log below the snapshot after this many
    /// entries.
    #[arg(
        long,
        default_value_t = zmesh_cluster::SHARD_SNAPSHOT_EVERY_ENTRIES,
        env = "ZMESH_CLUSTER_SNAPSHOT_ENTRIES",
        value_parser = clap::value_parser!(u64).range(2..)
    )]
    pub cluster_snapshot_entries: u64,
    /// Settings file (TOML, a [broker] table); flags and environment win over it.
    #[arg(long, env = "ZMESH_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective settings and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}
