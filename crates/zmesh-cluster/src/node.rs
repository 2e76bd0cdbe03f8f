//! One node of a cluster: its metadata group's Raft (over its log and
//! catalog), its shard groups' Rafts, and its cluster endpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::sync::{mpsc, watch};
use zmesh_log::LogConfig;

use crate::catalog::{CatalogError, CatalogMachine, CatalogView};
use crate::log_store::{LogStore, LogStoreError};
use crate::propose::{Applied, PROPOSE_LIMIT, ProposeError, propose_here};
use crate::shard::{COMMITTED_QUEUE_MAX, ShardMachine, ShardUpdate, shard_of};
use crate::snapshot_file::SnapshotFileError;
use crate::transport::{Answer, CallError, Groups, Links, Me, Rpc, Server, ServesRpc};
use crate::types::{Command, GroupId, METADATA_GROUP, NodeId, Outcome, Types};

/// Shard groups a cluster has unless configured otherwise: one per node of
/// a three-node cluster, so each node can lead one.
pub const SHARDS_DEFAULT: u32 = 3;

/// Entries one AppendEntries of a shard carries at most.
const SHARD_ENTRIES_PER_APPEND: u64 = 32;

/// Shard groups a cluster may have: each costs heartbeats and an fsync stream.
pub const SHARDS_MAX: u32 = 64;

/// Entries between two snapshots of a shard. A snapshot encodes every
/// message of the shard, bodies included; an entry is a batch of up to a
/// MiB, so the log between snapshots is bounded by entries, not bytes.
pub const SHARD_SNAPSHOT_EVERY_ENTRIES: u64 = 4096;

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
    /// How many shard groups hold the queues (1 to [`SHARDS_MAX`]); every
    /// node of a cluster must have the same number, for ever: it decides
    /// which shard a queue lives in.
    pub shards: u32,
    /// A shard takes a snapshot (and purges its log below it) after this
    /// many entries; [`SHARD_SNAPSHOT_EVERY_ENTRIES`] unless testing.
    pub shard_snapshot_every_entries: u64,
}

