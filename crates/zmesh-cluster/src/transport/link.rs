//! The client side: a DEALER per peer node, shared by every group, and
//! openraft's network over it.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use tokio::sync::{mpsc, oneshot};
use zmesh::{Message, Socket, SocketType, TrySendError};

use crate::types::{GroupId, NodeId, Types};

use super::wire::{Answer, Reply, Request, Rpc};
use super::{LINK_QUEUE_MAX, cluster_socket_options};

/// Requests sent on a link and not yet answered; past this, requests whose
/// caller gave up are forgotten, and if that frees nothing a new one is refused.
const PENDING_MAX: usize = 1024;

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("the link to node {0} is busy")]
    Busy(NodeId),
    #[error("the link to node {0} is closed")]
    Closed(NodeId),
    #[error("node {0} is not connected")]
    Down(NodeId),
    #[error("node {node} refused: {reason}")]
    Refused { node: NodeId, reason: String },
    #[error("node {node} sent an answer of the wrong kind to a {asked:?} request")]
    WrongAnswer { node: NodeId, asked: RPCTypes },
}

/// A request handed to a link's task.
struct Outgoing {
    group: GroupId,
    rpc: Rpc,
    reply: oneshot::Sender<Result<Answer, LinkError>>,
}

/// The connection to one peer node, shared by every group's clients.
#[derive(Clone)]
pub(crate) struct Link {
    requests: mpsc::Sender<Outgoing>,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The request went out and no answer came in time.
    #[error("no answer in time")]
    TimedOut,
    /// The request never went out.
    #[error(transparent)]
    NotSent(#[from] LinkError),
    /// The request went out, then the link closed: it may have been served.
    #[error("the link closed with the request out: {0}")]
    Lost(LinkError),
}

impl Link {
    /// Sends `rpc` for `group` to `node` and waits up to `limit` for its
    /// answer. A refusal comes back as an error.
    pub(crate) async fn call(
        &self,
        node: NodeId,
        group: GroupId,
        rpc: Rpc,
        limit: Duration,
    ) -> Result<Answer, CallError> {
        let (reply, answer) = oneshot::channel();
        let outgoing = Outgoing { group, rpc, reply };
        match self.requests.try_send(outgoing) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(LinkError::Busy(node).into()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(LinkError::Closed(node).into());
            }
        }
        match tokio::time::timeout(limit, answer).await {
            Err(_) => Err(CallError::TimedOut),
            // The link's task ended with the request out, or took it and
            // found the socket closed: whether it left is not known.
            Ok(Err(_)) => Err(CallError::Lost(LinkError::Closed(node))),
            Ok(Ok(Err(e @ LinkError::Closed(_)))) => Err(CallError::Lost(e)),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Ok(Ok(Answer::Refused { reason }))) => {
                Err(LinkError::Refused { node, reason }.into())
            }
            Ok(Ok(Ok(answer))) => Ok(answer),
        }
    }

    fn open(
        node: NodeId,
        endpoint: String,
        cluster: Arc<str>,
        undecodable: Arc<AtomicU64>,
    ) -> Link {
        let (requests, rx) = mpsc::channel(LINK_QUEUE_MAX);
        tokio::spawn(run_link(node, endpoint, cluster, rx, undecodable));
        Link { requests }
    }
}

