//! Journal compaction: moves, their races with settles, and held messages.

use super::*;

#[test]
fn compaction_moves_old_messages_forward_keeping_their_place_and_deliveries() {
    let mut s = declared(r#"{"ack_timeout_ms": 1000}"#);
    for i in 0..6 {
        s.send(
            "p",
            &[
                "PUBLISH",
                &i.to_string(),
                "jobs",
                &format!("id{i}"),
                &format!("m{i}"),
            ],
        );
    }
    s.sync();
    // m0 is delivered once and comes back (its consumer cancels): the move
    // must keep its count.
    s.send("c", &["CONSUME", "x", "jobs", "1"]);
    assert_eq!(s.tags("c"), ["0"]);
    s.send("c", &["CANCEL", "x", "jobs"]);
    s.sent.clear();
    // Idle long enough to count as not being consumed (no tick: nothing else moves).
    s.now += crate::queue::core::COMPACT_IDLE_MS;
    // Everything below the fourth message moves; nothing else.
    let below = 3 + 1; // the DECLARE wrote nothing; offsets 0..=5 are m0..m5
    s.compact(below);
    assert_eq!(s.core.counters.moved, 4);
    assert_eq!(
        s.core.min_live_offset(),
        Some(4),
        "the old copies are retired"
    );
    s.delete_dead_records();
    // A repeat of a moved message's id is still recognised.
    s.send("p", &["PUBLISH", "r", "jobs", "id1", "again"]);
    s.sync();
    assert_eq!(s.stat("jobs").counters.duplicates, 1);

    let expect: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    let mut replayed = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!(
        replayed.drain_bodies("jobs"),
        expect,
        "replay keeps the order"
    );
    assert_eq!(
        s.drain_bodies("jobs"),
        expect,
        "the running core keeps the order"
    );
    // m0's delivery count survived the move into the journal.
    let mut r2 = Sim::restore(s.catalog.clone(), s.journal.clone());
    r2.send("e", &["CONSUME", "x", "jobs", "1"]);
    let deliveries = |f: &Vec<Bytes>| String::from_utf8(f[5].to_vec()).unwrap();
    assert_eq!(deliveries(&r2.take("e", "DELIVER")[0]), "2");
}

/// `n` messages published, m0 held by consumer "c" for `COMPACT_IDLE_MS`
/// (a long job), and a compaction pass over all of them started (their
/// MOVEs written, not yet durable).
fn moving_while_held(ack_timeout_ms: u64, n: usize) -> Sim {
    let mut s = declared(&format!(r#"{{"ack_timeout_ms": {ack_timeout_ms}}}"#));
    s.publish_numbered(n);
    s.send("c", &["CONSUME", "x", "jobs", "1"]);
    assert_eq!(s.tags("c"), ["0"]);
    s.now += crate::queue::core::COMPACT_IDLE_MS;
    let a = s.core.compact(at(s.now), n as u64, limits(100));
    s.apply(a);
    s
}

#[test]
fn a_long_held_message_is_moved_and_still_acked_by_its_old_tag() {
    // Start the moves, purge before they are durable, then finish them.
    let mut s = moving_while_held(60_000, 3);
    assert_eq!(s.core.counters.moved, 3, "the held message moves too");
    s.send("admin", &["PURGE", "c", "jobs"]);
    s.sync();
    assert_eq!(s.stat("jobs").ready, 0);
    assert_eq!(s.stat("jobs").unacked, 1);
    let r = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!(r.core.message_count(), 1, "only the held message is live");
    // Below its old record nothing is needed any more...
    assert!(s.core.keep_from(None, s.journal.len() as u64) >= 3);
    // ...and its consumer acks it by the tag it knows.
    s.send("c", &["ACK", "jobs", "0"]);
    assert_eq!(s.stat("jobs").counters.acked, 1);
    assert_eq!(s.core.counters.unknown_tags, 0);
    let r = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!(r.core.message_count(), 0, "the ack settled the copy");
}

#[test]
fn a_moved_held_message_times_out_under_its_new_tag_and_the_old_one_is_forgotten() {
    let mut s = moving_while_held(10_000, 1);
    s.sync();
    // Its ack timeout (the consumer keeps talking): back in line and
    // delivered again, under its new tag.
    for _ in 0..3 {
        s.send("c", &["HEARTBEAT"]);
        s.advance(4_000);
    }
    let again = s.tags("c");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], "0");
    // The old tag means nothing now: acking it does not settle the message.
    s.send("c", &["ACK", "jobs", "0"]);
    assert_eq!(s.core.counters.unknown_tags, 1);
    s.send("c", &["ACK", "jobs", &again[0]]);
    assert_eq!(s.stat("jobs").counters.acked, 1);
}

/// A held message rejected while compaction moves it: whichever of its MOVE
/// and its dead-letter copy is answered first, and whether the copy is
/// stored or not, it ends in exactly one queue, in the running core and
/// after replay alike.
#[test]
fn a_message_dead_lettered_mid_move_is_never_lost() {
    const PUBLISH: u8 = 1;
    const MOVE: u8 = 4;
    for (first, dead_letter_ok) in [
        (MOVE, false),
        (PUBLISH, false),
        (MOVE, true),
        (PUBLISH, true),
    ] {
        let mut s = moving_while_held(60_000, 1);
        s.send("c", &["NACK", "jobs", "0", "0"]);
        if first == MOVE {
            s.finish(MOVE, true);
            s.finish(PUBLISH, dead_letter_ok);
        } else {
            s.finish(PUBLISH, dead_letter_ok);
            s.finish(MOVE, true);
        }
        s.sync();
        let case = format!(
            "{} first, dead-letter copy stored: {dead_letter_ok}",
            if first == MOVE { "MOVE" } else { "PUBLISH" }
        );
        let live = |s: &Sim, q: &str| s.stat(q).ready + s.stat(q).unacked;
        let where_ = |s: &Sim| (live(s, "jobs"), live(s, "jobs.dlq"));
        let expected = if dead_letter_ok { (0, 1) } else { (1, 0) };
        assert_eq!(where_(&s), expected, "running core, {case}");
        let r = Sim::restore(s.catalog.clone(), s.journal.clone());
        assert_eq!(where_(&r), expected, "after replay, {case}");
        // What is left in "jobs" is deliverable, with its body.
        if !dead_letter_ok {
            s.send("c", &["DISCONNECT"]);
            s.send("d", &["CONSUME", "x", "jobs", "1"]);
            assert_eq!(s.take("d", "DELIVER")[0][7], "m0", "{case}");
        }
    }
}

#[test]
fn in_a_busy_queue_only_long_held_messages_move() {
    let mut s = declared(r#"{"ack_timeout_ms": 60000}"#);
    s.publish_numbered(6);
    // One consumer holds m0 for long; another works through the rest.
    s.send("slow", &["CONSUME", "x", "jobs", "1"]);
    assert_eq!(s.tags("slow"), ["0"]);
    s.now += crate::queue::core::COMPACT_IDLE_MS;
    s.send("fast", &["CONSUME", "x", "jobs", "1"]);
    let tag = s.tags("fast")[0].clone();
    s.send("fast", &["ACK", "jobs", &tag]);
    assert_eq!(s.tags("fast").len(), 1, "m2 delivered just now");
    let a = s.core.compact(at(s.now), 6, limits(100));
    s.apply(a);
    assert_eq!(
        s.core.counters.moved, 1,
        "m0 (held for long) moves; m2 (just delivered) and the waiting ones stay"
    );
}

#[test]
fn a_queue_being_consumed_is_not_compacted() {
    let mut s = declared("{}");
    s.publish_numbered(10);
    // A consumer working through the backlog: its window is full after each
    // ack is refilled, yet the queue is busy and its head about to go.
    s.send("c", &["CONSUME", "x", "jobs", "2"]);
    for _ in 0..3 {
        let tag = s.tags("c")[0].clone();
        s.send("c", &["ACK", "jobs", &tag]);
    }
    let a = s.core.compact(at(s.now), 10, limits(100));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.core.counters.moved, 0);
    // Once nothing has been delivered for a while, it is fair game.
    s.now += crate::queue::core::COMPACT_IDLE_MS;
    let a = s.core.compact(at(s.now), 10, limits(100));
    assert!(!a.is_empty());
}

#[test]
fn a_purge_while_a_move_is_in_flight_survives_a_kill() {
    let mut s = declared("{}");
    s.publish_numbered(3);
    // The moves are written, not yet durable; the purge is written after them.
    let a = s.core.compact(at(s.now), 3, limits(100));
    s.apply(a);
    s.send("admin", &["PURGE", "c", "jobs"]);
    assert_eq!(s.take("admin", "OK").len(), 1);
    // SIGKILL before the moves are confirmed: every record is in the file.
    let r = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!(r.core.message_count(), 0, "the purge reaches the copies");
}

#[test]
fn a_failed_move_then_a_second_one_leaves_one_copy() {
    let mut s = declared("{}");
    s.send("p", &["PUBLISH", "1", "jobs", "", "m0"]);
    s.sync();
    // The first move's fsync fails, but its record is in the file.
    let a = s.core.compact(at(s.now), 1, limits(100));
    s.apply(a);
    let (ticket, _) = s.waiting.pop().unwrap();
    let a = s
        .core
        .persisted(at(s.now), ticket, Err("fsync failed".into()));
    s.apply(a);
    // The second succeeds; then the message is delivered and acked.
    s.compact(1);
    s.send("c", &["CONSUME", "x", "jobs", "1"]);
    let tags = s.tags("c");
    assert_eq!(tags.len(), 1);
    s.send("c", &["ACK", "jobs", &tags[0]]);
    let r = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!(r.core.message_count(), 0, "no second copy outlives the ack");
}

#[test]
fn a_message_being_moved_keeps_its_turn() {
    let mut s = declared("{}");
    s.publish_numbered(3);
    let a = s.core.compact(at(s.now), 1, limits(100)); // m0 only, not yet durable
    s.apply(a);
    s.send("c", &["CONSUME", "x", "jobs", "10"]);
    assert!(
        s.tags("c").is_empty(),
        "nothing overtakes the message being moved"
    );
    s.sync();
    let bodies: Vec<String> = s
        .take("c", "DELIVER")
        .iter()
        .map(|f| String::from_utf8(f[7].to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
}
