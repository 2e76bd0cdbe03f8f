//! The durable writer on a disk that fails: random appends to two logs under
//! every durability, flushes, a disk that fills and frees up, failed fsyncs
//! and cuts, then a crash (process or power) and a reopen. Every waiter hears
//! exactly one outcome, and every record confirmed is found at its offset
//! afterwards (the sets of ids are compared, not counts).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::mpsc;
use std::time::Instant;

use common::{config, temp_dir};
use proptest::prelude::*;
use zmesh_log::faulty::{ENOSPC, Faults, Op};
use zmesh_log::{Durability, DurableWriter, Log};

/// A record: its id, then filler.
fn record(id: u64, len: usize) -> Vec<u8> {
    let mut r = id.to_le_bytes().to_vec();
    r.resize(8 + len, id as u8);
    r
}

fn id_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().unwrap())
}

#[derive(Clone, Debug)]
enum Step {
    Append {
        log: u64,
        len: usize,
        durability: u8,
    },
    Flush,
    LimitSpace(u64),
    FreeSpace,
    FailSync,
    FailCut,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u64..2, 0usize..300, 0u8..4)
            .prop_map(|(log, len, durability)| Step::Append { log, len, durability }),
        3 => Just(Step::Flush),
        1 => (0u64..3000).prop_map(Step::LimitSpace),
        1 => Just(Step::FreeSpace),
        1 => Just(Step::FailSync),
        1 => Just(Step::FailCut),
    ]
}

struct Harness {
    writer: DurableWriter<u64>,
    rx: mpsc::Receiver<(u64, std::io::Result<u64>)>,
    /// Waiter id → (log, durability asked, outcome).
    outcomes: BTreeMap<u64, Result<u64, String>>,
    asked: BTreeMap<u64, (u64, Durability)>,
}

impl Harness {
    fn collect(&mut self) {
        for (id, result) in self.writer.take_outcomes() {
            let before = self.outcomes.insert(id, result);
            assert!(before.is_none(), "waiter {id} heard twice");
        }
    }

    /// Flush, then deliver group commits until nothing waits for one. Each
    /// flush asks at most one sync per log and the syncer answers each on its
    /// own (`group_commit_bytes` 1), so this reads exactly the answers due
    /// and no fsync runs while the next step does.
    fn flush(&mut self) {
        self.writer.flush(Instant::now());
        self.collect();
        while self.writer.unsynced_records() > 0 {
            // Every record waiting has a sync asked for it: an answer is due.
            let (log, result) = self
                .rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("records wait for a sync nobody asked for");
            self.writer.on_durable(log, result, Instant::now());
            self.collect();
        }
    }
}

