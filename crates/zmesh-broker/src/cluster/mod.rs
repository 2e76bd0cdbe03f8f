//! A broker in a cluster: queue declarations and deletions go through the
//! cluster's metadata group, and each node's queues follow the catalog the
//! group agreed on; publishes are stored by the queue's shard group
//! (`replicate.rs`). A queue's consumers are served by the node leading its
//! shard, and by no other; that node's decisions (deliveries, acks,
//! requeues, dead letters) go to the shard beside the publishes, and every
//! other node applies them (see `docs/cluster.md`).
//!
//! The loop never waits for a group: a DECLARE, a DELETE or a batch of
//! publishes becomes a proposal on its own task, and its outcome comes back
//! through a bounded channel the loop selects on, as do the catalog's
//! changes and the shards' committed batches.

mod replicate;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};
use zmesh_cluster::{
    Applied, CATALOG_QUEUES_MAX, CatalogView, ClusterNode, Command, GroupId, NodeId, Outcome,
    ProposeError, QueueRecord,
};

use self::replicate::{Followed, Replication};
use crate::queue::core::{Served, options_as_created};
use crate::queue::proto::{self, code};
use crate::queue::store::QueueStore;
use crate::storage::Sends;

/// Catalog changes proposed and not yet decided; past it a DECLARE or DELETE
/// is answered 503 at once.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 64;

/// A proposal's outcome, with the request it answers.
pub struct Decided {
    queue: String,
    from: Bytes,
    frames: Vec<Bytes>,
    corr: Bytes,
    outcome: Result<Applied, ProposeError>,
}

/// Sends its proposal's outcome when dropped, whatever ended the task (an
/// answer, or a panic on the way): every proposal in flight is answered.
struct Answering<T> {
    decided: Option<T>,
    tx: mpsc::Sender<T>,
}

impl<T> Drop for Answering<T> {
    fn drop(&mut self) {
        if let Some(decided) = self.decided.take() {
            // The channel holds as many as may be in flight: never full.
            let _ = self.tx.try_send(decided);
        }
    }
}

/// What the cluster has for the loop.
pub enum ClusterEvent {
    /// A proposal of this node is decided.
    Decided(Decided),
    /// This node's metadata group applied entries.
    CatalogChanged,
    /// A shard committed a batch, or a batch proposal ended.
    Replication(replicate::Event),
    /// A shard's leader changed, as this node knows it.
    Leadership,
}

/// The broker's end of its cluster node.
pub struct ClusterLink {
    node: Arc<ClusterNode>,
    catalog: watch::Receiver<CatalogView>,
    /// The catalog as this node's queues last followed it.
    followed: BTreeMap<String, QueueRecord>,
    /// Queues with proposals of this node in flight, and how many: the
    /// catalog's changes to them wait for the answers.
    pending: HashMap<String, usize>,
    /// Queues an answer changed here, with the index of the entry that
    /// decided it: once the catalog has applied that far, each is brought in
    /// line with it whatever `followed` says.
    answered: BTreeMap<String, u64>,
    decided_tx: mpsc::Sender<Decided>,
    decided_rx: mpsc::Receiver<Decided>,
    in_flight: usize,
    draining: bool,
    /// The catalog's index as this node's queues last followed it.
    followed_index: u64,
    /// The highest catalog index this node knows of: followed, or in an
    /// answer (the leader's catalog, ahead of this node's).
    known_index: u64,
    replication: Replication,
    /// Each shard's leader as this node knows it (shard `i + 1` at `i`).
    shard_leaders: Vec<watch::Receiver<Option<NodeId>>>,
    /// Told by a task per shard when its leader changes.
    leadership_changed: Arc<Notify>,
    /// Each shard's leader as far as this node has applied the shard's log
    /// (the first entry of its term). A leader serves once its own first
    /// entry is applied here: everything committed before it is, then.
    applied_leaders: BTreeMap<GroupId, NodeId>,
    /// The shards this node leads, whose queues it serves.
    led: BTreeSet<GroupId>,
}

