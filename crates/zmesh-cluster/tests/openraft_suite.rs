//! openraft's own storage test suite against [`LogStore`] on real files,
//! with a small in-memory state machine beside it (the suite tests both; the
//! broker's state machine is not this one).

use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, StorageError};
use zmesh_cluster::LogStore;
use zmesh_log::LogConfig;

openraft::declare_raft_types!(pub Config);

/// What the state machine holds: the data applied, and what openraft asks of it.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Applied {
    last: Option<LogIdOf<Config>>,
    membership: StoredMembershipOf<Config>,
    data: Vec<String>,
}

#[derive(Default)]
struct State {
    applied: Applied,
    snapshot: Option<(SnapshotMetaOf<Config>, Vec<u8>)>,
    snapshots_built: u64,
}

#[derive(Clone, Default)]
struct StateMachine(Arc<Mutex<State>>);

impl RaftSnapshotBuilder<Config> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<Config, Self::SnapshotData>, io::Error> {
        let mut state = self.0.lock().unwrap();
        state.snapshots_built += 1;
        let bytes = serde_json::to_vec(&state.applied).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<Config> {
            last_log_id: state.applied.last,
            last_membership: state.applied.membership.clone(),
        };
        state.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(SnapshotOf::<Config, _> {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<Config> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Config>>, StoredMembershipOf<Config>), io::Error> {
        let state = self.0.lock().unwrap();
        Ok((state.applied.last, state.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<Config>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            {
                let mut state = self.0.lock().unwrap();
                state.applied.last = Some(entry.log_id());
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(data) => state.applied.data.push(data),
                    EntryPayload::Membership(m) => {
                        state.applied.membership =
                            StoredMembershipOf::<Config>::new(Some(entry.log_id), m)
                    }
                }
            }
            if let Some(responder) = responder {
                responder.send(String::new());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Config>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let applied: Applied = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        let mut state = self.0.lock().unwrap();
        state.applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
            ..applied
        };
        state.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<Config, Self::SnapshotData>>, io::Error> {
        let state = self.0.lock().unwrap();
        Ok(state
            .snapshot
            .clone()
            .map(|(meta, bytes)| SnapshotOf::<Config, _> {
                meta,
                snapshot: Cursor::new(bytes),
            }))
    }
}

/// Removes a store's directory when the suite is done with it.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Builder;

impl StoreBuilder<Config, LogStore<Config>, StateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<Config>, StateMachine), StorageError<Config>> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("zmesh-raft-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = LogConfig {
            // Small segments: purges and cuts cross segment files.
            segment_bytes_max: 4096,
            ..LogConfig::default()
        };
        let store = LogStore::open(&dir, config).expect("the store opens");
        Ok((TempDir(dir), store, StateMachine::default()))
    }
}

#[tokio::test]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder)
        .await
        .expect("openraft's storage suite");
}