fn run(steps: Vec<Step>, power_cut: bool, keep_seed: u64) -> Result<(), TestCaseError> {
    let dir = temp_dir("sim");
    let faults = Faults::default();
    let (tx, rx) = mpsc::channel();
    let mut writer = DurableWriter::new(0, 1, move |log, r| {
        let _ = tx.send((log, r));
    });
    for id in 0..2u64 {
        let (log, _) = Log::open(dir.join(id.to_string()), config(&faults)).unwrap();
        writer.add_log(id, log);
    }
    let mut h = Harness {
        writer,
        rx,
        outcomes: BTreeMap::new(),
        asked: BTreeMap::new(),
    };
    let mut next_id = 0u64;
    for step in steps {
        match step {
            Step::Append {
                log,
                len,
                durability,
            } => {
                let id = next_id;
                next_id += 1;
                let durability = match durability {
                    0 => None,
                    1 => Some(Durability::Os),
                    2 => Some(Durability::Group {
                        max_delay_ms: 0,
                        max_bytes: 1,
                    }),
                    _ => Some(Durability::Always),
                };
                if let Some(d) = durability {
                    h.asked.insert(id, (log, d));
                }
                let _ = h
                    .writer
                    .append(log, &record(id, len), durability.map(|d| (id, d)));
                h.collect();
            }
            Step::Flush => h.flush(),
            Step::LimitSpace(bytes) => faults.limit_space(Some(bytes), ENOSPC),
            Step::FreeSpace => faults.limit_space(None, ENOSPC),
            Step::FailSync => faults.fail_next(Op::Sync, 1),
            Step::FailCut => faults.fail_next(Op::SetLen, 1),
        }
    }
    faults.limit_space(None, ENOSPC);
    faults.fail_next(Op::Sync, 0);
    faults.fail_next(Op::SetLen, 0);
    h.flush();
    prop_assert!(h.writer.settled());
    let heard: BTreeSet<u64> = h.outcomes.keys().copied().collect();
    let asked: BTreeSet<u64> = h.asked.keys().copied().collect();
    prop_assert_eq!(&heard, &asked, "every waiter hears exactly once");

    // Confirmed records read back at their offsets while running.
    for (id, result) in &h.outcomes {
        if let Ok(offset) = result {
            let log = h.writer.log(h.asked[id].0).unwrap();
            let r = log.read(*offset, 1, 0).unwrap();
            prop_assert_eq!(
                r.first().map(|r| (r.offset, id_of(&r.payload))),
                Some((*offset, *id))
            );
        }
    }

    // A crash: the process dies (page cache kept) or the power goes (unsynced bytes torn).
    faults.halt();
    drop(h.writer);
    faults.restart(power_cut.then_some(keep_seed)).unwrap();
    let mut recovered: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for log_id in 0..2u64 {
        let (log, report) = Log::open(dir.join(log_id.to_string()), config(&faults)).unwrap();
        prop_assert!(report.damaged.is_empty(), "{:?}", report);
        let mut from = 0;
        loop {
            let batch = log.read(from, 64, 1 << 20).unwrap();
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            for r in batch {
                recovered.insert((log_id, r.offset), id_of(&r.payload));
            }
        }
    }
    // Every confirmed id that its policy promises to keep is at its offset.
    let mut must_keep = BTreeSet::new();
    let mut found = BTreeSet::new();
    for (id, result) in &h.outcomes {
        let (log, durability) = h.asked[id];
        let Ok(offset) = result else { continue };
        if power_cut && durability == Durability::Os {
            continue;
        }
        must_keep.insert(*id);
        if recovered.get(&(log, *offset)) == Some(id) {
            found.insert(*id);
        }
    }
    prop_assert_eq!(must_keep, found);
    fs::remove_dir_all(&dir).unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn confirmed_records_survive_a_failing_disk_and_a_crash(
        steps in prop::collection::vec(step(), 1..200),
        power_cut in any::<bool>(),
        keep_seed in any::<u64>(),
    ) {
        run(steps, power_cut, keep_seed)?;
    }
}

/// Step 0's case through the writer: records buffered, then an append whose
/// own flush fails; every buffered record fails with it and none is ever
/// confirmed under a sequence that is then reused.
#[test]
fn a_failed_flush_fails_every_buffered_record_it_lost() {
    let dir = temp_dir("buffered");
    let faults = Faults::default();
    let (tx, _rx) = mpsc::channel();
    let mut writer = DurableWriter::new(0, 1, move |log, r| {
        let _ = tx.send((log, r));
    });
    writer.add_log(0, Log::open(&dir, config(&faults)).unwrap().0);
    for id in 0..3 {
        writer
            .append(0, &record(id, 100), Some((id, Durability::Os)))
            .unwrap();
    }
    faults.limit_space(Some(50), ENOSPC);
    // 1,000 more bytes fill the 1 KiB buffer: the append writes it out, and fails.
    assert!(
        writer
            .append(0, &record(3, 1000), Some((3, Durability::Os)))
            .is_err()
    );
    let outcomes = writer.take_outcomes();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|(_, r)| r.as_ref().is_err_and(|e| e.starts_with("disk full"))),
        "{outcomes:?}"
    );
    faults.limit_space(None, ENOSPC);
    writer
        .append(0, &record(4, 10), Some((4, Durability::Os)))
        .unwrap();
    writer.flush(Instant::now());
    assert_eq!(writer.take_outcomes(), vec![(4, Ok(0))]);
    drop(writer);
    fs::remove_dir_all(&dir).unwrap();
}

