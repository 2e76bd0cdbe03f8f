//! `zmesh broker`: the Majordomo broker, with its queues, streams and admin
//! port, until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::time::Duration;

use zmesh::{Socket, SocketType};
use zmesh_broker::mdp::{Broker, BrokerConfig, ServicePolicy, parse_routes};

use super::UsageError;
use crate::broker_args::BrokerCmd;

/// A line on stderr that never panics: a broker whose stderr was closed
/// (its parent went away) must keep serving, not die on a status line.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn split_eq<'a>(s: &'a str, flag: &str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once('=')
        .ok_or_else(|| UsageError(format!("{flag} {s:?}: expected SERVICE=...")).into())
}

/// Run the broker until SIGTERM or Ctrl-C (drained), or a second one (at once).
pub async fn run_broker(
    mut cmd: BrokerCmd,
    matches: Option<clap::ArgMatches>,
) -> anyhow::Result<i32> {
    match &matches {
        Some(m) => {
            let path = cmd.config.clone();
            crate::config::apply(&mut cmd, m, path.as_deref())
                .map_err(|e| UsageError(e.to_string()))?;
        }
        None => {
            if cmd.socket.security.curve_secret_key_file.is_some() {
                cmd.socket.security.curve_server = true;
            }
        }
    }
    if cmd.print_config {
        print!("{}", crate::config::effective(&cmd));
        return Ok(0);
    }
    let mut cfg = BrokerConfig {
        heartbeat_interval: Duration::from_millis(cmd.worker_heartbeat_ms),
        worker_busy_max: Duration::from_millis(cmd.worker_busy_max_ms),
        request_timeout: Duration::from_millis(cmd.request_timeout_ms),
        queue_max: cmd.queue_max,
        ..BrokerConfig::default()
    };
    let mut policies: HashMap<String, ServicePolicy> = HashMap::new();
    for s in &cmd.idempotent {
        policies.entry(s.clone()).or_default().idempotent = true;
    }
    for r in &cmd.rate_limit {
        let (svc, n) = split_eq(r, "--rate-limit")?;
        let n = n
            .parse()
            .map_err(|_| UsageError(format!("--rate-limit {r:?}: not a number")))?;
        policies.entry(svc.to_owned()).or_default().rate_limit_per_s = Some(n);
    }
    cfg.policies = policies;
    // An empty entry (a trailing `;` in ZMESH_ROUTE) is nothing to route.
    for r in cmd.route.iter().filter(|r| !r.trim().is_empty()) {
        let (svc, spec) = split_eq(r, "--route")?;
        cfg.routes.insert(
            svc.to_owned(),
            parse_routes(spec).map_err(|e| UsageError(format!("--route {r:?}: {e}")))?,
        );
    }
    // One clock for the loop and both stores: one monotonic origin for every timer.
    let clock = zmesh::clock::SystemClock::shared();
    // Recover the journal before listening: nobody waits on a broker that is replaying.
    let stores = if cmd.no_queues {
        zmesh_broker::driver::Stores::default()
    } else {
        zmesh_broker::driver::Stores {
            queues: Some(open_queues(&cmd, &clock)?),
            streams: Some(open_streams(&cmd, &clock)?),
        }
    };
    // The cluster node is up before "listening" is printed, so its endpoint
    // is printed first.
    let cluster = match crate::config::cluster_members(&cmd).map_err(UsageError)? {
        Some((cluster_name, node_id, members)) => {
            let node = zmesh_cluster::ClusterNode::start(zmesh_cluster::NodeConfig {
                cluster_name: cluster_name.clone(),
                node_id,
                members,
                dir: cmd.data_dir.join("cluster"),
                timing: zmesh_cluster::Timing::default(),
                shards: zmesh_cluster::SHARDS_DEFAULT,
                shard_snapshot_every_entries: cmd.cluster_snapshot_entries,
            })
            .await?;
            note!(
                "zmesh: cluster {cluster_name} node {node_id} on {}",
                node.endpoint()
            );
            // Who leads the catalog and each shard, each time it changes:
            // what an operator (and a test) watches for. A leader known
            // already (starting the shards takes a while) is printed too.
            for group in 0..=node.shards() {
                let what = match group {
                    0 => String::new(),
                    shard => format!(" shard {shard}"),
                };
                let cluster_name = cluster_name.clone();
                let mut leader = node.watch_leader_of(group);
                leader.mark_changed();
                tokio::spawn(async move {
                    let mut printed = None;
                    while leader.changed().await.is_ok() {
                        let now = *leader.borrow_and_update();
                        if now == printed {
                            continue;
                        }
                        printed = now;
                        match now {
                            Some(id) => {
                                note!("zmesh: cluster {cluster_name}: node {id} leads{what}")
                            }
                            None => note!("zmesh: cluster {cluster_name}: no leader{what}"),
                        }
                    }
                });
            }
            Some(std::sync::Arc::new(node))
        }
        None => None,
    };
    // The admin port is up before "listening" is printed: whoever waits for
    // that line can use every port.
    let mut opts = zmesh_broker::driver::RunOptions {
        drain_timeout: Duration::from_millis(cmd.drain_timeout_ms),
        outbox: zmesh_broker::outbox::OutboxLimits {
            peer_soft_bytes: (cmd.peer_outbox_soft_mib << 20) as usize,
            peer_hard_bytes: (cmd.peer_outbox_hard_mib << 20) as usize,
            total_bytes: (cmd.outbox_mib << 20) as usize,
        },
        clock,
        cluster: cluster.clone().map(zmesh_broker::cluster::ClusterLink::new),
        ..Default::default()
    };
    if let Some(addr) = &cmd.admin_bind {
        let (mut state, link) = zmesh_broker::admin::channel(cmd.admin_token.clone());
        state.allowed_hosts = std::sync::Arc::new(
            cmd.admin_host
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        note!("zmesh: admin on http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = zmesh_broker::admin::serve(listener, state).await {
                tracing::error!(error = %e, "admin port stopped");
            }
        });
        opts.admin = Some(link);
    }
    let router = Socket::new(
        SocketType::Router,
        cmd.socket.options()?.name("broker").router_mandatory(true),
    )?;
    let mut bound = Vec::new();
    for ep in &cmd.bind {
        let real = router.bind(ep).await?;
        note!("zmesh: broker listening on {real}");
        bound.push(real);
    }
    // The other nodes name this one to clients they redirect here.
    if let (Some(node), Some(first)) = (&cluster, bound.first()) {
        let endpoint =
            crate::config::client_endpoint(cmd.advertise.as_deref(), first, node.endpoint());
        let node = node.clone();
        tokio::spawn(async move {
            match node.advertise(&endpoint).await {
                Ok(()) => tracing::info!(endpoint, "advertised to the cluster"),
                Err(e) => tracing::warn!(endpoint, error = %e, "not advertised to the cluster"),
            }
        });
    }
    // A file size limit (RLIMIT_FSIZE) must refuse writes with EFBIG, not kill
    // the broker: with a handler installed, SIGXFSZ no longer terminates.
    let _xfsz =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        note!("zmesh: draining (a second signal stops at once)");
        // A second signal forces: exit now, with what is written so far.
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            note!("zmesh: forced stop");
            std::process::exit(130);
        });
    };
    let (_, stores) =
        zmesh_broker::driver::run_with_stores(&router, Broker::new(cfg), stores, opts, shutdown)
            .await?;
    // Dropping the stores flushes and syncs the logs.
    drop(stores);
    if let Some(node) = cluster {
        node.shutdown().await;
    }
    router.close().await?;
    Ok(0)
}

