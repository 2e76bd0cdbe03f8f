//! A broker in a cluster: queue declarations and deletions go through the
//! cluster's metadata group, and each node's queues follow the catalog the
//! group agreed on. (Messages are not replicated yet: each node keeps its
//! own; see `docs/cluster.md`.)
//!
//! The loop never waits for the group: a DECLARE or DELETE becomes a
//! proposal on its own task, and its outcome comes back through a bounded
//! channel the loop selects on, as do the catalog's changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use zmesh_cluster::{CatalogView, ClusterNode, Command, Outcome, ProposeError, QueueRecord};

use crate::queue::core::options_as_created;
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
    outcome: Result<Outcome, ProposeError>,
}

/// What the cluster has for the loop.
pub enum ClusterEvent {
    Decided(Decided),
    CatalogChanged,
}

/// The broker's end of its cluster node.
pub struct ClusterLink {
    node: Arc<ClusterNode>,
    catalog: watch::Receiver<CatalogView>,
    /// The catalog as this node's queues last followed it.
    followed: BTreeMap<String, QueueRecord>,
    /// Queues with proposals of this node in flight, and how many.
    pending: HashMap<String, usize>,
    decided_tx: mpsc::Sender<Decided>,
    decided_rx: mpsc::Receiver<Decided>,
    in_flight: usize,
}

impl ClusterLink {
    pub fn new(node: Arc<ClusterNode>) -> ClusterLink {
        let mut catalog = node.catalog();
        // What the node applied before the loop runs is a change to follow.
        catalog.mark_changed();
        let (decided_tx, decided_rx) = mpsc::channel(PROPOSALS_IN_FLIGHT_MAX);
        ClusterLink {
            node,
            catalog,
            followed: BTreeMap::new(),
            pending: HashMap::new(),
            decided_tx,
            decided_rx,
            in_flight: 0,
        }
    }

    /// Takes a queue message that changes the catalog (a well-formed DECLARE
    /// or DELETE) and proposes it; returns `None` for any other message,
    /// which the queues handle as before, or what to send at once.
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
            _ => return None,
        };
        if self.in_flight >= PROPOSALS_IN_FLIGHT_MAX {
            let reply = proto::error(
                &corr,
                code::UNAVAILABLE,
                "too many catalog changes in flight; try again",
            );
            return Some(vec![(from.clone(), reply)]);
        }
        self.in_flight += 1;
        *self.pending.entry(queue.clone()).or_default() += 1;
        let node = self.node.clone();
        let tx = self.decided_tx.clone();
        let (from, frames) = (from.clone(), frames.to_vec());
        tokio::spawn(async move {
            let outcome = node.propose(command).await;
            // The channel holds as many as may be in flight: never full.
            let _ = tx
                .send(Decided {
                    queue,
                    from,
                    frames,
                    corr,
                    outcome,
                })
                .await;
        });
        Some(Vec::new())
    }

    /// The next outcome or catalog change.
    pub async fn next_event(&mut self) -> ClusterEvent {
        tokio::select! {
            Some(decided) = self.decided_rx.recv() => ClusterEvent::Decided(decided),
            Ok(()) = self.catalog.changed() => ClusterEvent::CatalogChanged,
        }
    }

    /// Answers a decided proposal. An agreed declaration is applied here
    /// first, with the options the cluster agreed on (this node's catalog may
    /// not have applied it yet); then the request goes to the queues as the
    /// client sent it, and they answer as a single broker would. A conflict
    /// or a failure is answered here.
    pub fn answer(&mut self, decided: Decided, queues: &mut QueueStore) -> Sends {
        self.in_flight -= 1;
        let Decided {
            queue,
            from,
            frames,
            corr,
            outcome,
        } = decided;
        let mut sends = self.answer_agreed(&queue, from, &frames, corr, outcome, queues);
        match self.pending.get_mut(&queue) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.pending.remove(&queue);
                // What the catalog changed meanwhile for this queue waited for
                // the answer: follow it now.
                let record = self.catalog.borrow().queues.get(&queue).cloned();
                sends.extend(self.follow(&queue, record.as_ref(), queues));
            }
        }
        sends
    }

    fn answer_agreed(
        &mut self,
        queue: &str,
        from: Bytes,
        frames: &[Bytes],
        corr: Bytes,
        outcome: Result<Outcome, ProposeError>,
        queues: &mut QueueStore,
    ) -> Sends {
        let reply = match outcome {
            Ok(Outcome::Created { options } | Outcome::AlreadyDeclared { options }) => {
                let (result, mut sends) = queues.apply_agreed(queue, Some(&options));
                if let Err(reason) = result {
                    tracing::warn!(queue, "an agreed declaration is refused here: {reason}");
                }
                sends.extend(queues.handle(&from, frames));
                return sends;
            }
            Ok(Outcome::Deleted | Outcome::NotFound) => return queues.handle(&from, frames),
            Ok(Outcome::Conflict) => proto::error(
                &corr,
                code::CONFLICT,
                "the queue exists in the cluster with other options",
            ),
            Ok(Outcome::CatalogFull) => proto::error(
                &corr,
                code::UNAVAILABLE,
                &format!(
                    "the cluster's catalog holds its limit of {} queues",
                    zmesh_cluster::CATALOG_QUEUES_MAX
                ),
            ),
            Ok(Outcome::Noted) => proto::error(&corr, code::UNAVAILABLE, "unexpected outcome"),
            // Says what it knows: "may have been applied" for an unknown fate.
            Err(e) => proto::error(&corr, code::UNAVAILABLE, &format!("cluster: {e}")),
        };
        vec![(from, reply)]
    }

    /// Brings this node's queues in line with the catalog as applied here.
    /// A queue this node has a proposal in flight for waits for its answer
    /// (so a client's DELETE finds its queue still here to delete).
    pub fn follow_catalog(&mut self, queues: &mut QueueStore) -> Sends {
        let now = self.catalog.borrow_and_update().queues.clone();
        let names: BTreeSet<String> = now.keys().chain(self.followed.keys()).cloned().collect();
        let mut sends = Vec::new();
        for name in names {
            if !self.pending.contains_key(&name) {
                sends.extend(self.follow(&name, now.get(&name), queues));
            }
        }
        sends
    }

    /// Brings one queue in line with `record`, the catalog's entry for it.
    fn follow(
        &mut self,
        name: &str,
        record: Option<&QueueRecord>,
        queues: &mut QueueStore,
    ) -> Sends {
        if self.followed.get(name) == record {
            return Vec::new();
        }
        let (result, sends) = queues.apply_agreed(name, record.map(|r| r.options.as_slice()));
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