/// Found by the simulation: the disk fills inside an index entry and the
/// cut fails, leaving a torn entry that misaligned every later one, so
/// written records read back as missing. The index is no longer used then.
#[test]
fn a_torn_index_entry_that_cannot_be_cut_is_not_read() {
    use Step::*;
    let append = |log, len, durability| Append {
        log,
        len,
        durability,
    };
    let steps = vec![
        FailCut,
        append(1, 142, 0),
        append(0, 284, 0),
        append(0, 28, 0),
        append(0, 102, 0),
        LimitSpace(766),
        append(0, 23, 0),
        Flush,
        append(1, 58, 0),
        append(1, 0, 1),
    ];
    run(steps, false, 0).unwrap();
}

/// The caller's own group commit (the channel's outbox): `sync` confirms
/// every record waiting, or fails them all and poisons the log; no syncer
/// thread is asked for anything.
#[test]
fn sync_here_confirms_or_fails_every_waiting_record() {
    let dir = temp_dir("sync-here");
    let faults = Faults::default();
    let mut writer = DurableWriter::new(0, 1, |_, _| panic!("no group commit is asked for"));
    writer.add_log(0, Log::open(&dir, config(&faults)).unwrap().0);
    let group = Durability::GROUP_DEFAULT;
    for id in 0..3 {
        writer
            .append(0, &record(id, 700), Some((id, group)))
            .unwrap();
    }
    writer.sync(0);
    assert_eq!(
        writer.take_outcomes(),
        vec![(0, Ok(0)), (1, Ok(1)), (2, Ok(2))]
    );
    for id in 3..6 {
        writer
            .append(0, &record(id, 700), Some((id, group)))
            .unwrap();
    }
    faults.fail_next(Op::Sync, 1);
    writer.sync(0);
    let outcomes = writer.take_outcomes();
    let failed: Vec<u64> = outcomes
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(failed, vec![3, 4, 5], "{outcomes:?}");
    assert!(writer.settled());
    assert!(writer.log(0).unwrap().poisoned().is_some());
    drop(writer);
    fs::remove_dir_all(&dir).unwrap();
}

