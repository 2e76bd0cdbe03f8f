//! Cutting a log's tail and restarting it further on, as a replica does when
//! another's log wins (a Raft follower's conflicting entries) or when it
//! takes a snapshot newer than its log: on real files, across reopens,
//! power cuts and damage.

mod common;

use std::fs;

use common::{config, read_all, small, temp_dir};
use proptest::prelude::*;
use zmesh_log::faulty::Faults;
use zmesh_log::{Log, LogError, ReadCursor};

/// Varied lengths; the content names the offset and which writer (`era`)
/// wrote it, so a record that survived a cut shows.
fn payload(era: u8, i: u64) -> Vec<u8> {
    let len = 16 + (i * 37 % 300) as usize;
    let mut p = vec![era; len];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn expected(eras: &[(u8, std::ops::Range<u64>)]) -> Vec<(u64, Vec<u8>)> {
    eras.iter()
        .flat_map(|(era, range)| range.clone().map(move |i| (i, payload(*era, i))))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the cut point (in the active segment, in a sealed one, at a
    /// segment's base, at the very start), the log holds exactly the prefix,
    /// takes new records at the cut, and a reopen finds the same.
    #[test]
    fn a_cut_keeps_exactly_the_prefix_and_new_records_follow(
        written in 1u64..160,
        cut_frac in 0.0f64..1.0,
        after in 0u64..80,
    ) {
        let dir = temp_dir("prefix");
        let cut = (written as f64 * cut_frac) as u64;
        {
            let (mut log, _) = Log::open(&dir, small()).unwrap();
            for i in 0..written {
                log.append(&payload(1, i)).unwrap();
            }
            log.flush().unwrap();
            let mut cursor = ReadCursor::default();
            // A cursor placed past the cut must not serve the old record.
            if let Some(at) = written.checked_sub(1) {
                log.read_at(&mut cursor, at).unwrap();
            }
            log.truncate_from(cut).unwrap();
            prop_assert_eq!(log.next_offset(), cut);
            prop_assert_eq!(read_all(&log), expected(&[(1, 0..cut)]));
            for i in cut..cut + after {
                prop_assert_eq!(log.append(&payload(2, i)).unwrap(), i);
            }
            log.flush().unwrap();
            if after > 0 {
                let last = cut + after - 1;
                let record = log.read_at(&mut cursor, last).unwrap().unwrap();
                prop_assert_eq!(record.payload.to_vec(), payload(2, last));
            }
            prop_assert_eq!(read_all(&log), expected(&[(1, 0..cut), (2, cut..cut + after)]));
        }
        let (log, report) = Log::open(&dir, small()).unwrap();
        prop_assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        prop_assert_eq!(report.torn_tail_bytes, 0);
        prop_assert_eq!(read_all(&log), expected(&[(1, 0..cut), (2, cut..cut + after)]));
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A power cut right after a cut, or after records appended and synced
    /// behind it, never brings a cut record back.
    #[test]
    fn a_power_cut_after_a_cut_never_brings_cut_records_back(
        written in 1u64..120,
        cut_frac in 0.0f64..1.0,
        after in 0u64..40,
        seed in any::<u64>(),
    ) {
        let dir = temp_dir("power");
        let faults = Faults::default();
        let config = config(&faults);
        let cut = (written as f64 * cut_frac) as u64;
        {
            let (mut log, _) = Log::open(&dir, config.clone()).unwrap();
            for i in 0..written {
                log.append(&payload(1, i)).unwrap();
            }
            log.sync().unwrap();
            log.truncate_from(cut).unwrap();
            for i in cut..cut + after {
                log.append(&payload(2, i)).unwrap();
            }
            log.sync().unwrap();
            faults.halt();
        }
        faults.restart(Some(seed)).unwrap();
        let (log, _) = Log::open(&dir, config).unwrap();
        prop_assert_eq!(read_all(&log), expected(&[(1, 0..cut), (2, cut..cut + after)]));
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_cut_below_the_first_record_is_refused_and_changes_nothing() {
    let dir = temp_dir("below");
    let (mut log, _) = Log::open(&dir, small()).unwrap();
    for i in 0..100 {
        log.append(&payload(1, i)).unwrap();
    }
    log.sync().unwrap();
    let first = log.oldest_sealed_end().expect("several segments");
    log.remove_before(first).unwrap();
    let before = read_all(&log);
    let refused = log.truncate_from(first - 1).unwrap_err();
    assert!(matches!(refused, LogError::OutOfRange { offset, .. } if offset == first - 1));
    assert_eq!(read_all(&log), before);
    assert_eq!(log.next_offset(), 100);
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_bytes_after_the_cut_go_with_it() {
    let dir = temp_dir("damage");
    {
        let (mut log, _) = Log::open(&dir, small()).unwrap();
        for i in 0..40 {
            log.append(&payload(1, i)).unwrap();
        }
        log.sync().unwrap();
    }
    // Garbage in the middle of the first segment: the records in it are lost.
    let first = dir.join(format!("{:020}.log", 0));
    let mut bytes = fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64].fill(0xEE);
    fs::write(&first, bytes).unwrap();
    let (mut log, report) = Log::open(&dir, small()).unwrap();
    assert_eq!(report.damaged.len(), 1);
    let lost = report.damaged[0].offsets_lost.clone();
    // Cut at the first lost offset: the garbage before the next record goes too.
    log.truncate_from(lost.start).unwrap();
    let kept: Vec<_> = expected(&[(1, 0..lost.start)]);
    assert_eq!(read_all(&log), kept);
    for i in lost.start..lost.start + 10 {
        assert_eq!(log.append(&payload(2, i)).unwrap(), i);
    }
    log.sync().unwrap();
    drop(log);
    let (log, report) = Log::open(&dir, small()).unwrap();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.torn_tail_bytes, 0);
    let mut want = kept;
    want.extend(expected(&[(2, lost.start..lost.start + 10)]));
    assert_eq!(read_all(&log), want);
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restart_drops_every_record_and_numbers_on_from_there() {
    let dir = temp_dir("restart");
    {
        let (mut log, _) = Log::open(&dir, small()).unwrap();
        for i in 0..100 {
            log.append(&payload(1, i)).unwrap();
        }
        let refused = log.restart_at(99).unwrap_err();
        assert!(matches!(refused, LogError::OutOfRange { offset: 99, .. }));
        log.restart_at(1_000).unwrap();
        assert_eq!((log.first_offset(), log.next_offset()), (1_000, 1_000));
        assert_eq!(log.segment_count(), 1);
        assert!(read_all(&log).is_empty());
        for i in 1_000..1_050 {
            assert_eq!(log.append(&payload(2, i)).unwrap(), i);
        }
        log.sync().unwrap();
    }
    let (mut log, report) = Log::open(&dir, small()).unwrap();
    assert!(report.damaged.is_empty());
    assert_eq!(read_all(&log), expected(&[(2, 1_000..1_050)]));
    // Restarting a log that is empty where it stands changes nothing.
    log.truncate_from(1_000).unwrap();
    log.restart_at(1_000).unwrap();
    assert_eq!((log.first_offset(), log.next_offset()), (1_000, 1_000));
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restart_cut_short_by_a_crash_leaves_a_gap_that_removal_clears() {
    let dir = temp_dir("restart-crash");
    {
        let (mut log, _) = Log::open(&dir, small()).unwrap();
        for i in 0..20 {
            log.append(&payload(1, i)).unwrap();
        }
        log.sync().unwrap();
    }
    // What a crash between creating the new segment and removing the old
    // ones leaves behind.
    fs::write(dir.join(format!("{:020}.log", 500)), b"").unwrap();
    let (mut log, report) = Log::open(&dir, small()).unwrap();
    assert_eq!(report.damaged.len(), 1, "the gap is reported");
    assert_eq!(report.damaged[0].offsets_lost, 20..500);
    log.remove_before(500).unwrap();
    assert!(log.damaged().is_empty(), "{:?}", log.damaged());
    assert_eq!(log.first_offset(), 500);
    assert_eq!(log.append(&payload(2, 500)).unwrap(), 500);
    log.flush().unwrap();
    assert_eq!(read_all(&log), expected(&[(2, 500..501)]));
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

/// A cut that fails part-way (a segment that will not go, a file that will
/// not shrink) leaves the log's idea of its files wrong: it takes no more
/// writes, and a reopen finds a prefix of what was there.
#[test]
fn a_cut_that_fails_part_way_poisons_the_log() {
    for op in [zmesh_log::faulty::Op::Remove, zmesh_log::faulty::Op::SetLen] {
        let dir = temp_dir("cut-fails");
        let faults = Faults::default();
        let config = config(&faults);
        {
            let (mut log, _) = Log::open(&dir, config.clone()).unwrap();
            for i in 0..100 {
                log.append(&payload(1, i)).unwrap();
            }
            log.sync().unwrap();
            assert!(log.segment_count() > 2);
            faults.fail_next(op, 1);
            assert!(log.truncate_from(10).is_err(), "{op:?}");
            assert!(log.poisoned().is_some(), "{op:?}");
            assert!(log.append(&payload(2, 10)).is_err(), "{op:?}");
        }
        let (log, _) = Log::open(&dir, config).unwrap();
        let found = read_all(&log);
        let all = expected(&[(1, 0..100)]);
        assert!(all.starts_with(&found), "{op:?}: not a prefix");
        assert!(
            found.len() >= 10,
            "{op:?}: the cut took more than it was asked"
        );
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}
