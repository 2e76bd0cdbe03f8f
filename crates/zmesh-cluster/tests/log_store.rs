//! What openraft's suite does not check of [`LogStore`]: that an append is
//! reported persisted only after its fsync, that IO lands in order, and
//! that the log, the vote and a purge survive a reopen, on real files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::{EntryOf, VoteOf};
use openraft::{Entry, EntryPayload, Vote};
use zmesh_cluster::{LogStore, LogStoreError};
use zmesh_log::LogConfig;
use zmesh_log::faulty::{Faults, Op};

openraft::declare_raft_types!(pub Config);

fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("zmesh-raft-log-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(faults: &Faults) -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        files: faults.files(),
        ..LogConfig::default()
    }
}

/// An entry whose data names its term and index, so a mix-up shows.
fn entry(term: u64, index: u64) -> EntryOf<Config> {
    Entry {
        log_id: log_id::<Config>(term, 1, index),
        payload: EntryPayload::Normal(format!("t{term}-i{index}")),
    }
}

fn entries(term: u64, indexes: std::ops::Range<u64>) -> Vec<EntryOf<Config>> {
    indexes.map(|i| entry(term, i)).collect()
}

fn names(entries: &[EntryOf<Config>]) -> Vec<String> {
    entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(name) => name.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

async fn read_all(store: &mut LogStore<Config>) -> Vec<EntryOf<Config>> {
    store
        .get_log_reader()
        .await
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
}

fn vote(term: u64, node: u64) -> VoteOf<Config> {
    Vote::new(term, node)
}

#[tokio::test]
async fn an_append_is_readable_at_once_and_reported_persisted_only_after_its_fsync() {
    let dir = temp_dir("fsync");
    let faults = Faults::default();
    let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
    faults.hold(Op::Sync);
    let (tx, mut rx) = Config::oneshot();
    store
        .append(entries(1, 0..5), IOFlushed::signal(tx))
        .await
        .unwrap();
    assert_eq!(names(&read_all(&mut store).await), names(&entries(1, 0..5)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while faults.held(Op::Sync) == 0 {
        assert!(Instant::now() < deadline, "no fsync was started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        rx.try_recv().is_err(),
        "reported persisted while its fsync hangs"
    );
    faults.release(Op::Sync);
    let flushed = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("reported once the fsync is done");
    flushed.unwrap().unwrap();
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_vote_is_saved_only_after_the_appends_before_it_are_persisted() {
    let dir = temp_dir("order");
    let faults = Faults::default();
    let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
    // The syncer's fsync takes a while; a vote saved without waiting for it
    // would be on disk first.
    faults.slow_down(Op::Sync, Duration::from_millis(300));
    let (tx, mut rx) = Config::oneshot();
    store
        .append(entries(1, 0..3), IOFlushed::signal(tx))
        .await
        .unwrap();
    store.save_vote(&vote(2, 3)).await.unwrap();
    let flushed = rx.try_recv().expect("the append was done before the vote");
    flushed.unwrap();
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_log_vote_and_purge_survive_a_reopen_and_a_cut_tail_stays_cut() {
    let dir = temp_dir("reopen");
    let faults = Faults::default();
    {
        let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
        store.blocking_append(entries(1, 0..30)).await.unwrap();
        store.save_vote(&vote(2, 3)).await.unwrap();
        // A new leader's log wins from index 20 on.
        store
            .truncate_after(Some(log_id::<Config>(1, 1, 19)))
            .await
            .unwrap();
        store.blocking_append(entries(2, 20..25)).await.unwrap();
        store.purge(log_id::<Config>(1, 1, 9)).await.unwrap();
    }
    let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id::<Config>(1, 1, 9)));
    assert_eq!(state.last_log_id, Some(log_id::<Config>(2, 1, 24)));
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(vote(2, 3)));
    let mut want = entries(1, 10..20);
    want.extend(entries(2, 20..25));
    assert_eq!(names(&read_all(&mut store).await), names(&want));
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_purge_past_the_end_starts_the_log_over_after_it() {
    let dir = temp_dir("purge-past");
    let faults = Faults::default();
    {
        let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
        store.blocking_append(entries(1, 0..5)).await.unwrap();
        store.purge(log_id::<Config>(3, 1, 100)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id::<Config>(3, 1, 100)));
        assert!(read_all(&mut store).await.is_empty());
        store.blocking_append(entries(3, 101..104)).await.unwrap();
    }
    let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id::<Config>(3, 1, 100)));
    assert_eq!(state.last_log_id, Some(log_id::<Config>(3, 1, 103)));
    assert_eq!(
        names(&read_all(&mut store).await),
        names(&entries(3, 101..104))
    );
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_log_with_a_hole_does_not_open() {
    let dir = temp_dir("hole");
    let faults = Faults::default();
    {
        let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
        store.blocking_append(entries(1, 0..200)).await.unwrap();
    }
    // Bit rot in the middle of the first (sealed) segment.
    let first = dir.join("log").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 8].fill(0xEE);
    std::fs::write(&first, bytes).unwrap();
    match LogStore::<Config>::open(&dir, config(&faults)) {
        Err(LogStoreError::Damaged { lost, .. }) => assert!(!lost.is_empty()),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a log with a hole opened"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A leader that steps down may still be reading entries for replication
/// when the new leader's entries cut its tail: the cut waits for the read,
/// which sees the log as it was, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_waits_for_reads_in_progress() {
    let dir = temp_dir("cut-read");
    let faults = Faults::default();
    let mut store = LogStore::<Config>::open(&dir, config(&faults)).unwrap();
    let long = |term: u64, i: u64| Entry {
        log_id: log_id::<Config>(term, 1, i),
        payload: EntryPayload::Normal(format!("t{term}-i{i}-{}", "x".repeat(400))),
    };
    store
        .blocking_append((0..50).map(|i| long(1, i)))
        .await
        .unwrap();
    let segments = || std::fs::read_dir(dir.join("log")).unwrap().count();
    let before = segments();
    assert!(before > 6, "the entries span several segments");
    let mut reader = store.get_log_reader().await;
    faults.hold(Op::Read);
    let read =
        std::thread::spawn(move || futures::executor::block_on(reader.try_get_log_entries(0..50)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while faults.held(Op::Read) == 0 {
        assert!(Instant::now() < deadline, "the read never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cut = std::thread::spawn(move || {
        futures::executor::block_on(store.truncate_after(Some(log_id::<Config>(1, 1, 4)))).unwrap();
        store
    });
    // Give a cut that does not wait the time to remove segments under the read.
    let window = Instant::now() + Duration::from_millis(300);
    while Instant::now() < window && segments() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        segments(),
        before,
        "segments went while a read was in progress"
    );
    faults.release(Op::Read);
    let entries = read.join().unwrap().expect("the read was not cut short");
    assert_eq!(entries.len(), 50);
    assert!(entries.iter().all(|e| e.log_id.leader_id.term == 1));
    let mut store = cut.join().unwrap();
    assert_eq!(read_all(&mut store).await.len(), 5);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