impl ClusterLink {
    pub fn new(node: Arc<ClusterNode>) -> ClusterLink {
        let mut catalog = node.catalog();
        // What the node applied before the loop runs is a change to follow.
        catalog.mark_changed();
        let (decided_tx, decided_rx) = mpsc::channel(PROPOSALS_IN_FLIGHT_MAX);
        let leadership_changed = Arc::new(Notify::new());
        let shard_leaders = (1..=node.shards())
            .map(|shard| {
                let leader = node.watch_leader_of(shard);
                let mut changes = leader.clone();
                let tell = leadership_changed.clone();
                // Ends with the node (its watch closes).
                tokio::spawn(async move {
                    while changes.changed().await.is_ok() {
                        tell.notify_one();
                    }
                });
                leader
            })
            .collect();
        // Who leads already is news to the loop.
        leadership_changed.notify_one();
        ClusterLink {
            shard_leaders,
            leadership_changed,
            applied_leaders: BTreeMap::new(),
            led: BTreeSet::new(),
            replication: Replication::new(node.clone()),
            followed_index: 0,
            known_index: 0,
            node,
            catalog,
            followed: BTreeMap::new(),
            pending: HashMap::new(),
            answered: BTreeMap::new(),
            decided_tx,
            decided_rx,
            in_flight: 0,
            draining: false,
        }
    }

    /// The broker drains: new catalog changes are refused (503), and those
    /// in flight are still answered.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Whether every proposal of this node has been answered.
    pub fn settled(&self) -> bool {
        self.in_flight == 0 && self.replication.settled()
    }

    /// Proposes the publishes the queues took, and the decisions they made,
    /// since the last call (once per turn of the loop).
    pub fn replicate(&mut self, queues: &mut QueueStore) {
        let taken = queues.take_replicated();
        // Most turns take none: the catalog is not looked at for nothing.
        if taken.is_empty() {
            return;
        }
        let catalog = self.catalog.borrow().queues.clone();
        let followed = &self.followed;
        let declared_at = |name: &str| {
            followed
                .get(name)
                .or_else(|| catalog.get(name))
                .map_or(0, |r| r.declared_at_index)
        };
        self.replication
            .propose(taken, self.known_index, declared_at);
    }

    /// Committed batches that would not decode, skipped.
    pub fn undecodable_batches(&self) -> u64 {
        self.replication.undecodable
    }

    /// Takes a queue message that changes the catalog (a well-formed DECLARE
    /// or DELETE) and proposes it, or answers NODES from the catalog;
    /// returns `None` for any other message, which the queues handle as
    /// before, or what to send at once.
    pub fn intercept(&mut self, from: &Bytes, frames: &[Bytes]) -> Option<Sends> {
        let (corr, queue, command) = match proto::parse(frames) {
            Ok(proto::Command::Declare {
                corr,
                queue,
                options,
            }) => {
                let exact = options.is_some();
                let options = options_as_created(&queue, options.unwrap_or_default());
                let options = serde_json::to_vec(&options).expect("queue options encode");
                (
                    corr,
                    queue.clone(),
                    Command::DeclareQueue {
                        name: queue,
                        options,
                        exact,
                    },
                )
            }
            Ok(proto::Command::Delete { corr, queue }) => {
                (corr, queue.clone(), Command::DeleteQueue { name: queue })
            }
            Ok(proto::Command::Nodes { corr }) => {
                let body = serde_json::json!({
                    "node": self.node.node_id(),
                    "nodes": *self.catalog.borrow().client_endpoints,
                });
                let body = Bytes::from(serde_json::to_vec(&body).expect("nodes encode"));
                return Some(vec![(from.clone(), proto::ok(&corr, Some(body)))]);
            }
            _ => return None,
        };
        let refusal = if self.draining {
            Some("the broker is shutting down")
        } else if self.in_flight >= PROPOSALS_IN_FLIGHT_MAX {
            Some("too many catalog changes in flight; try again")
        } else {
            None
        };
        if let Some(reason) = refusal {
            return Some(vec![(
                from.clone(),
                proto::error(&corr, code::UNAVAILABLE, reason),
            )]);
        }
        self.in_flight += 1;
        *self.pending.entry(queue.clone()).or_default() += 1;
        let node = self.node.clone();
        let mut answering = Answering {
            decided: Some(Decided {
                queue,
                from: from.clone(),
                frames: frames.to_vec(),
                corr,
                outcome: Err(ProposeError::Unknown {
                    reason: "the proposal ended without an answer".into(),
                }),
            }),
            tx: self.decided_tx.clone(),
        };
        tokio::spawn(async move {
            let outcome = node.propose(command).await;
            if let Some(decided) = answering.decided.as_mut() {
                decided.outcome = outcome;
            }
        });
        Some(Vec::new())
    }

    /// The next outcome or catalog change.
    pub async fn next_event(&mut self) -> ClusterEvent {
        tokio::select! {
            Some(decided) = self.decided_rx.recv() => ClusterEvent::Decided(decided),
            Ok(()) = self.catalog.changed() => ClusterEvent::CatalogChanged,
            event = self.replication.next() => ClusterEvent::Replication(event),
            () = self.leadership_changed.notified() => ClusterEvent::Leadership,
        }
    }