/// Why a node stopped advertising its client endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    #[error("the catalog refused the client endpoint: {0}")]
    Refused(String),
    #[error("the node stopped: {0}")]
    Stopped(String),
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
    #[error("the log of group {group}: {source}")]
    Log {
        group: GroupId,
        source: LogStoreError,
    },
    #[error("the catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("shard {group}: {source}")]
    ShardSnapshot {
        group: GroupId,
        source: SnapshotFileError,
    },
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
    timing: Timing,
    raft: Raft<Types, CatalogMachine>,
    /// Shard group `g` is `shards[g - 1]`.
    shards: Vec<Raft<Types, ShardMachine>>,
    /// What the shards commit, until the application takes it.
    committed: Mutex<Option<mpsc::Receiver<ShardUpdate>>>,
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

        if !(1..=SHARDS_MAX).contains(&config.shards) {
            return Err(StartError::Config(format!(
                "a cluster has 1 to {SHARDS_MAX} shards, not {}",
                config.shards
            )));
        }
        if config.shard_snapshot_every_entries < 2 {
            return Err(StartError::Config(format!(
                "a shard snapshots every 2 entries or more, not {}",
                config.shard_snapshot_every_entries
            )));
        }
        let catalog_machine = CatalogMachine::open(&group_dir(&config, METADATA_GROUP)?)?;
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
        let start = GroupStart {
            config: &config,
            raft_config: Arc::new(raft_config),
            links: &links,
            groups: &groups,
        };
        let raft = start.group(METADATA_GROUP, catalog_machine).await?;
        let shard_start = GroupStart {
            raft_config: Arc::new(openraft::Config {
                snapshot_policy: SnapshotPolicy::LogsSinceLast(config.shard_snapshot_every_entries),
                // Kept below a snapshot for followers a little behind: a
                // snapshot holds every message body of the shard.
                max_in_snapshot_log_to_keep: config.shard_snapshot_every_entries / 4,
                // An entry is a batch of up to a MiB (more for one large
                // message): 32 of them stay well within a frame.
                max_payload_entries: SHARD_ENTRIES_PER_APPEND,
                ..(*start.raft_config).clone()
            }),
            ..start.clone()
        };
        let (to_application, committed) = mpsc::channel(COMMITTED_QUEUE_MAX);
        let mut shards = Vec::new();
        for group in 1..=config.shards {
            let machine =
                ShardMachine::open(group, &group_dir(&config, group)?, to_application.clone())
                    .map_err(|source| StartError::ShardSnapshot { group, source })?;
            // Before any entry: they follow the snapshot.
            machine
                .hand_over_restored()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            shards.push(shard_start.group(group, machine).await?);
        }
        Ok(ClusterNode {
            node_id: config.node_id,
            timing: config.timing,
            raft,
            shards,
            committed: Mutex::new(Some(committed)),
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

    /// Follows the metadata group's leader this node knows of.
    pub fn watch_leader(&self) -> watch::Receiver<Option<NodeId>> {
        follow_leader(&self.raft)
    }

    /// Follows the leader of `group` this node knows of (none, for a group
    /// this node does not have).
    pub fn watch_leader_of(&self, group: GroupId) -> watch::Receiver<Option<NodeId>> {
        match group {
            METADATA_GROUP => follow_leader(&self.raft),
            shard => match self.shard(shard) {
                Some(raft) => follow_leader(raft),
                None => watch::channel(None).1,
            },
        }
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
        self.propose_in(METADATA_GROUP, command).await
    }

    /// Proposes a command to `group`, as [`ClusterNode::propose`] does.
    /// One made while the group has no leader, or whose leader cannot be
    /// reached (nothing was sent), waits for another leader and is tried
    /// again, within twice the longest election timeout in all (an election
    /// may change its mind on the way).
    pub async fn propose_in(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Applied, ProposeError> {
        let deadline = tokio::time::Instant::now() + 2 * self.timing.election_timeout_max;
        loop {
            let answer = self.propose_once(group, command.clone()).await;
            let avoid = match &answer {
                Err(ProposeError::NotLeader { leader: None }) => None,
                Err(ProposeError::LeaderUnreachable { leader, .. }) => Some(*leader),
                _ => return answer,
            };
            let mut leader = self.watch_leader_of(group);
            let known = *leader.borrow();
            let another = async {
                if known.is_some() && known != avoid {
                    // A leader named already, yet no leader took it: this
                    // node's vote is not settled (an election is under
                    // way), and settling it changes no leader in the
                    // metrics. Try again after a heartbeat.
                    tokio::time::sleep(self.timing.heartbeat).await;
                    return Ok(());
                }
                leader
                    .wait_for(|l| l.is_some() && *l != avoid)
                    .await
                    .map(|_| ())
            };
            if !matches!(tokio::time::timeout_at(deadline, another).await, Ok(Ok(()))) {
                return answer;
            }
        }
    }

    /// Records `client_endpoint` as where clients reach this node, in the
    /// catalog every node reads (`CatalogView::client_endpoints`): a node
    /// that does not serve a client's request names the node that does.
    /// Proposes until the catalog holds it, pausing between tries (the
    /// cluster may have no quorum yet); ends early only when the node stops
    /// or the catalog refuses the endpoint.
    pub async fn advertise(&self, client_endpoint: &str) -> Result<(), AdvertiseError> {
        let mut catalog = self.catalog();
        let mut pause = self.timing.heartbeat;
        loop {
            let recorded = catalog
                .borrow_and_update()
                .client_endpoints
                .get(&self.node_id)
                == Some(&client_endpoint.to_owned());
            if recorded {
                return Ok(());
            }
            let command = Command::AdvertiseNode {
                node: self.node_id,
                client_endpoint: client_endpoint.to_owned(),
            };
            match self.propose(command).await {
                Ok(applied) => {
                    if let Outcome::Refused { reason } = applied.outcome {
                        return Err(AdvertiseError::Refused(reason));
                    }
                    // Applied on the leader; this node's catalog follows.
                    let _ =
                        tokio::time::timeout(self.timing.election_timeout_max, catalog.changed())
                            .await;
                }
                Err(ProposeError::Stopped(reason)) => return Err(AdvertiseError::Stopped(reason)),
                Err(e) => {
                    tracing::debug!(error = %e, "advertising the client endpoint; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.timing.election_timeout_max);
                }
            }
        }
    }

    async fn propose_once(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Applied, ProposeError> {
        let here = match group {
            METADATA_GROUP => propose_here(&self.raft, command.clone()).await,
            shard => match self.shard(shard) {
                Some(raft) => propose_here(raft, command.clone()).await,
                None => {
                    return Err(ProposeError::Stopped(format!(
                        "this node has no group {group}"
                    )));
                }
            },
        };
        let (leader, endpoint) = match here {
            Err(ProposeError::NotLeader {
                leader: Some(leader),
            }) if leader.0 != self.node_id => leader,
            answer => return answer,
        };
        let link = self.links.link(leader, &endpoint);
        match link
            .call(leader, group, Rpc::Propose(command), FORWARD_LIMIT)
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

    fn shard(&self, group: GroupId) -> Option<&Raft<Types, ShardMachine>> {
        let at = usize::try_from(group).ok()?.checked_sub(1)?;
        self.shards.get(at)
    }

    /// How many shard groups hold the queues.
    pub fn shards(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The shard group `queue` lives in.
    pub fn shard_of(&self, queue: &str) -> GroupId {
        shard_of(queue, self.shards())
    }

    /// What the shards commit, in log order per shard, for the application
    /// to apply (once: later calls get `None`). Applying waits while
    /// [`COMMITTED_QUEUE_MAX`] batches wait here.
    pub fn take_committed(&self) -> Option<mpsc::Receiver<ShardUpdate>> {
        self.committed.lock().expect("committed lock").take()
    }

    /// Stops the node's Raft and closes its endpoint.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node = self.node_id, "raft did not stop cleanly: {e}");
        }
        for (at, shard) in self.shards.iter().enumerate() {
            if let Err(e) = shard.shutdown().await {
                tracing::warn!(
                    node = self.node_id,
                    group = at + 1,
                    "raft did not stop cleanly: {e}"
                );
            }
        }
        self.server.shutdown().await;
    }
}

/// Follows the leader `raft` knows of, until the receiver is dropped.
fn follow_leader<SM>(raft: &Raft<Types, SM>) -> watch::Receiver<Option<NodeId>>
where
    SM: RaftStateMachine<Types>,
{
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(metrics.borrow_watched().current_leader);
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

/// The directory of `group`'s log (and snapshot), created if new.
fn group_dir(config: &NodeConfig, group: GroupId) -> Result<PathBuf, StartError> {
    let dir = match group {
        METADATA_GROUP => config.dir.join("metadata"),
        shard => config.dir.join(format!("shard-{shard}")),
    };
    std::fs::create_dir_all(&dir).map_err(|source| StartError::Dir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// What starting each group of a node shares.
#[derive(Clone)]
struct GroupStart<'a> {
    config: &'a NodeConfig,
    raft_config: Arc<openraft::Config>,
    links: &'a Links,
    groups: &'a Groups,
}

impl GroupStart<'_> {
    /// Opens `group`'s log, starts its Raft over `machine`, makes it answer
    /// peers, and proposes the configured membership if it never joined a
    /// cluster (every node proposing the same one is safe: the vote elects
    /// one leader).
    async fn group<SM>(&self, group: GroupId, machine: SM) -> Result<Raft<Types, SM>, StartError>
    where
        SM: RaftStateMachine<Types, SnapshotData = std::io::Cursor<Vec<u8>>>,
    {
        let dir = group_dir(self.config, group)?;
        let log = LogStore::<Types>::open(&dir.join("log"), LogConfig::default())
            .map_err(|source| StartError::Log { group, source })?;
        let raft = Raft::new(
            self.config.node_id,
            self.raft_config.clone(),
            self.links.clone().for_group(group),
            log,
            machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let serves: Arc<dyn ServesRpc> = Arc::new(raft.clone());
        self.groups
            .lock()
            .expect("groups lock")
            .insert(group, serves);

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<NodeId, BasicNode> = self
                .config
                .members
                .iter()
                .map(|(id, endpoint)| (*id, BasicNode::new(endpoint)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {}
                // Another node's membership entry got here first: the
                // cluster is formed, which is what initializing is for.
                Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::debug!(
                        node = self.config.node_id,
                        group,
                        "already initialized: {e}"
                    );
                }
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        Ok(raft)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