/// Moves a link's requests to its DEALER and its replies back to their
/// callers, until every handle on the link is gone.
async fn run_link(
    node: NodeId,
    endpoint: String,
    cluster: Arc<str>,
    mut requests: mpsc::Receiver<Outgoing>,
    undecodable: Arc<AtomicU64>,
) {
    let socket = match Socket::new(SocketType::Dealer, cluster_socket_options()) {
        Ok(s) => s,
        Err(e) => return tracing::error!(node, "no socket for the cluster link: {e}"),
    };
    // Watched before connecting, so no close is missed.
    let mut closes = socket.closed_connections();
    if let Err(e) = socket.connect(&endpoint).await {
        return tracing::error!(node, endpoint, "cluster link cannot connect: {e}");
    }
    let mut pending: HashMap<u64, oneshot::Sender<Result<Answer, LinkError>>> = HashMap::new();
    let mut next_id: u64 = 0;
    // After a close, whether the DEALER has reconnected is asked before each
    // request: one sent with no connection would wait for a peer that may
    // be dead, where its caller would rather hear at once.
    let mut maybe_down = false;
    loop {
        tokio::select! {
            outgoing = requests.recv() => {
                let Some(Outgoing { group, rpc, reply }) = outgoing else { break };
                if pending.len() >= PENDING_MAX {
                    pending.retain(|_, waiting| !waiting.is_closed());
                }
                if pending.len() >= PENDING_MAX {
                    let _ = reply.send(Err(LinkError::Busy(node)));
                    continue;
                }
                if maybe_down {
                    match socket.connection_ids().await {
                        Ok(ids) if !ids.is_empty() => maybe_down = false,
                        _ => {
                            let _ = reply.send(Err(LinkError::Down(node)));
                            continue;
                        }
                    }
                }
                next_id += 1;
                let request = Request {
                    cluster: cluster.to_string(),
                    to: node,
                    id: next_id,
                    group,
                    rpc,
                };
                let frame = match request.encode() {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(node, "an RPC does not encode: {e}");
                        continue;
                    }
                };
                match socket.try_send(Message::single(frame)) {
                    Ok(()) => {
                        pending.insert(next_id, reply);
                    }
                    Err(TrySendError::Full(_)) => {
                        let _ = reply.send(Err(LinkError::Busy(node)));
                    }
                    Err(TrySendError::Failed(_)) => {
                        let _ = reply.send(Err(LinkError::Closed(node)));
                        break;
                    }
                }
            }
            Some(_closed) = closes.next() => {
                // The DEALER reconnects, but what went out on the closed
                // connection gets no answer: its callers hear now that its
                // fate is unknown, not when their time is up (a killed
                // leader costs a failover, not a forwarding limit).
                for (_, waiting) in pending.drain() {
                    let _ = waiting.send(Err(LinkError::Closed(node)));
                }
                maybe_down = true;
            }
            received = socket.recv() => {
                let message = match received {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(node, "cluster link closed: {e}");
                        break;
                    }
                };
                let Some(frame) = message.frame_slice(0) else { continue };
                match Reply::decode(frame) {
                    Ok(Reply { id, answer }) => {
                        if let Some(waiting) = pending.remove(&id) {
                            let _ = waiting.send(Ok(answer));
                        }
                    }
                    Err(e) => {
                        undecodable.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(node, "a reply from node {node}: {e}");
                    }
                }
            }
        }
    }
    let _ = socket.close().await;
}

/// The links of one node to its peers, shared by every group on it.
#[derive(Clone)]
pub struct Links {
    /// The cluster and node these links start from.
    cluster: Arc<str>,
    from: NodeId,
    by_node: Arc<Mutex<HashMap<(NodeId, String), Link>>>,
    undecodable: Arc<AtomicU64>,
}

impl Links {
    /// Links from node `from` of `cluster`, counting undecodable replies in
    /// `undecodable`.
    pub fn new(cluster: &str, from: NodeId, undecodable: Arc<AtomicU64>) -> Links {
        Links {
            cluster: cluster.into(),
            from,
            by_node: Arc::default(),
            undecodable,
        }
    }

    /// The link to `node` at `endpoint`: the one there is, or a new one if
    /// there is none or its task has ended. One per member and address, so
    /// the map is as bounded as the membership.
    pub(crate) fn link(&self, node: NodeId, endpoint: &str) -> Link {
        let mut by_node = self.by_node.lock().expect("links lock");
        let key = (node, endpoint.to_owned());
        if let Some(link) = by_node.get(&key)
            && !link.requests.is_closed()
        {
            return link.clone();
        }
        let link = Link::open(
            node,
            endpoint.to_owned(),
            self.cluster.clone(),
            self.undecodable.clone(),
        );
        by_node.insert(key, link.clone());
        link
    }