    /// Serves the queues of the shards this node leads now, and only those:
    /// those whose leader it is and whose log it has applied up to its own
    /// term (so it decides on what the last leader left, not on less).
    fn serve_led(&mut self, queues: &mut QueueStore) -> Sends {
        let me = self.node.node_id();
        let led: BTreeSet<GroupId> = (1..)
            .zip(&self.shard_leaders)
            .filter(|(shard, leader)| {
                *leader.borrow() == Some(me) && self.applied_leaders.get(shard) == Some(&me)
            })
            .map(|(shard, _)| shard)
            .collect();
        if led != self.led {
            tracing::info!(shards = ?led, "this node leads");
            self.led = led;
        }
        // Where each shard this node does not serve is served, for redirects.
        let catalog = self.catalog.borrow();
        let elsewhere: BTreeMap<GroupId, Option<Arc<str>>> = (1..)
            .zip(&self.shard_leaders)
            .filter(|(shard, _)| !self.led.contains(shard))
            .map(|(shard, leader)| {
                let endpoint = leader
                    .borrow()
                    .filter(|leader| *leader != me)
                    .and_then(|leader| catalog.client_endpoints.get(&leader))
                    .map(|endpoint| Arc::from(endpoint.as_str()));
                (shard, endpoint)
            })
            .collect();
        drop(catalog);
        let node = &self.node;
        queues.serve(|name| match elsewhere.get(&node.shard_of(name)) {
            None => Served::Here,
            Some(endpoint) => Served::Elsewhere(endpoint.clone()),
        })
    }

    /// Carries out what the cluster has for the loop.
    pub fn on_event(&mut self, event: ClusterEvent, queues: &mut QueueStore) -> Sends {
        match event {
            ClusterEvent::Decided(decided) => self.answer(decided, queues),
            ClusterEvent::CatalogChanged => self.follow_catalog(queues),
            ClusterEvent::Replication(replicate::Event::Committed(c))
                if let Some(leader) = c.leader_from_here =>
            {
                self.applied_leaders.insert(c.group, leader);
                self.serve_led(queues)
            }
            ClusterEvent::Replication(replicate::Event::Committed(c)) => {
                let followed = Followed {
                    index: self.followed_index,
                    queues: &self.followed,
                };
                self.replication.committed(c, queues, &followed)
            }
            ClusterEvent::Replication(replicate::Event::Done(done)) => {
                self.replication.done(done, queues, self.known_index)
            }
            ClusterEvent::Leadership => self.serve_led(queues),
            ClusterEvent::Replication(replicate::Event::SnapshotWanted { group, reply }) => {
                let followed = Followed {
                    index: self.followed_index,
                    queues: &self.followed,
                };
                self.replication
                    .snapshot_wanted(group, reply, queues, &followed);
                Vec::new()
            }
            ClusterEvent::Replication(replicate::Event::Restore {
                group,
                index,
                state,
            }) => {
                let followed = Followed {
                    index: self.followed_index,
                    queues: &self.followed,
                };
                self.replication
                    .restore(group, index, &state, queues, &followed)
            }
        }
    }

