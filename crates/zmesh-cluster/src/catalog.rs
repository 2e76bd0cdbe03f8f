//! The metadata group's state machine: the queue catalog every node agrees on.
//!
//! The catalog lives in memory and is rebuilt by replaying the log. Its
//! snapshot is kept in one file, written atomically before openraft may purge
//! the entries below it: a node restarted after a purge starts from that file
//! and replays the rest.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::snapshot_file::{self, SnapshotFileError, StoredSnapshot};
use crate::types::{Command, NodeId, Outcome, Types};

/// Queues the catalog holds at most. Every node applies the same limit to
/// the same log, so all refuse the same declaration. (A broker creates a
/// dead-letter queue beside each, within its own `queues_max`.)
pub const CATALOG_QUEUES_MAX: usize = 5_000;

/// Longest client endpoint a node may advertise, in bytes.
pub const CLIENT_ENDPOINT_BYTES_MAX: usize = 256;

/// The snapshot file in a node's metadata directory.
const SNAPSHOT_FILE: &str = "catalog.snapshot";

/// A declared queue, as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// The broker's canonical encoding of the queue's options.
    pub options: Vec<u8>,
    /// The Raft index of the entry that declared it.
    pub declared_at_index: u64,
}

/// What a node's catalog holds after its last applied entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogView {
    /// The index of the last entry applied (0 before any).
    pub applied_index: u64,
    pub queues: Arc<BTreeMap<String, QueueRecord>>,
    /// Each node's client endpoint, as it last advertised it.
    pub client_endpoints: Arc<BTreeMap<NodeId, String>>,
}

/// The state a snapshot holds.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Applied {
    last: Option<LogIdOf<Types>>,
    membership: StoredMembershipOf<Types>,
    queues: BTreeMap<String, QueueRecord>,
    /// Last, and defaulted: a snapshot written before nodes advertised
    /// their endpoints still decodes.
    #[serde(default)]
    client_endpoints: BTreeMap<NodeId, String>,
}

impl Applied {
    fn apply(&mut self, command: Command, index: u64) -> Outcome {
        match command {
            Command::DeclareQueue {
                name,
                options,
                exact,
            } => match self.queues.get(&name) {
                Some(q) if !exact || q.options == options => Outcome::AlreadyDeclared {
                    options: q.options.clone(),
                },
                Some(_) => Outcome::Conflict,
                None if self.queues.len() >= CATALOG_QUEUES_MAX => Outcome::CatalogFull,
                None => {
                    self.queues.insert(
                        name,
                        QueueRecord {
                            options: options.clone(),
                            declared_at_index: index,
                        },
                    );
                    Outcome::Created { options }
                }
            },
            Command::DeleteQueue { name } => match self.queues.remove(&name) {
                Some(_) => Outcome::Deleted,
                None => Outcome::NotFound,
            },
            // Batches belong to shard groups.
            Command::Batch { .. } => Outcome::WrongGroup,
            Command::AdvertiseNode {
                client_endpoint, ..
            } if client_endpoint.len() > CLIENT_ENDPOINT_BYTES_MAX => Outcome::Refused {
                reason: format!(
                    "a client endpoint of {} bytes (at most {CLIENT_ENDPOINT_BYTES_MAX})",
                    client_endpoint.len()
                ),
            },
            Command::AdvertiseNode {
                node,
                client_endpoint,
            } => {
                self.client_endpoints.insert(node, client_endpoint);
                Outcome::Advertised
            }
        }
    }

    fn view(&self) -> CatalogView {
        CatalogView {
            applied_index: self.last.as_ref().map_or(0, |id| id.index),
            queues: Arc::new(self.queues.clone()),
            client_endpoints: Arc::new(self.client_endpoints.clone()),
        }
    }
}

/// Why the catalog could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the catalog snapshot {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the catalog snapshot {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// The metadata group's state machine (openraft's `RaftStateMachine`).
/// Clones share the state; openraft holds one and the snapshot builder
/// another.
#[derive(Clone)]
pub struct CatalogMachine {
    inner: Arc<std::sync::Mutex<Inner>>,
    snapshot_path: PathBuf,
    view: Arc<watch::Sender<CatalogView>>,
}