/// The storage log settings the broker's flags choose (queues and streams alike).
fn log_config(cmd: &BrokerCmd) -> zmesh_log::LogConfig {
    #[allow(unused_mut)] // set again with the `slow-disk` feature
    let mut config = zmesh_log::LogConfig {
        segment_bytes_max: cmd.segment_mib.max(1) << 20,
        ..zmesh_log::LogConfig::default()
    };
    #[cfg(feature = "slow-disk")]
    if cmd.slow_disk_read_us > 0 {
        use zmesh_log::faulty::{Faults, Op};
        let faults = Faults::default();
        faults.slow_down(
            Op::Read,
            std::time::Duration::from_micros(cmd.slow_disk_read_us),
        );
        config.files = faults.files();
    }
    config
}

fn open_streams(
    cmd: &BrokerCmd,
    clock: &std::sync::Arc<dyn zmesh::clock::Clock>,
) -> anyhow::Result<zmesh_broker::stream::StreamStore> {
    use zmesh_broker::stream::{StreamStore, StreamStoreConfig};
    let config = StreamStoreConfig {
        data_dir: cmd.data_dir.clone(),
        log: log_config(cmd),
        group_commit_ms: cmd.group_commit_ms,
        group_commit_bytes: cmd.group_commit_bytes,
        clock: clock.clone(),
        ..StreamStoreConfig::default()
    };
    let (store, elapsed) = StreamStore::open(config)?;
    note!("zmesh: streams opened in {} ms", elapsed.as_millis());
    Ok(store)
}

fn open_queues(
    cmd: &BrokerCmd,
    clock: &std::sync::Arc<dyn zmesh::clock::Clock>,
) -> anyhow::Result<zmesh_broker::queue::QueueStore> {
    use zmesh_broker::queue::{QueueStore, QueueStoreConfig};
    let config = QueueStoreConfig {
        data_dir: cmd.data_dir.clone(),
        log: log_config(cmd),
        group_commit_ms: cmd.group_commit_ms,
        group_commit_bytes: cmd.group_commit_bytes,
        core: zmesh_broker::queue::QueueCoreConfig {
            // In a cluster a body is read back from no journal (the shard
            // logs hold them): all stay in memory, within each queue's
            // max_bytes and the broker's messages_max.
            bytes_max: match cmd.cluster {
                Some(_) => u64::MAX,
                None => cmd.queue_memory_mib << 20,
            },
            storing_bytes_max: cmd.queue_memory_mib << 20,
            // In a cluster, a queue's shard leader serves its consumers.
            served_where_led: cmd.cluster.is_some(),
            ..Default::default()
        },
        clock: clock.clone(),
    };
    let (store, report) = QueueStore::open(config)?;
    let r = &report.recovery;
    note!(
        "zmesh: queues in {}: {} messages from {} records in {} ms{}{}",
        cmd.data_dir.display(),
        report.messages,
        report.replayed,
        report.elapsed.as_millis(),
        if r.torn_tail_bytes > 0 {
            format!("; cut a torn tail of {} bytes", r.torn_tail_bytes)
        } else {
            String::new()
        },
        if r.damaged.is_empty() {
            String::new()
        } else {
            format!("; {} damaged ranges skipped (see the log)", r.damaged.len())
        },
    );
    for d in &r.damaged {
        note!(
            "zmesh: damaged journal bytes {:?} in {} (offsets {:?} lost)",
            d.bytes,
            d.path.display(),
            d.offsets_lost
        );
    }
    Ok(store)
}