    /// A network factory for one group's Raft.
    pub fn for_group(&self, group: GroupId) -> GroupNetwork {
        GroupNetwork {
            links: self.clone(),
            group,
        }
    }
}

/// openraft's network factory for one group.
pub struct GroupNetwork {
    links: Links,
    group: GroupId,
}

impl RaftNetworkFactory<Types> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            link: self.links.link(target, &node.addr),
            from: self.links.from,
            target,
            group: self.group,
        }
    }
}

/// One group's RPCs to one peer node.
pub struct PeerClient {
    link: Link,
    from: NodeId,
    target: NodeId,
    group: GroupId,
}

impl PeerClient {
    async fn call(
        &self,
        rpc: Rpc,
        kind: RPCTypes,
        limit: Duration,
    ) -> Result<Answer, RPCError<Types>> {
        match self.link.call(self.target, self.group, rpc, limit).await {
            Ok(answer) => Ok(answer),
            Err(CallError::TimedOut) => Err(RPCError::Timeout(Timeout {
                action: kind,
                id: self.from,
                target: self.target,
                timeout: limit,
            })),
            Err(CallError::NotSent(e) | CallError::Lost(e)) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
        }
    }

    fn wrong_answer(&self, asked: RPCTypes) -> RPCError<Types> {
        RPCError::Network(NetworkError::new(&LinkError::WrongAnswer {
            node: self.target,
            asked,
        }))
    }
}

impl RaftNetworkV2<Types> for PeerClient {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Types>, RPCError<Types>> {
        match self
            .call(Rpc::Append(rpc), RPCTypes::AppendEntries, option.soft_ttl())
            .await?
        {
            Answer::Append(r) => Ok(r),
            _ => Err(self.wrong_answer(RPCTypes::AppendEntries)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Types>,
        option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        match self
            .call(Rpc::Vote(rpc), RPCTypes::Vote, option.soft_ttl())
            .await?
        {
            Answer::Vote(r) => Ok(r),
            _ => Err(self.wrong_answer(RPCTypes::Vote)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Types>,
        option: RPCOption,
    ) -> Result<VoteResponse<Types>, RPCError<Types>> {
        match self
            .call(Rpc::PreVote(rpc), RPCTypes::Vote, option.soft_ttl())
            .await?
        {
            Answer::Vote(r) => Ok(r),
            _ => Err(self.wrong_answer(RPCTypes::Vote)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Types>,
        snapshot: SnapshotOf<Types, Cursor<Vec<u8>>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<Types>, StreamingError<Types>> {
        let rpc = Rpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let call = self.call(rpc, RPCTypes::InstallSnapshot, option.soft_ttl());
        let answer = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = call => answer,
        };
        match answer {
            Ok(Answer::Snapshot(r)) => Ok(r),
            Ok(_) => Err(StreamingError::Network(NetworkError::new(
                &LinkError::WrongAnswer {
                    node: self.target,
                    asked: RPCTypes::InstallSnapshot,
                },
            ))),
            Err(RPCError::Timeout(t)) => Err(StreamingError::Timeout(t)),
            Err(RPCError::Unreachable(u)) => Err(StreamingError::Unreachable(u)),
            Err(RPCError::Network(n)) => Err(StreamingError::Network(n)),
            Err(RPCError::RemoteError(r)) => Err(StreamingError::Network(NetworkError::new(&r))),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<Types>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<Types>, RPCError<Types>> {
        match self
            .call(
                Rpc::TransferLeader(req),
                RPCTypes::TransferLeader,
                option.soft_ttl(),
            )
            .await?
        {
            Answer::TransferLeader(r) => Ok(r),
            _ => Err(self.wrong_answer(RPCTypes::TransferLeader)),
        }
    }
}