struct Inner {
    applied: Applied,
    snapshot: Option<StoredSnapshot>,
}

impl CatalogMachine {
    /// Opens the catalog kept in `dir`: from its snapshot if it has one.
    pub fn open(dir: &Path) -> Result<CatalogMachine, CatalogError> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (applied, snapshot) = match snapshot_file::read(&snapshot_path) {
            Ok(Some(stored)) => {
                let applied = decode_state(&stored.meta, &stored.data).map_err(|reason| {
                    CatalogError::Damaged {
                        path: snapshot_path.clone(),
                        reason,
                    }
                })?;
                (applied, Some(stored))
            }
            Ok(None) => (Applied::default(), None),
            Err(SnapshotFileError::Read { path, source }) => {
                return Err(CatalogError::Read { path, source });
            }
            Err(SnapshotFileError::Damaged { path, reason }) => {
                return Err(CatalogError::Damaged { path, reason });
            }
        };
        let (view, _) = watch::channel(applied.view());
        Ok(CatalogMachine {
            inner: Arc::new(std::sync::Mutex::new(Inner { applied, snapshot })),
            snapshot_path,
            view: Arc::new(view),
        })
    }

    /// Follows the catalog as entries are applied.
    pub fn subscribe(&self) -> watch::Receiver<CatalogView> {
        self.view.subscribe()
    }

    /// Keeps `stored` as the current snapshot, on disk first. The file is
    /// small (the catalog's declarations), so it is written on the caller's
    /// task.
    fn keep_snapshot(&self, inner: &mut Inner, stored: StoredSnapshot) -> io::Result<()> {
        snapshot_file::write(&self.snapshot_path, &stored)?;
        inner.snapshot = Some(stored);
        Ok(())
    }
}

/// Decodes a snapshot's state and checks it against its meta.
fn decode_state(meta: &SnapshotMetaOf<Types>, data: &[u8]) -> Result<Applied, String> {
    let mut applied: Applied = rmp_serde::from_slice(data).map_err(|e| e.to_string())?;
    if applied.last != meta.last_log_id {
        return Err(format!(
            "the state ends at {:?}, its meta says {:?}",
            applied.last, meta.last_log_id
        ));
    }
    applied.membership = meta.last_membership.clone();
    Ok(applied)
}

