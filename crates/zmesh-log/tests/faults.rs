//! The log on a disk that fails: short writes and a full disk at any byte, a
//! failed fsync, a failed cut, a rotation failing half-way, and power cuts
//! that tear unsynced bytes. Each test keeps a model of which records the log
//! said were written (or synced) and compares the sets of offsets and
//! payloads read back, before and after a reopen.

mod common;

use std::fs;
use std::sync::mpsc;

use common::{config, read_all, temp_dir};
use proptest::prelude::*;
use zmesh_log::faulty::{EFBIG, ENOSPC, Faults, Op};
use zmesh_log::{Log, LogError, ReadCursor, Syncer};

/// Content tied to the offset and to a generation, so a reused offset holding
/// an older record shows.
fn payload(offset: u64, generation: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (offset as usize * 7 + generation as usize * 13 + j) as u8)
        .collect()
}

/// Every record again through `read_at`, as a queue reads its bodies.
fn read_each(log: &Log, count: u64) -> Vec<(u64, Vec<u8>)> {
    let mut cursor = ReadCursor::default();
    (0..count)
        .map(|o| {
            let r = log
                .read_at(&mut cursor, o)
                .unwrap()
                .expect("record present");
            (o, r.payload.to_vec())
        })
        .collect()
}

/// The log as the model says it is: records written (flush returned) so far.
struct Model {
    written: Vec<(u64, Vec<u8>)>,
    /// Appended, not yet written.
    pending: Vec<(u64, Vec<u8>)>,
}

