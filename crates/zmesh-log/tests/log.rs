//! The log on real files: appends, rotation, reads, crashes at every kind of
//! byte offset, flipped bytes, retention.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{read_all, small, temp_dir};
use proptest::prelude::*;
use zmesh_log::{Log, LogConfig, Retention};

fn payload(i: u64) -> Vec<u8> {
    // Varied lengths, content tied to the offset so a mix-up shows.
    let len = (i * 37 % 300) as usize;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn appends_rotate_and_read_back_across_reopen() {
    let dir = temp_dir("rotate");
    {
        let (mut log, _) = Log::open(&dir, small()).unwrap();
        for i in 0..500 {
            assert_eq!(log.append(&payload(i)).unwrap(), i);
        }
        log.sync().unwrap();
        assert!(log.segment_count() > 10, "{} segments", log.segment_count());
        // Random access through the index, in every segment.
        for i in (0..500).step_by(7) {
            let r = log.read(i, 1, 0).unwrap();
            assert_eq!((r[0].offset, r[0].payload.to_vec()), (i, payload(i)));
        }
    }
    let (log, report) = Log::open(&dir, small()).unwrap();
    assert_eq!(report.records, 500);
    assert_eq!(report.torn_tail_bytes, 0);
    assert!(report.damaged.is_empty());
    assert_eq!(log.next_offset(), 500);
    let all = read_all(&log);
    assert_eq!(all.len(), 500);
    assert!(all.iter().all(|(o, p)| *p == payload(*o)));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unflushed_records_are_not_readable_and_flush_makes_them_so() {
    let dir = temp_dir("flush");
    let (mut log, _) = Log::open(&dir, LogConfig::default()).unwrap();
    log.append(b"a").unwrap();
    assert!(log.read(0, 10, 1 << 20).unwrap().is_empty());
    assert_eq!(log.written_offset(), 0);
    log.flush().unwrap();
    assert_eq!(log.written_offset(), 1);
    assert_eq!(log.read(0, 10, 1 << 20).unwrap().len(), 1);
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flipped_byte_in_an_old_segment_is_reported_and_the_rest_kept() {
    let dir = temp_dir("flip");
    {
        let (mut log, _) = Log::open(&dir, small()).unwrap();
        for i in 0..300 {
            log.append(&payload(i)).unwrap();
        }
    }
    let segs = segments(&dir);
    let victim = &segs[2];
    let mut bytes = fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(victim, &bytes).unwrap();

    let (log, report) = Log::open(&dir, small()).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let lost = report.damaged[0].offsets_lost.clone();
    assert_eq!(lost.end - lost.start, 1, "one record lost: {report:?}");
    let all = read_all(&log);
    assert_eq!(all.len(), 299);
    assert!(
        all.iter()
            .all(|(o, p)| *p == payload(*o) && !lost.contains(o))
    );
    // Reporting is stable: the damage stays on disk and is found again.
    drop(log);
    let (_, again) = Log::open(&dir, small()).unwrap();
    assert_eq!(again.damaged, report.damaged);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn remove_before_and_retention_drop_whole_old_segments() {
    let dir = temp_dir("retention");
    let (mut log, _) = Log::open(&dir, small()).unwrap();
    for i in 0..400 {
        log.append(&payload(i)).unwrap();
    }
    log.flush().unwrap();
    let before = log.segment_count();
    log.remove_before(100).unwrap();
    assert!(log.first_offset() <= 100 && log.first_offset() > 0);
    assert!(log.segment_count() < before);
    assert_eq!(log.read(0, 1, 0).unwrap()[0].offset, log.first_offset());
    // A read in flight 60 past the first offset keeps its segment, whatever the limit.
    let first = log.first_offset();
    let floor = Retention {
        records_max: Some(1),
        keep_from: Some(first + 60),
        ..Retention::default()
    };
    log.retain(&floor, std::time::SystemTime::now()).unwrap();
    assert!(log.first_offset() > first && log.first_offset() <= first + 60);
    let keep = Retention {
        records_max: Some(50),
        ..Retention::default()
    };
    log.retain(&keep, std::time::SystemTime::now()).unwrap();
    let kept = log.next_offset() - log.first_offset();
    assert!((50..50 + 100).contains(&kept), "kept {kept}");
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A crash can stop the file at any byte. Whatever the cut, reopening keeps
    /// exactly the records wholly before it, and appends continue after them.
    #[test]
    fn crash_at_any_byte_keeps_every_whole_record(n in 1u64..120, cut_frac in 0.0f64..1.0, sync_every in 1u64..20) {
        let dir = temp_dir("crash");
        let mut ends = Vec::new();
        {
            let (mut log, _) = Log::open(&dir, small()).unwrap();
            for i in 0..n {
                log.append(&payload(i)).unwrap();
                if i % sync_every == 0 { log.flush().unwrap(); }
            }
            log.flush().unwrap();
            std::mem::forget(log); // a crash: no clean close
        }
        // Cut the last segment at a random byte.
        let segs = segments(&dir);
        let last = segs.last().unwrap();
        let len = fs::metadata(last).unwrap().len();
        let cut = (len as f64 * cut_frac) as u64;
        let f = fs::OpenOptions::new().write(true).open(last).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        // Which records end at or before the cut?
        let mut pos = 0;
        for i in base..n {
            pos += 20 + payload(i).len() as u64;
            ends.push((i, pos));
        }
        let survivors = base + ends.iter().filter(|(_, e)| *e <= cut).count() as u64;

        let (mut log, report) = Log::open(&dir, small()).unwrap();
        prop_assert!(report.damaged.is_empty(), "{:?}", report);
        prop_assert_eq!(log.next_offset(), survivors);
        let all = read_all(&log);
        prop_assert_eq!(all.len() as u64, survivors);
        prop_assert!(all.iter().all(|(o, p)| *p == payload(*o)));
        // The log goes on from there.
        prop_assert_eq!(log.append(&payload(survivors)).unwrap(), survivors);
        log.flush().unwrap();
        prop_assert_eq!(read_all(&log).len() as u64, survivors + 1);
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Random garbage written over a random stretch of a random segment never
    /// panics the recovery, never yields a record that was not appended, and
    /// everything outside the stretch's records stays readable.
    #[test]
    fn garbage_anywhere_is_contained(n in 50u64..200, seg_pick in 0usize..100, at_frac in 0.0f64..1.0, garbage in proptest::collection::vec(any::<u8>(), 1..64)) {
        let dir = temp_dir("garbage");
        {
            let (mut log, _) = Log::open(&dir, small()).unwrap();
            for i in 0..n { log.append(&payload(i)).unwrap(); }
        }
        let segs = segments(&dir);
        let victim = &segs[seg_pick % segs.len()];
        let mut bytes = fs::read(victim).unwrap();
        if !bytes.is_empty() {
            let at = ((bytes.len() as f64 * at_frac) as usize).min(bytes.len() - 1);
            for (k, g) in garbage.iter().enumerate() {
                if at + k < bytes.len() { bytes[at + k] = *g; }
            }
            fs::write(victim, &bytes).unwrap();
        }
        let (log, report) = Log::open(&dir, small()).unwrap();
        let all = read_all(&log);
        prop_assert!(all.iter().all(|(o, p)| *p == payload(*o)), "a record changed");
        let lost: u64 = report.damaged.iter().map(|d| d.offsets_lost.end - d.offsets_lost.start).sum();
        // Damage in the last segment may be cut as a torn tail instead.
        prop_assert!(all.len() as u64 + lost <= n);
        prop_assert!(all.len() as u64 >= n.saturating_sub(lost + 64));
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// `read_at` answers exactly what `read` does, record by record, whatever the
/// order of the offsets asked (ascending hops, going back, other segments),
/// through the active segment as it grows, past removed segments and damage.
#[test]
fn read_at_finds_each_record_in_any_order_and_across_damage() {
    let dir = temp_dir("read-at");
    let (mut log, _) = Log::open(&dir, small()).unwrap();
    for i in 0..300 {
        log.append(&payload(i)).unwrap();
    }
    log.flush().unwrap();
    let mut cursor = zmesh_log::ReadCursor::default();
    let check =
        |log: &Log, cursor: &mut zmesh_log::ReadCursor, order: &mut dyn Iterator<Item = u64>| {
            for i in order {
                let r = log.read_at(cursor, i).unwrap().expect("a written record");
                assert_eq!((r.offset, r.payload.to_vec()), (i, payload(i)));
                assert_eq!(log.read(i, 1, 0).unwrap()[0], r, "what read gives");
            }
        };
    check(&log, &mut cursor, &mut (0..300).step_by(3));
    check(&log, &mut cursor, &mut (0..300).rev().step_by(5));
    check(&log, &mut cursor, &mut (0..300).map(|i| i * 7919 % 300));
    // The active segment grows under the cursor.
    let last = log.next_offset() - 1;
    check(&log, &mut cursor, &mut std::iter::once(last));
    for i in 300..320 {
        log.append(&payload(i)).unwrap();
    }
    // (Some were written out as the buffer filled, the rest are not yet.)
    let written = log.written_offset();
    assert!(written < 320);
    assert!(
        log.read_at(&mut cursor, written).unwrap().is_none(),
        "not written yet"
    );
    log.flush().unwrap();
    check(&log, &mut cursor, &mut (300..320).step_by(2));
    assert!(log.read_at(&mut cursor, 320).unwrap().is_none());
    // Removed segments are gone.
    log.remove_before(100).unwrap();
    let first = log.first_offset();
    assert!(first > 0 && first <= 100);
    assert!(log.read_at(&mut cursor, first - 1).unwrap().is_none());
    check(&log, &mut cursor, &mut (first..320).step_by(11));
    drop(log);

    // A flipped byte: its record is lost, its neighbours are found.
    let victim = &segments(&dir)[2];
    let mut bytes = fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(victim, &bytes).unwrap();
    let (log, report) = Log::open(&dir, small()).unwrap();
    let lost = report.damaged[0].offsets_lost.clone();
    let mut cursor = zmesh_log::ReadCursor::default();
    for i in log.first_offset()..320 {
        let r = log.read_at(&mut cursor, i).unwrap();
        if lost.contains(&i) {
            assert!(r.is_none(), "{i} was lost");
        } else {
            assert_eq!(r.expect("kept").payload.to_vec(), payload(i));
        }
    }
    // A view of the next n records reads what the log reads, damage and all.
    for from in 0..330 {
        for n in (1usize..=12).chain([50, 400]) {
            let view = log.view(from, n as u64);
            let (seen, want) = (
                view.read(from, n, usize::MAX).unwrap(),
                log.read(from, n, usize::MAX).unwrap(),
            );
            let offsets =
                |rs: &[zmesh_log::Record]| rs.iter().map(|r| r.offset).collect::<Vec<_>>();
            assert_eq!(offsets(&seen), offsets(&want), "{n} from {from}");
            assert!(seen == want, "the same records, {n} from {from}");
        }
    }
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

/// A view taken now and read later on another thread finds what the log
/// held when it was taken, though the log has since written more and
/// rotated (the view's segment is sealed): the view carries what it needs,
/// and sees nothing written after it.
#[test]
fn a_view_is_read_on_another_thread_after_the_log_moved_on() {
    let dir = temp_dir("view");
    let (mut log, _) = Log::open(&dir, small()).unwrap();
    for i in 0..10 {
        log.append(&payload(i)).unwrap();
    }
    log.flush().unwrap();
    let early = log.view(0, 10);
    assert_eq!((early.first_offset(), early.written_offset()), (0, 10));
    let segments_before = log.segment_count();
    for i in 10..400 {
        log.append(&payload(i)).unwrap();
    }
    log.flush().unwrap();
    assert!(
        log.segment_count() > segments_before,
        "the viewed segment is sealed"
    );
    let later = log.view(100, 200);
    assert!(later.first_offset() <= 100 && later.written_offset() >= 300);
    let (one, range, beyond) = std::thread::spawn(move || {
        let mut cursor = zmesh_log::ReadCursor::default();
        let one: Vec<_> = (0..10)
            .map(|i| early.read_at(&mut cursor, i).unwrap().expect("found"))
            .collect();
        let beyond = early.read_at(&mut cursor, 10).unwrap();
        (one, later.read(100, 200, usize::MAX).unwrap(), beyond)
    })
    .join()
    .unwrap();
    assert!(beyond.is_none(), "written after the view was taken");
    for r in one.iter().chain(&range) {
        assert_eq!(r.payload.to_vec(), payload(r.offset));
    }
    let offsets: Vec<u64> = one.iter().chain(&range).map(|r| r.offset).collect();
    let expect: Vec<u64> = (0..10).chain(100..300).collect();
    assert_eq!(offsets, expect);
    drop(log);
    fs::remove_dir_all(&dir).unwrap();
}

/// One cursor serving two logs (a read thread serves every stream): their
/// segments have the same bases, and a place found in one is never used in
/// the other.
#[test]
fn one_cursor_reads_two_logs_without_mixing_them() {
    let (dir_a, dir_b) = (temp_dir("cursor-a"), temp_dir("cursor-b"));
    let (mut a, _) = Log::open(&dir_a, small()).unwrap();
    let (mut b, _) = Log::open(&dir_b, small()).unwrap();
    for i in 0..20 {
        a.append(format!("a{i}").as_bytes()).unwrap();
        b.append(format!("b{i}").as_bytes()).unwrap();
    }
    a.flush().unwrap();
    b.flush().unwrap();
    let mut cursor = zmesh_log::ReadCursor::default();
    for i in 0..20 {
        let (log, name) = if i % 3 == 0 { (&b, "b") } else { (&a, "a") };
        let r = log
            .view(i, 1)
            .read_at(&mut cursor, i)
            .unwrap()
            .expect("written");
        assert_eq!(r.payload.to_vec(), format!("{name}{i}").into_bytes());
    }
    drop((a, b));
    fs::remove_dir_all(&dir_a).unwrap();
    fs::remove_dir_all(&dir_b).unwrap();
}
