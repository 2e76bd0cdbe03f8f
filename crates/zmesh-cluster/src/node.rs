//! One node of a cluster: its metadata group's Raft, over its log and catalog,
//! and its cluster endpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::watch;
use zmesh_log::LogConfig;

use crate::catalog::{CatalogError, CatalogMachine, CatalogView};
use crate::log_store::{LogStore, LogStoreError};
use crate::propose::{Applied, PROPOSE_LIMIT, ProposeError, propose_here};
use crate::transport::{Answer, CallError, Groups, Links, Me, Rpc, Server};
use crate::types::{Command, METADATA_GROUP, NodeId, Types};

/// How long a follower waits for the leader to apply a proposal it forwarded:
/// longer than the leader itself waits (its lease, then the write), so the
/// leader's own answer comes back when there is one.
const FORWARD_LIMIT: Duration = PROPOSE_LIMIT.saturating_add(Duration::from_secs(3));

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
    #[error("creating the cluster directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
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

/// A running cluster node.
pub struct ClusterNode {
    node_id: NodeId,
    raft: Raft<Types, CatalogMachine>,
    catalog: watch::Receiver<CatalogView>,
    server: Server,
    links: Links,
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
        std::fs::create_dir_all(&dir).map_err(|source| StartError::Dir {
            path: dir.clone(),
            source,
        })?;
        let log = LogStore::<Types>::open(&dir.join("log"), LogConfig::default())?;
        let catalog_machine = CatalogMachine::open(&dir)?;
        let catalog = catalog_machine.subscribe();

        let groups: Groups = Arc::new(Mutex::new(HashMap::new()));
        let undecodable = Arc::new(AtomicU64::new(0));
        let me = Me {
            cluster: config.cluster_name.clone(),
            node: config.node_id,
        };
        let server = Server::bind(&own_endpoint, me, groups.clone(), undecodable.clone())
            .await
            .map_err(|source| StartError::Bind {
                endpoint: own_endpoint.clone(),
                source,
            })?;
        let links = Links::new(&config.cluster_name, config.node_id, undecodable.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            links.clone().for_group(METADATA_GROUP),
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
            match raft.initialize(members).await {
                Ok(()) => {}
                // Another node's membership entry got here first: the
                // cluster is formed, which is what initializing is for.
                Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::debug!(node = config.node_id, "already initialized: {e}");
                }
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        Ok(ClusterNode {
            node_id: config.node_id,
            raft,
            catalog,
            server,
            links,
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
    /// on the leader (a quorum has it durable). A follower forwards it to the
    /// leader it knows of, once: a leader that moved meanwhile answers
    /// `NotLeader`, and the caller tries again.
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        let (leader, endpoint) = match propose_here(&self.raft, command.clone()).await {
            Err(ProposeError::NotLeader {
                leader: Some(leader),
            }) if leader.0 != self.node_id => leader,
            answer => return answer,
        };
        let link = self.links.link(leader, &endpoint);
        match link
            .call(leader, METADATA_GROUP, Rpc::Propose(command), FORWARD_LIMIT)
            .await
        {
            Ok(Answer::Proposed(answer)) => answer,
            Ok(_) => Err(ProposeError::Unknown {
                reason: format!("node {leader} answered a proposal with something else"),
            }),
            Err(CallError::TimedOut) => Err(ProposeError::Unknown {
                reason: format!("node {leader} did not answer within {FORWARD_LIMIT:?}"),
            }),
            Err(CallError::NotSent(e)) => Err(ProposeError::LeaderUnreachable {
                leader,
                reason: e.to_string(),
            }),
            Err(CallError::Lost(e)) => Err(ProposeError::Unknown {
                reason: format!("forwarded to node {leader}: {e}"),
            }),
        }
    }

    /// Stops the node's Raft and closes its endpoint.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.node_id, "raft did not stop cleanly: {e}");
        }
        self.server.shutdown().await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