    /// Answers a decided proposal. An agreed declaration is applied here
    /// first, with the options the cluster agreed on (this node's catalog may
    /// not have applied it yet); then the request goes to the queues as the
    /// client sent it, and they answer as a single broker would. A conflict
    /// or a failure is answered here.
    pub fn answer(&mut self, decided: Decided, queues: &mut QueueStore) -> Sends {
        debug_assert!(self.in_flight > 0, "an answer for each proposal");
        self.in_flight -= 1;
        let Decided {
            queue,
            from,
            frames,
            corr,
            outcome,
        } = decided;
        if let Ok(applied) = &outcome {
            let index = self.answered.entry(queue.clone()).or_default();
            *index = (*index).max(applied.index);
            self.known_index = self.known_index.max(applied.index);
        }
        let mut sends = answer_one(&queue, from, &frames, &corr, outcome, queues);
        match self.pending.get_mut(&queue) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.pending.remove(&queue);
                sends.extend(self.follow_catalog(queues));
            }
        }
        sends
    }

    /// Brings this node's queues in line with the catalog as applied here.
    /// A queue this node has a proposal in flight for waits for its answer
    /// (so a client's DELETE finds its queue still here to delete).
    pub fn follow_catalog(&mut self, queues: &mut QueueStore) -> Sends {
        let view = self.catalog.borrow_and_update().clone();
        let names: BTreeSet<String> = view
            .queues
            .keys()
            .chain(self.followed.keys())
            .chain(self.answered.keys())
            .cloned()
            .collect();
        let mut sends = Vec::new();
        let mut skipped = false;
        for name in names {
            if self.pending.contains_key(&name) {
                skipped = true;
                continue;
            }
            // An answer changed this queue here: once the catalog includes
            // the entry that decided it, follow the catalog whatever was
            // followed before.
            let changed_by_answer = match self.answered.get(&name) {
                Some(index) if *index <= view.applied_index => {
                    self.answered.remove(&name);
                    true
                }
                Some(_) => continue,
                None => false,
            };
            sends.extend(self.follow(&name, view.queues.get(&name), changed_by_answer, queues));
        }
        // Followed that far only when no queue waited: a batch for a queue
        // still waiting for its own answer must wait too, or it would find
        // no queue to go in.
        if !skipped {
            self.followed_index = self.followed_index.max(view.applied_index);
        }
        self.known_index = self.known_index.max(view.applied_index);
        // A committed batch may have waited for these queues.
        let followed = Followed {
            index: self.followed_index,
            queues: &self.followed,
        };
        sends.extend(self.replication.release(queues, &followed));
        // Queues declared here start unserved.
        sends.extend(self.serve_led(queues));
        sends
    }

    /// Brings one queue in line with `record`, the catalog's entry for it.
    /// With `force`, even if it was followed already.
    fn follow(
        &mut self,
        name: &str,
        record: Option<&QueueRecord>,
        force: bool,
        queues: &mut QueueStore,
    ) -> Sends {
        let followed = self.followed.get(name);
        if !force && followed == record {
            return Vec::new();
        }
        let mut sends = Vec::new();
        // Deleted and declared again (with other options, maybe) between two
        // looks at the catalog: the old queue goes first.
        if let (Some(old), Some(new)) = (followed, record)
            && old.declared_at_index != new.declared_at_index
        {
            sends.extend(queues.apply_agreed(name, None).1);
        }
        let (result, s) = queues.apply_agreed(name, record.map(|r| r.options.as_slice()));
        sends.extend(s);
        match record {
            Some(r) => {
                if let Err(reason) = result {
                    tracing::warn!(
                        queue = name,
                        "an agreed declaration is refused here: {reason}"
                    );
                }
                self.followed.insert(name.to_owned(), r.clone());
            }
            None => {
                if let Err(reason) = result {
                    tracing::debug!(queue = name, "an agreed deletion found nothing: {reason}");
                }
                self.followed.remove(name);
            }
        }
        sends
    }
}

/// The answer to one decided request.
fn answer_one(
    queue: &str,
    from: Bytes,
    frames: &[Bytes],
    corr: &Bytes,
    outcome: Result<Applied, ProposeError>,
    queues: &mut QueueStore,
) -> Sends {
    let reply = match outcome.map(|a| a.outcome) {
        Ok(Outcome::Created { options } | Outcome::AlreadyDeclared { options }) => {
            let (result, mut sends) = queues.apply_agreed(queue, Some(&options));
            if let Err(reason) = result {
                tracing::warn!(queue, "an agreed declaration is refused here: {reason}");
            }
            sends.extend(queues.handle(&from, frames));
            return sends;
        }
        // Deleted in the cluster, and already gone here (the catalog got here
        // first): deleted, with nothing left to count.
        Ok(Outcome::Deleted) if !queues.core().has_queue(queue) => {
            proto::ok(corr, Some(Bytes::from_static(br#"{"deleted_messages":0}"#)))
        }
        Ok(Outcome::Deleted | Outcome::NotFound) => return queues.handle(&from, frames),
        Ok(Outcome::Conflict) => proto::error(
            corr,
            code::CONFLICT,
            "the queue exists in the cluster with other options",
        ),
        Ok(Outcome::CatalogFull) => proto::error(
            corr,
            code::UNAVAILABLE,
            &format!("the cluster's catalog holds its limit of {CATALOG_QUEUES_MAX} queues"),
        ),
        Ok(
            Outcome::Noted
            | Outcome::Batched
            | Outcome::WrongGroup
            | Outcome::Advertised
            | Outcome::Refused { .. },
        ) => proto::error(corr, code::UNAVAILABLE, "unexpected outcome"),
        // Says what it knows: "may have been applied" for an unknown fate.
        Err(e) => proto::error(corr, code::UNAVAILABLE, &format!("cluster: {e}")),
    };
    vec![(from, reply)]
}