impl Model {
    fn new() -> Model {
        Model {
            written: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// A write failed: everything pending is lost and its offsets reused.
    fn lose_pending(&mut self, log: &Log, error: &LogError) {
        self.pending.clear();
        assert_eq!(
            log.next_offset(),
            self.written.len() as u64,
            "offsets reused after {error}"
        );
        assert_eq!(log.written_offset(), self.written.len() as u64);
    }

    fn flushed(&mut self) {
        self.written.append(&mut self.pending);
    }
}

/// Append `lens.len()` records, flushing every `flush_every`; returns the
/// first error with the model updated for it.
fn append_some(
    log: &mut Log,
    model: &mut Model,
    lens: &[usize],
    flush_every: usize,
    generation: u64,
) -> Option<LogError> {
    for (i, &len) in lens.iter().enumerate() {
        let offset = log.next_offset();
        let body = payload(offset, generation, len);
        let written_before = log.written_offset();
        match log.append(&body) {
            Ok(o) => {
                assert_eq!(o, offset);
                model.pending.push((o, body));
                // The buffer may have been written out by the append itself.
                if log.written_offset() > written_before {
                    let n = (log.written_offset() - written_before) as usize;
                    assert!(n <= model.pending.len());
                    let rest = model.pending.split_off(n);
                    model.flushed();
                    model.pending = rest;
                }
            }
            Err(e) => {
                model.lose_pending(log, &e);
                return Some(e);
            }
        }
        if (i + 1) % flush_every == 0 {
            if let Err(e) = log.flush() {
                model.lose_pending(log, &e);
                return Some(e);
            }
            model.flushed();
        }
    }
    if let Err(e) = log.flush() {
        model.lose_pending(log, &e);
        return Some(e);
    }
    model.flushed();
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The disk fills at any byte (ENOSPC or EFBIG): the write that crosses
    /// the limit is cut back and fails exactly the records it carried; space
    /// freed, the log goes on at the reused offsets; a reopen reads the same.
    #[test]
    fn a_full_disk_at_any_byte_loses_only_the_failed_write(
        lens in prop::collection::vec(0usize..400, 1..120),
        flush_every in 1usize..8,
        space in 0u64..40_000,
        efbig in any::<bool>(),
    ) {
        let dir = temp_dir("full");
        let faults = Faults::default();
        let errno = if efbig { EFBIG } else { ENOSPC };
        faults.limit_space(Some(space), errno);
        let (mut log, _) = Log::open(&dir, config(&faults)).unwrap();
        let mut model = Model::new();
        let first = append_some(&mut log, &mut model, &lens, flush_every, 1);
        if let Some(e) = &first {
            prop_assert!(e.is_no_space(), "{e}");
            // Still full: the next write fails the same way, and loses nothing written.
            if let Some(e) = append_some(&mut log, &mut model, &[10, 20], 1, 2) {
                prop_assert!(e.is_no_space(), "{e}");
            }
        }
        prop_assert_eq!(read_all(&log), model.written.clone());
        faults.limit_space(None, ENOSPC);
        prop_assert!(append_some(&mut log, &mut model, &lens[..lens.len().min(30)], 3, 3).is_none());
        prop_assert_eq!(read_all(&log), model.written.clone());
        let count = model.written.len() as u64;
        prop_assert_eq!(read_each(&log, count), model.written.clone());
        log.sync().unwrap();
        drop(log);
        let (log, report) = Log::open(&dir, config(&faults)).unwrap();
        prop_assert!(report.damaged.is_empty(), "{:?}", report);
        prop_assert_eq!(report.torn_tail_bytes, 0);
        prop_assert_eq!(read_all(&log), model.written.clone());
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Power cut at any point: every synced record comes back, then some
    /// prefix of the unsynced ones (a torn tail is cut), and nothing else;
    /// appends go on after the last record recovered.
    #[test]
    fn a_power_cut_keeps_every_synced_record_and_a_prefix_of_the_rest(
        steps in prop::collection::vec((0usize..300, 0u8..10), 1..150),
        keep_seed in any::<u64>(),
    ) {
        let dir = temp_dir("power");
        let faults = Faults::default();
        let (mut log, _) = Log::open(&dir, config(&faults)).unwrap();
        let mut appended = Vec::new();
        let mut synced = 0u64;
        for (len, action) in steps {
            let offset = log.append(&payload(appended.len() as u64, 1, len)).unwrap();
            appended.push((offset, payload(offset, 1, len)));
            match action {
                0 => {
                    log.sync().unwrap();
                    synced = log.next_offset();
                }
                1..=3 => log.flush().unwrap(),
                _ => {}
            }
        }
        faults.halt();
        // The clean close's sync fails: nothing more reaches the disk.
        drop(log);
        faults.restart(Some(keep_seed)).unwrap();
        let (mut log, report) = Log::open(&dir, config(&faults)).unwrap();
        prop_assert!(report.damaged.is_empty(), "{:?}", report);
        let recovered = read_all(&log);
        let n = recovered.len();
        prop_assert!(n as u64 >= synced, "{} recovered, {} synced", n, synced);
        prop_assert_eq!(&recovered[..], &appended[..n]);
        prop_assert_eq!(log.next_offset(), n as u64);
        let next = log.append(b"after").unwrap();
        prop_assert_eq!(next, n as u64);
        log.sync().unwrap();
        prop_assert_eq!(&log.read(next, 1, 1 << 20).unwrap()[0].payload[..], b"after");
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_failed_cut_after_a_short_write_poisons_and_a_reopen_recovers() {
    let dir = temp_dir("cut");
    let faults = Faults::default();
    let (mut log, _) = Log::open(&dir, config(&faults)).unwrap();
    let mut model = Model::new();
    assert!(append_some(&mut log, &mut model, &[100; 5], 5, 1).is_none());
    // The next flush writes 30 bytes of its record, then the disk is full
    // and the cut fails too: a torn record stays at the end of the file.
    faults.limit_space(Some(30), ENOSPC);
    faults.fail_next(Op::SetLen, 1);
    log.append(&[7; 100]).unwrap();
    let e = log.flush().unwrap_err();
    assert!(e.is_no_space(), "{e}");
    assert!(log.poisoned().is_some());
    faults.limit_space(None, ENOSPC);
    let e = log.append(b"more").unwrap_err();
    assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
    assert_eq!(read_all(&log), model.written);
    drop(log);
    let (mut log, report) = Log::open(&dir, config(&faults)).unwrap();
    assert_eq!(report.torn_tail_bytes, 30, "{report:?}");
    assert_eq!(read_all(&log), model.written);
    assert_eq!(log.append(b"more").unwrap(), 5);
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let dir = temp_dir("fsync");
    let faults = Faults::default();
    let (mut log, _) = Log::open(&dir, config(&faults)).unwrap();
    log.append(b"a").unwrap();
    log.sync().unwrap();
    log.append(b"b").unwrap();
    faults.fail_next(Op::Sync, 1);
    let e = log.sync().unwrap_err();
    assert!(matches!(e, LogError::Io { .. }), "{e}");
    assert!(log.poisoned().unwrap().contains("fsync"));
    let e = log.append(b"c").unwrap_err();
    assert!(matches!(e, LogError::Poisoned { .. }), "{e}");
    assert_eq!(faults.failed(Op::Sync), 1);
    drop(log);
    // A reopen reads what is on disk and takes writes again.
    let (mut log, _) = Log::open(&dir, config(&faults)).unwrap();
    assert_eq!(log.append(b"c").unwrap(), 2);
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_syncer_reports_a_failed_fsync_and_the_log_can_be_poisoned_with_it() {
    let dir = temp_dir("syncer");
    let faults = Faults::default();
    let (mut log, _) = Log::open(&dir, config(&faults)).unwrap();
    let (tx, rx) = mpsc::channel();
    let syncer = Syncer::spawn(0, 1, move |tag, r| {
        let _ = tx.send((tag, r));
    });
    log.append(b"x").unwrap();
    log.flush().unwrap();
    faults.fail_next(Op::Sync, 1);
    let (file, offset) = log.sync_target();
    syncer.request(3, file, offset, 17, false);
    let (tag, result) = rx.recv().unwrap();
    assert_eq!(tag, 3);
    let e = result.unwrap_err();
    log.poison_after_failed_sync(&e);
    assert!(matches!(
        log.append(b"y").unwrap_err(),
        LogError::Poisoned { .. }
    ));
    drop(syncer);
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_rotation_that_fails_half_way_is_retried_by_the_next_append() {
    for op in [Op::Open, Op::SyncDir, Op::Sync] {
        let dir = temp_dir("rotation");
        let faults = Faults::default();
        let (mut log, _) = Log::open(&dir, config(&faults)).unwrap();
        let mut model = Model::new();
        // Fill the first segment up to the edge of rotation.
        while log.segment_count() == 1 {
            let o = log.next_offset();
            let body = payload(o, 1, 300);
            if log.segment_count() == 1 && log.bytes() + 320 > 4096 {
                faults.fail_next(op, 1);
                let e = log.append(&body).unwrap_err();
                assert!(matches!(e, LogError::Io { .. }), "{op:?}: {e}");
                break;
            }
            log.append(&body).unwrap();
            model.pending.push((o, body));
        }
        model.flushed();
        if op == Op::Sync {
            // The rotation's sync failed: the log is poisoned until reopened.
            assert!(log.poisoned().is_some());
            drop(log);
            let (reopened, _) = Log::open(&dir, config(&faults)).unwrap();
            log = reopened;
        }
        assert!(append_some(&mut log, &mut model, &[300; 20], 4, 2).is_none());
        assert!(log.segment_count() > 1);
        assert_eq!(read_all(&log), model.written);
        drop(log);
        let (log, report) = Log::open(&dir, config(&faults)).unwrap();
        assert!(report.damaged.is_empty(), "{op:?}: {report:?}");
        assert_eq!(read_all(&log), model.written, "{op:?}");
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}