/// `always` waits on the syncer thread, never on the caller's: while its
/// fsync hangs, the caller goes on (an `os` record is written and done),
/// and the sync skips the group commit delay (a minute here).
#[test]
fn an_always_record_is_synced_at_once_off_the_callers_thread() {
    let dir = temp_dir("always-off-thread");
    let faults = Faults::default();
    let (tx, rx) = mpsc::channel();
    let mut writer = DurableWriter::new(60_000, 1 << 30, move |log, r| {
        let _ = tx.send((log, r));
    });
    writer.add_log(0, Log::open(&dir, config(&faults)).unwrap().0);
    faults.hold(Op::Sync);
    writer
        .append(0, &record(0, 100), Some((0, Durability::Always)))
        .unwrap();
    writer.flush(Instant::now());
    assert_eq!(
        writer.take_outcomes(),
        vec![],
        "nothing is done before its fsync"
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while faults.held(Op::Sync) == 0 {
        assert!(
            Instant::now() < deadline,
            "the syncer never started the fsync"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    writer
        .append(0, &record(1, 100), Some((1, Durability::Os)))
        .unwrap();
    writer.flush(Instant::now());
    assert_eq!(writer.take_outcomes(), vec![(1, Ok(1))]);
    faults.release(Op::Sync);
    let (log, result) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the fsync ran without the group commit delay");
    writer.on_durable(log, result, Instant::now());
    assert_eq!(writer.take_outcomes(), vec![(0, Ok(0))]);
    drop(writer);
    fs::remove_dir_all(&dir).unwrap();
}

/// Group commits that run at once, each waiter its record's id.
const GROUP_AT_ONCE: Durability = Durability::Group {
    max_delay_ms: 0,
    max_bytes: 1,
};

/// Answers of group commits, as the syncer callback hears them.
type SyncAnswers = mpsc::Receiver<(u64, std::io::Result<u64>)>;

/// A writer over log 0 in `dir` holding records 0..`records` (ids =
/// offsets), written, and the answer to their group commit taken from the
/// syncer but not yet handed to the writer: as if it arrived late.
fn records_and_their_late_sync_answer(
    dir: &std::path::Path,
    faults: &Faults,
    records: u64,
) -> (DurableWriter<u64>, SyncAnswers, (u64, std::io::Result<u64>)) {
    let (tx, rx) = mpsc::channel();
    let mut writer = DurableWriter::new(0, 1, move |tag, r| {
        let _ = tx.send((tag, r));
    });
    writer.add_log(0, Log::open(dir, config(faults)).unwrap().0);
    for id in 0..records {
        writer
            .append(0, &record(id, 100), Some((id, GROUP_AT_ONCE)))
            .unwrap();
    }
    writer.flush(Instant::now());
    let late = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a group commit");
    (writer, rx, late)
}

/// A cut settles every waiter first (a sync on the caller's thread), and a
/// group commit answered from before the cut confirms nothing after it,
/// though it names offsets the log gives out again.
#[test]
fn a_cut_settles_waiters_and_a_sync_from_before_it_vouches_for_nothing_after() {
    let dir = temp_dir("cut");
    let faults = Faults::default();
    let (mut writer, rx, before_cut) = records_and_their_late_sync_answer(&dir, &faults, 10);
    writer.truncate(0, 5).unwrap();
    let settled: Vec<_> = writer.take_outcomes();
    assert_eq!(settled, (0..10).map(|id| (id, Ok(id))).collect::<Vec<_>>());
    for id in 100..103 {
        let offset = writer
            .append(0, &record(id, 100), Some((id, GROUP_AT_ONCE)))
            .unwrap();
        assert_eq!(offset, id - 95);
    }
    writer.flush(Instant::now());
    let (tag, result) = before_cut;
    assert_eq!(result.as_ref().ok(), Some(&10), "it named offsets below 10");
    writer.on_durable(tag, result, Instant::now());
    assert_eq!(
        writer.take_outcomes(),
        vec![],
        "the stale sync vouched for a new record"
    );
    let (tag, result) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a group commit after the cut");
    writer.on_durable(tag, result, Instant::now());
    assert_eq!(
        writer.take_outcomes(),
        vec![(100, Ok(5)), (101, Ok(6)), (102, Ok(7))]
    );
    let log = writer.log(0).unwrap();
    let ids: Vec<u64> = log
        .read(0, 100, 1 << 20)
        .unwrap()
        .iter()
        .map(|r| id_of(&r.payload))
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 100, 101, 102]);
    drop(writer);
    fs::remove_dir_all(&dir).unwrap();
}

/// Linux reports a failed writeback to one fsync only: when that is the
/// one a cut retired, its error still poisons the log, and what waits for a
/// sync fails instead of being confirmed later.
#[test]
fn a_failed_sync_from_before_a_cut_still_poisons_the_log() {
    let dir = temp_dir("cut-eio");
    let faults = Faults::default();
    let (mut writer, _answers, (stale_tag, _)) =
        records_and_their_late_sync_answer(&dir, &faults, 4);
    writer.truncate(0, 2).unwrap();
    assert_eq!(writer.take_outcomes().len(), 4);
    writer
        .append(0, &record(10, 100), Some((10, GROUP_AT_ONCE)))
        .unwrap();
    writer.flush(Instant::now());
    writer.on_durable(
        stale_tag,
        Err(std::io::Error::from_raw_os_error(5)),
        Instant::now(),
    );
    assert!(writer.log(0).unwrap().poisoned().is_some());
    let outcomes = writer.take_outcomes();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].0, 10);
    assert!(outcomes[0].1.is_err(), "{outcomes:?}");
    drop(writer);
    fs::remove_dir_all(&dir).unwrap();
}
