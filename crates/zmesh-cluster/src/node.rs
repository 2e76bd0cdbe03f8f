//! One node of a cluster: its metadata group's Raft, over its log and catalog,
//! and its cluster endpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardReason, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use tokio::sync::watch;
use zmesh_log::LogConfig;

use crate::catalog::{CatalogError, CatalogMachine, CatalogView};
use crate::log_store::{LogStore, LogStoreError};
use crate::transport::{Groups, Links, Server};
use crate::types::{Command, METADATA_GROUP, NodeId, Outcome, Types};

/// Raft's clock for a cluster. Elections must not fire on a busy machine's
/// scheduling hiccups, and a dead leader should be replaced in about a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
        }
    }
}

/// What a node needs to join its cluster.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The cluster's name: nodes of another cluster are refused.
    pub cluster_name: String,
    /// This node's id; a key of `members`.
    pub node_id: NodeId,
    /// Every node of the cluster, this one included, by id: its cluster
    /// endpoint (`tcp://host:port`). A node binds its own.
    pub members: BTreeMap<NodeId, String>,
    /// Where this node keeps its Raft logs and snapshots.
    pub dir: PathBuf,
    pub timing: Timing,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("node {0} is not among the cluster's members")]
    NotAMember(NodeId),
    #[error("the cluster settings are invalid: {0}")]
    Config(String),
    #[error("the metadata log: {0}")]
    Log(#[from] LogStoreError),
    #[error("the catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("binding the cluster endpoint {endpoint}: {source}")]
    Bind {
        endpoint: String,
        source: zmesh::Error,
    },
    #[error("raft stopped: {0}")]
    Raft(String),
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; ask `leader` (when one is known) instead.
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader {
        /// The leader's id and cluster endpoint, when known.
        leader: Option<(NodeId, String)>,
    },
    /// The leader changed while the proposal was in flight: it may or may not
    /// have been applied.
    #[error("the leader changed while the proposal was in flight; it may have been applied")]
    Unknown,
    /// The node has stopped.
    #[error("the node has stopped: {0}")]
    Stopped(String),
}

/// A running cluster node.
pub struct ClusterNode {
    node_id: NodeId,
    timing: Timing,
    raft: Raft<Types, CatalogMachine>,
    catalog: watch::Receiver<CatalogView>,
    server: Server,
    _groups: Groups,
    /// Frames from peers that did not decode, requests and replies.
    undecodable: Arc<AtomicU64>,
}

impl ClusterNode {
    /// Opens the node's state in `config.dir`, binds its cluster endpoint and
    /// starts its metadata group. A node that never joined a cluster proposes
    /// the configured membership; every node proposing the same one is safe
    /// (the vote elects one leader).
    pub async fn start(config: NodeConfig) -> Result<ClusterNode, StartError> {
        let own_endpoint = config
            .members
            .get(&config.node_id)
            .cloned()
            .ok_or(StartError::NotAMember(config.node_id))?;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_name.clone(),
            heartbeat_interval: millis(config.timing.heartbeat),
            election_timeout_min: millis(config.timing.election_timeout_min),
            election_timeout_max: millis(config.timing.election_timeout_max),
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;

        let dir = config.dir.join("metadata");
        std::fs::create_dir_all(&dir).map_err(|e| {
            StartError::Catalog(CatalogError::Read {
                path: dir.clone(),
                source: e,
            })
        })?;
        let log = LogStore::<Types>::open(&dir.join("log"), LogConfig::default())?;
        let catalog_machine = CatalogMachine::open(&dir)?;
        let catalog = catalog_machine.subscribe();

        let groups: Groups = Arc::new(Mutex::new(HashMap::new()));
        let undecodable = Arc::new(AtomicU64::new(0));
        let server = Server::bind(&own_endpoint, groups.clone(), undecodable.clone())
            .await
            .map_err(|source| StartError::Bind {
                endpoint: own_endpoint.clone(),
                source,
            })?;
        let links = Links::new(config.node_id, undecodable.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            links.for_group(METADATA_GROUP),
            log,
            catalog_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        groups
            .lock()
            .expect("groups lock")
            .insert(METADATA_GROUP, Arc::new(raft.clone()));

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<NodeId, BasicNode> = config
                .members
                .iter()
                .map(|(id, endpoint)| (*id, BasicNode::new(endpoint)))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                // Another node's membership entry got here first: the
                // cluster is formed, which is what initializing is for.
                tracing::debug!(node = config.node_id, "not initializing: {e}");
            }
        }
        Ok(ClusterNode {
            node_id: config.node_id,
            timing: config.timing,
            raft,
            catalog,
            server,
            _groups: groups,
            undecodable,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The cluster endpoint as bound.
    pub fn endpoint(&self) -> &str {
        self.server.endpoint()
    }

    /// Frames from peers on the cluster endpoint or its links that did not
    /// decode, and were dropped.
    pub fn undecodable_frames(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Follows the leader this node knows of.
    pub fn watch_leader(&self) -> watch::Receiver<Option<NodeId>> {
        let (tx, rx) = watch::channel(self.leader());
        let mut metrics = self.raft.metrics();
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let leader = metrics.borrow_watched().current_leader;
                tx.send_if_modified(|known| std::mem::replace(known, leader) != leader);
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }

    /// Follows this node's catalog as entries are applied.
    pub fn catalog(&self) -> watch::Receiver<CatalogView> {
        self.catalog.clone()
    }

    /// Proposes a command to the metadata group; answers once it is applied
    /// here (a quorum has it durable). Only the leader takes proposals.
    ///
    /// A leader takes writes only while a quorum has acknowledged it within
    /// its lease; one just elected has not yet, so a refusal for that reason
    /// waits for the next acknowledgement and tries again, within one
    /// election timeout. A leader cut off from its quorum keeps refusing, and
    /// the caller hears `NotLeader` without a leader.
    pub async fn propose(&self, command: Command) -> Result<Outcome, ProposeError> {
        let deadline = tokio::time::Instant::now() + self.timing.election_timeout_max;
        loop {
            let refused_at = <openraft::TokioInstant as openraft::Instant>::now();
            let forward = match self.raft.client_write(command.clone()).await {
                Ok(response) => return Ok(response.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f,
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                    return Err(ProposeError::Unknown);
                }
                Err(e) => return Err(ProposeError::Stopped(e.to_string())),
            };
            let not_leader = ProposeError::NotLeader {
                leader: forward.leader_id.zip(forward.leader_node.map(|n| n.addr)),
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if forward.reason != ForwardReason::LeaseExpired || left.is_zero() {
                return Err(not_leader);
            }
            let acknowledged = self
                .raft
                .wait(Some(left))
                .metrics(
                    |m| {
                        m.state != ServerState::Leader
                            || m.last_quorum_acked
                                .as_ref()
                                .is_some_and(|t| **t > refused_at)
                    },
                    "a quorum acknowledges the leader",
                )
                .await;
            if acknowledged.is_err() {
                return Err(not_leader);
            }
        }
    }

    /// Stops the node's Raft and closes its endpoint.
    pub async fn shutdown(self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.node_id, "raft did not stop cleanly: {e}");
        }
        self.server.shutdown().await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
