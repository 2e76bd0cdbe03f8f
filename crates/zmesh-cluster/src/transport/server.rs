//! The server side: a node's ROUTER on its cluster endpoint, answering its
//! peers' RPCs for the groups it has.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::Raft;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::SnapshotOf;
use tokio::sync::{Semaphore, oneshot};
use zmesh::{Message, Socket, SocketType};

use crate::propose::propose_here;
use crate::types::{GroupId, NodeId, Types};

use super::cluster_socket_options;
use super::wire::{Answer, Reply, Request, Rpc};

/// RPCs a node serves at once for one group; past it, the group's next
/// RPC is refused at once (its sender tries again), and other groups are
/// served meanwhile: a group stuck applying cannot starve the others.
const SERVING_PER_GROUP_MAX: usize = 64;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A group's Raft as the server sees it: something that answers RPCs.
pub trait ServesRpc: Send + Sync + 'static {
    fn serve(&self, rpc: Rpc) -> BoxFuture<'_, Answer>;
}

impl<SM> ServesRpc for Raft<Types, SM>
where
    SM: RaftStateMachine<Types, SnapshotData = Cursor<Vec<u8>>>,
{
    fn serve(&self, rpc: Rpc) -> BoxFuture<'_, Answer> {
        Box::pin(async move {
            let refused = |e: &dyn std::fmt::Display| Answer::Refused {
                reason: e.to_string(),
            };
            match rpc {
                Rpc::Append(r) => self
                    .append_entries(r)
                    .await
                    .map_or_else(|e| refused(&e), Answer::Append),
                Rpc::Vote(r) => self
                    .vote(r)
                    .await
                    .map_or_else(|e| refused(&e), Answer::Vote),
                Rpc::PreVote(r) => self
                    .pre_vote(r)
                    .await
                    .map_or_else(|e| refused(&e), Answer::Vote),
                Rpc::Snapshot { vote, meta, data } => {
                    let snapshot = SnapshotOf::<Types, _> {
                        meta,
                        snapshot: Cursor::new(data),
                    };
                    self.install_full_snapshot(vote, snapshot)
                        .await
                        .map_or_else(|e| refused(&e), Answer::Snapshot)
                }
                Rpc::Propose(command) => Answer::Proposed(propose_here(self, command).await),
                Rpc::TransferLeader(r) => self
                    .handle_transfer_leader(r)
                    .await
                    .map_or_else(|e| refused(&e), Answer::TransferLeader),
            }
        })
    }
}

/// The groups a node serves, by id.
pub type Groups = Arc<Mutex<HashMap<GroupId, Arc<dyn ServesRpc>>>>;

/// A node's cluster endpoint: a ROUTER answering its peers' RPCs.
pub struct Server {
    endpoint: String,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Server {
    /// Binds `endpoint` and serves `groups` on it until shut down, counting
    /// undecodable requests in `undecodable`.
    pub async fn bind(
        endpoint: &str,
        me: Me,
        groups: Groups,
        undecodable: Arc<AtomicU64>,
    ) -> Result<Server, zmesh::Error> {
        let router = Socket::new(SocketType::Router, cluster_socket_options())?;
        let endpoint = router.bind(endpoint).await?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            serve(&router, me, groups, stopped, undecodable).await;
            // Closing (not dropping) frees the port at once, for a node
            // restarted in the same process.
            let _ = router.close().await;
        });
        Ok(Server {
            endpoint,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        })
    }

    /// The endpoint as bound (a port of 0 resolved).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops serving and closes the endpoint; the first call does it, and
    /// later ones return at once.
    pub async fn shutdown(&self) {
        self.stop();
        let task = self.task.lock().expect("server lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn stop(&self) {
        if let Some(stop) = self.stop.lock().expect("server lock").take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Who a server answers as: requests for another cluster or node are refused.
pub struct Me {
    pub cluster: String,
    pub node: NodeId,
}

async fn serve(
    router: &Socket,
    me: Me,
    groups: Groups,
    mut stopped: oneshot::Receiver<()>,
    undecodable: Arc<AtomicU64>,
) {
    let mut serving: HashMap<GroupId, Arc<Semaphore>> = HashMap::new();
    loop {
        let message = tokio::select! {
            _ = &mut stopped => return,
            received = router.recv() => match received {
                Ok(m) => m,
                Err(e) => return tracing::warn!("the cluster endpoint stopped: {e}"),
            },
        };
        let (Some(peer), Some(frame)) = (message.frame(0), message.frame_slice(1)) else {
            undecodable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("a cluster request without a body");
            continue;
        };
        let Request {
            cluster,
            to,
            id,
            group,
            rpc,
        } = match Request::decode(frame) {
            Ok(r) => r,
            Err(e) => {
                undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("a cluster request: {e}");
                continue;
            }
        };
        let target = if cluster != me.cluster || to != me.node {
            Err(format!(
                "this is node {} of cluster {:?}, not node {to} of {cluster:?}",
                me.node, me.cluster
            ))
        } else {
            groups
                .lock()
                .expect("groups lock")
                .get(&group)
                .cloned()
                .ok_or_else(|| format!("no group {group} on this node"))
        };
        // Groups are known (or refused just above), so this map is bounded.
        let permit = match &target {
            Ok(_) => serving
                .entry(group)
                .or_insert_with(|| Arc::new(Semaphore::new(SERVING_PER_GROUP_MAX)))
                .clone()
                .try_acquire_owned()
                .ok(),
            Err(_) => None,
        };
        let target = match (target, &permit) {
            (Ok(_), None) => Err(format!(
                "node {} is serving {SERVING_PER_GROUP_MAX} requests of group {group}",
                me.node
            )),
            (target, _) => target,
        };
        let router = router.clone();
        tokio::spawn(async move {
            let answer = match target {
                Ok(raft) => raft.serve(rpc).await,
                Err(reason) => Answer::Refused { reason },
            };
            drop(permit);
            match (Reply { id, answer }).encode() {
                Ok(frame) => {
                    let reply: Vec<Bytes> = vec![peer, Bytes::from(frame)];
                    if let Err(e) = router.send(Message::from_frames(reply)).await {
                        tracing::debug!("a cluster reply was not sent: {e}");
                    }
                }
                Err(e) => tracing::error!("a cluster reply does not encode: {e}"),
            }
        });
    }
}