impl RaftSnapshotBuilder<Types> for CatalogMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Types, Self::SnapshotData>, io::Error> {
        let mut inner = self.inner.lock().expect("catalog lock");
        let data = rmp_serde::to_vec(&inner.applied).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<Types> {
            last_log_id: inner.applied.last,
            last_membership: inner.applied.membership.clone(),
        };
        self.keep_snapshot(
            &mut inner,
            StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        Ok(SnapshotOf::<Types, _> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<Types> for CatalogMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = CatalogMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>), io::Error> {
        let inner = self.inner.lock().expect("catalog lock");
        Ok((inner.applied.last, inner.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm:
            futures::Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let log_id = entry.log_id();
            let outcome = {
                let mut inner = self.inner.lock().expect("catalog lock");
                debug_assert!(
                    inner
                        .applied
                        .last
                        .as_ref()
                        .is_none_or(|last| last.index < log_id.index),
                    "entries are applied in log order, each once"
                );
                inner.applied.last = Some(log_id);
                let outcome = match entry.payload {
                    EntryPayload::Blank => Outcome::Noted,
                    EntryPayload::Normal(command) => inner.applied.apply(command, log_id.index),
                    EntryPayload::Membership(m) => {
                        inner.applied.membership =
                            StoredMembershipOf::<Types>::new(Some(log_id), m);
                        Outcome::Noted
                    }
                };
                self.view.send_replace(inner.applied.view());
                outcome
            };
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Types>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let applied = decode_state(meta, &data).map_err(io::Error::other)?;
        let mut inner = self.inner.lock().expect("catalog lock");
        self.keep_snapshot(
            &mut inner,
            StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        inner.applied = applied;
        self.view.send_replace(inner.applied.view());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<Types, Self::SnapshotData>>, io::Error> {
        let inner = self.inner.lock().expect("catalog lock");
        Ok(inner.snapshot.as_ref().map(|s| SnapshotOf::<Types, _> {
            meta: s.meta.clone(),
            snapshot: Cursor::new(s.data.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(name: &str, options: &[u8], exact: bool) -> Command {
        Command::DeclareQueue {
            name: name.into(),
            options: options.to_vec(),
            exact,
        }
    }

    #[test]
    fn declarations_conflicts_deletions_and_the_limit() {
        let mut catalog = Applied::default();
        let created = Outcome::Created {
            options: b"a".to_vec(),
        };
        let found = Outcome::AlreadyDeclared {
            options: b"a".to_vec(),
        };
        assert_eq!(catalog.apply(declare("q", b"a", true), 1), created);
        assert_eq!(catalog.apply(declare("q", b"a", true), 2), found);
        assert_eq!(
            catalog.apply(declare("q", b"b", true), 3),
            Outcome::Conflict
        );
        assert_eq!(catalog.apply(declare("q", b"b", false), 4), found);
        assert_eq!(catalog.queues["q"].declared_at_index, 1);
        let delete = || Command::DeleteQueue { name: "q".into() };
        assert_eq!(catalog.apply(delete(), 5), Outcome::Deleted);
        assert_eq!(catalog.apply(delete(), 6), Outcome::NotFound);

        for i in 0..CATALOG_QUEUES_MAX {
            let outcome = catalog.apply(declare(&format!("q{i}"), b"", true), 7 + i as u64);
            assert!(matches!(outcome, Outcome::Created { .. }));
        }
        assert_eq!(
            catalog.apply(declare("one-more", b"", true), 1 << 20),
            Outcome::CatalogFull
        );
        assert!(
            matches!(
                catalog.apply(declare("q0", b"", true), 1 << 21),
                Outcome::AlreadyDeclared { .. }
            ),
            "a full catalog still finds what it holds"
        );
    }

    #[test]
    fn nodes_advertise_their_client_endpoints_within_a_bound() {
        let mut catalog = Applied::default();
        let advertise = |node, endpoint: &str| Command::AdvertiseNode {
            node,
            client_endpoint: endpoint.into(),
        };
        assert_eq!(
            catalog.apply(advertise(2, "tcp://10.0.0.2:5555"), 1),
            Outcome::Advertised
        );
        assert_eq!(
            catalog.apply(advertise(2, "tcp://10.0.0.9:5555"), 2),
            Outcome::Advertised
        );
        let long = format!("tcp://{}:5555", "h".repeat(CLIENT_ENDPOINT_BYTES_MAX));
        assert!(matches!(
            catalog.apply(advertise(3, &long), 3),
            Outcome::Refused { .. }
        ));
        let view = catalog.view();
        assert_eq!(
            *view.client_endpoints,
            BTreeMap::from([(2, "tcp://10.0.0.9:5555".to_owned())])
        );
    }

    /// A snapshot from before nodes advertised endpoints decodes, with none.
    #[test]
    fn a_snapshot_without_client_endpoints_decodes() {
        #[derive(Serialize)]
        struct Before {
            last: Option<LogIdOf<Types>>,
            membership: StoredMembershipOf<Types>,
            queues: BTreeMap<String, QueueRecord>,
        }
        let queues = BTreeMap::from([(
            "q".to_owned(),
            QueueRecord {
                options: b"o".to_vec(),
                declared_at_index: 3,
            },
        )]);
        let bytes = rmp_serde::to_vec(&Before {
            last: None,
            membership: Default::default(),
            queues: queues.clone(),
        })
        .unwrap();
        let applied: Applied = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(applied.queues, queues);
        assert!(applied.client_endpoints.is_empty());
    }
}
