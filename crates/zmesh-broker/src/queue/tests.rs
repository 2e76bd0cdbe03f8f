//! The queue core's rules, each a deterministic test; and a seeded
//! simulation checking that nothing confirmed is ever lost, replay included.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use proptest::prelude::*;

use super::core::{QueueAction, QueueCore, QueueCoreConfig};
use super::options::Catalog;
use super::proto::PROTOCOL;

/// The core with an in-memory journal standing in for the log.
struct Sim {
    config: QueueCoreConfig,
    core: QueueCore,
    catalog: Catalog,
    journal: Vec<Bytes>,
    /// Tickets waiting for durability: (ticket, offset).
    waiting: Vec<(u64, u64)>,
    sent: Vec<(Bytes, Vec<Bytes>)>,
    now: u64,
}

fn msg(parts: &[&str]) -> Vec<Bytes> {
    let mut f = vec![Bytes::new(), Bytes::from_static(PROTOCOL)];
    f.extend(parts.iter().map(|p| Bytes::from(p.to_string())));
    f
}

fn peer(name: &str) -> Bytes {
    Bytes::from(name.to_owned())
}

impl Sim {
    fn new() -> Sim {
        Sim::restore(Catalog::default(), Vec::new())
    }

    fn restore(catalog: Catalog, journal: Vec<Bytes>) -> Sim {
        Sim::restore_with(QueueCoreConfig::default(), catalog, journal)
    }

    fn restore_with(config: QueueCoreConfig, catalog: Catalog, journal: Vec<Bytes>) -> Sim {
        let mut core = QueueCore::new(config.clone(), catalog.clone());
        for (o, r) in journal.iter().enumerate() {
            core.replay(o as u64, r);
        }
        core.replay_done();
        Sim {
            config,
            core,
            catalog,
            journal,
            waiting: Vec::new(),
            sent: Vec::new(),
            now: 1_000_000,
        }
    }

    fn apply(&mut self, actions: Vec<QueueAction>) {
        for a in actions {
            match a {
                QueueAction::Send {
                    to,
                    mut frames,
                    body_at,
                } => {
                    if let Some(at) = body_at {
                        frames.push(self.stored_body(at));
                    }
                    self.sent.push((to, frames))
                }
                QueueAction::Append {
                    record,
                    body_at,
                    ticket,
                    ..
                } => {
                    let record = match body_at {
                        Some(at) => [record, self.stored_body(at)].concat().into(),
                        None => record,
                    };
                    self.journal.push(record);
                    if let Some(t) = ticket {
                        self.waiting.push((t, self.journal.len() as u64 - 1));
                    }
                }
                QueueAction::SaveCatalog(c) => self.catalog = c,
            }
        }
    }

    /// What the store does for `body_at`: the body of the record there.
    fn stored_body(&self, at: u64) -> Bytes {
        super::journal::body(&self.journal[at as usize]).expect("a message's record, not deleted")
    }

    fn send(&mut self, from: &str, parts: &[&str]) {
        let a = self.core.handle(self.now, &peer(from), &msg(parts));
        self.apply(a);
    }

    /// Make everything appended durable.
    fn sync(&mut self) {
        while !self.waiting.is_empty() {
            for (t, o) in std::mem::take(&mut self.waiting) {
                let a = self.core.persisted(self.now, t, Ok(o));
                self.apply(a);
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let a = self.core.tick(self.now);
        self.apply(a);
    }

    /// Frames sent to `to` whose command is `cmd`, taken out of the outbox.
    fn take(&mut self, to: &str, cmd: &str) -> Vec<Vec<Bytes>> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(p, f)| p == &peer(to) && f.get(2).is_some_and(|c| c == cmd.as_bytes()));
        self.sent = rest;
        mine.into_iter().map(|(_, f)| f).collect()
    }

    fn tags(&mut self, to: &str) -> Vec<String> {
        self.take(to, "DELIVER")
            .iter()
            .map(|f| String::from_utf8(f[4].to_vec()).unwrap())
            .collect()
    }

    fn stat(&self, queue: &str) -> super::QueueStats {
        self.core
            .stats()
            .into_iter()
            .find(|s| s.name == queue)
            .unwrap()
    }
}

fn declared(options: &str) -> Sim {
    declared_with(QueueCoreConfig::default(), options)
}

fn declared_with(config: QueueCoreConfig, options: &str) -> Sim {
    let mut s = Sim::restore_with(config, Catalog::default(), Vec::new());
    s.send("admin", &["DECLARE", "c", "jobs", options]);
    assert_eq!(s.take("admin", "OK").len(), 1, "{:?}", s.sent);
    s
}

#[test]
fn confirm_waits_for_durability_then_delivery_and_ack_settle() {
    let mut s = declared("{}");
    s.send("p", &["PUBLISH", "1", "jobs", "", "hello"]);
    assert!(
        s.take("p", "CONFIRM").is_empty(),
        "no confirm before the record is durable"
    );
    s.sync();
    let c = s.take("p", "CONFIRM");
    assert_eq!(c.len(), 1);
    s.send("c", &["CONSUME", "2", "jobs", "10"]);
    let d = s.take("c", "DELIVER");
    assert_eq!(d[0][7], "hello");
    assert_eq!(d[0][5], "1", "first delivery");
    let tag = String::from_utf8(d[0][4].to_vec()).unwrap();
    s.send("c", &["ACK", "jobs", &tag]);
    assert_eq!(s.stat("jobs").counters.acked, 1);
    assert_eq!(s.core.message_count(), 0);
    // The ack is journaled, so a restart does not bring the message back.
    let r = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!(r.core.message_count(), 0);
}

#[test]
fn prefetch_bounds_unacked_and_acks_open_the_window() {
    let mut s = declared("{}");
    for i in 0..10 {
        s.send("p", &["PUBLISH", &i.to_string(), "jobs", "", "x"]);
    }
    s.sync();
    s.send("c", &["CONSUME", "c", "jobs", "3"]);
    let tags = s.tags("c");
    assert_eq!(tags.len(), 3);
    s.send("c", &["ACK", "jobs", &tags[0], &tags[1]]);
    assert_eq!(s.tags("c").len(), 2);
    assert_eq!(s.stat("jobs").unacked, 3);
}

#[test]
fn ack_timeout_redelivers_then_dead_letters_after_max_deliveries() {
    let mut s = declared(r#"{"ack_timeout_ms": 1000, "max_deliveries": 2}"#);
    s.send("p", &["PUBLISH", "1", "jobs", "m1", "poison"]);
    s.sync();
    s.send("c", &["CONSUME", "c", "jobs", "1"]);
    assert_eq!(s.take("c", "DELIVER")[0][5], "1");
    s.advance(1001);
    let again = s.take("c", "DELIVER");
    assert_eq!(again[0][5], "2", "redelivered with its count");
    s.advance(1001);
    assert!(s.take("c", "DELIVER").is_empty());
    s.sync(); // the dead-letter copy becomes durable
    assert_eq!(s.stat("jobs").counters.dead_lettered, 1);
    assert_eq!(s.stat("jobs.dlq").ready, 1);
    assert_eq!(s.core.message_count(), 1);
    let r = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!((r.stat("jobs").ready, r.stat("jobs.dlq").ready), (0, 1));
}

#[test]
fn dead_letter_original_stays_until_its_copy_is_durable() {
    let mut s = declared("{}");
    s.send("p", &["PUBLISH", "1", "jobs", "", "x"]);
    s.sync();
    s.send("c", &["CONSUME", "c", "jobs", "1"]);
    let tag = s.tags("c").remove(0);
    s.send("c", &["REJECT", "jobs", &tag]);
    // Crash before the copy is durable: the original must come back.
    let unsynced: Vec<Bytes> = s.journal[..s.waiting[0].1 as usize].to_vec();
    let r = Sim::restore(s.catalog.clone(), unsynced);
    assert_eq!(r.stat("jobs").ready, 1);
    assert_eq!(r.stat("jobs.dlq").ready, 0);
}

#[test]
fn a_consumer_that_leaves_or_falls_silent_gives_its_messages_to_another() {
    let mut s = declared("{}");
    for i in 0..4 {
        s.send("p", &["PUBLISH", &i.to_string(), "jobs", "", "x"]);
    }
    s.sync();
    s.send("a", &["CONSUME", "c", "jobs", "2"]);
    s.send("b", &["CONSUME", "c", "jobs", "2"]);
    assert_eq!(s.tags("a").len(), 2);
    assert_eq!(s.tags("b").len(), 2);
    s.send("a", &["DISCONNECT"]);
    assert!(s.tags("b").is_empty(), "b's window is full");
    s.advance(6000); // b said nothing for longer than the peer timeout
    assert_eq!(s.core.counters.peers_expired, 1);
    s.send("c", &["CONSUME", "c", "jobs", "10"]);
    let tags = s.tags("c");
    assert_eq!(tags.len(), 4, "all four come again");
    assert_eq!(s.stat("jobs").counters.redelivered, 4);
}

#[test]
fn duplicate_message_ids_are_stored_once() {
    let mut s = declared("{}");
    s.send("p", &["PUBLISH", "1", "jobs", "order-7", "x"]);
    s.send("p", &["PUBLISH", "2", "jobs", "order-7", "x"]); // retry before the first is durable
    s.sync();
    s.send("p", &["PUBLISH", "3", "jobs", "order-7", "x"]); // retry after
    let c = s.take("p", "CONFIRM");
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|f| f[4] == c[0][4]), "same tag for every copy");
    assert_eq!(
        c.iter().filter(|f| f.len() == 6).count(),
        2,
        "two marked duplicate"
    );
    assert_eq!(s.stat("jobs").ready, 1);
    // The window survives a restart.
    let mut r = Sim::restore(s.catalog.clone(), s.journal.clone());
    r.send("p", &["PUBLISH", "4", "jobs", "order-7", "x"]);
    assert_eq!(r.take("p", "CONFIRM").len(), 1);
    assert_eq!(r.stat("jobs").ready, 1);
}

#[test]
fn a_batch_gets_one_reply_with_each_outcome_after_durability() {
    let mut s = declared(r#"{"max_length": 3}"#);
    s.send("p", &["PUBLISH", "1", "jobs", "a", "first"]);
    s.sync();
    // a: stored before; b, c: new (c the last that fits); b again; d: over max_length.
    s.send(
        "p",
        &[
            "BATCH", "9", "jobs", "a", "x", "b", "x", "c", "x", "b", "x", "d", "x",
        ],
    );
    assert!(
        s.take("p", "CONFIRMED").is_empty(),
        "no reply before b and c are durable"
    );
    s.sync();
    let r = s.take("p", "CONFIRMED");
    assert_eq!(r.len(), 1);
    let st: Vec<String> = r[0][4..]
        .iter()
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect();
    assert_eq!(st[0], "d0", "a is a duplicate of tag 0");
    assert!(st[1].starts_with('c') && st[2].starts_with('c'), "{st:?}");
    assert_eq!(
        st[3],
        format!("d{}", &st[1][1..]),
        "b repeated within the batch"
    );
    assert!(st[4].starts_with("e429 "), "{st:?}");
    assert_eq!(s.stat("jobs").ready, 3);
}

#[test]
fn limits_refuse_with_a_clear_error_and_storage_errors_lose_nothing_confirmed() {
    let mut s = declared(r#"{"max_length": 2}"#);
    for i in 0..3 {
        s.send("p", &["PUBLISH", &i.to_string(), "jobs", "", "x"]);
    }
    let e = s.take("p", "ERROR");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0][4], "429");
    assert!(String::from_utf8_lossy(&e[0][5]).contains("max_length"));
    let (t, _) = s.waiting.pop().unwrap();
    let a = s.core.persisted(s.now, t, Err("disk full".into()));
    s.apply(a);
    let e = s.take("p", "ERROR");
    assert_eq!(e[0][4], "507");
    s.sync();
    assert_eq!(s.stat("jobs").ready, 1);
    assert_eq!(s.stat("jobs").counters.refused, 2);
}

#[test]
fn bodies_past_the_memory_bound_stay_on_disk_and_come_back_intact() {
    let config = QueueCoreConfig {
        bytes_max: 10,
        ..QueueCoreConfig::default()
    };
    let mut s = Sim::restore_with(config, Catalog::default(), Vec::new());
    for q in ["a", "b"] {
        s.send("admin", &["DECLARE", "c", q, ""]);
    }
    s.send("p", &["PUBLISH", "1", "a", "", "first!"]);
    s.sync();
    // 6 + 6 > 10, whichever queue it is for: stored, but on disk only.
    s.send("p", &["PUBLISH", "2", "b", "", "second"]);
    s.sync();
    assert_eq!(s.take("p", "CONFIRM").len(), 2);
    assert_eq!(s.core.bytes_in_memory(), 6);
    assert_eq!((s.stat("a").on_disk, s.stat("b").on_disk), (0, 1));
    assert_eq!(s.stat("b").bytes, 6, "max_bytes counts it all the same");
    s.send("c", &["CONSUME", "x", "b", "1"]);
    let d = s.take("c", "DELIVER");
    assert_eq!(d[0][7], "second", "read back from its record");
    // An ack frees memory for the next message...
    s.send("c", &["CONSUME", "x", "a", "1"]);
    let tag = s.tags("c")[0].clone();
    s.send("c", &["ACK", "a", &tag]);
    assert_eq!(s.core.bytes_in_memory(), 0);
    s.send("p", &["PUBLISH", "3", "a", "", "third!"]);
    s.sync();
    assert_eq!(s.core.bytes_in_memory(), 6);
    // ...and so does deleting a queue with its messages.
    s.send("admin", &["DELETE", "c", "a"]);
    assert_eq!(s.core.bytes_in_memory(), 0);
    // Dead-lettering takes the body from the journal, and the dead-letter
    // copy of a body on disk stays on disk.
    let tag = String::from_utf8(d[0][4].to_vec()).unwrap();
    s.send("c", &["NACK", "b", "0", &tag]);
    s.sync();
    assert_eq!(s.stat("b.dlq").on_disk, 1);
    s.send("d", &["CONSUME", "x", "b.dlq", "1"]);
    assert_eq!(s.take("d", "DELIVER")[0][7], "second");
    // So does a restart.
    let mut r = Sim::restore_with(s.config.clone(), s.catalog.clone(), s.journal.clone());
    r.send("d", &["CONSUME", "x", "b.dlq", "1"]);
    assert_eq!(r.take("d", "DELIVER")[0][7], "second");
}

#[test]
fn a_body_that_cannot_be_read_back_is_not_a_delivery_and_is_tried_again() {
    let config = QueueCoreConfig {
        bytes_max: 0,
        ..QueueCoreConfig::default()
    };
    let mut s = declared_with(config, r#"{"max_deliveries": 1}"#);
    s.send("p", &["PUBLISH", "1", "jobs", "", "on disk"]);
    s.sync();
    // The store could not read the body: it tells the core instead of sending.
    let actions = s
        .core
        .handle(s.now, &peer("c"), &msg(&["CONSUME", "x", "jobs", "1"]));
    let mut failed = 0;
    for a in actions {
        match a {
            QueueAction::Send {
                to,
                body_at: Some(at),
                ..
            } => {
                s.core.delivery_failed(&to, at);
                failed += 1;
            }
            other => s.apply(vec![other]),
        }
    }
    assert_eq!(failed, 1);
    assert_eq!(s.stat("jobs").ready, 1, "back in line");
    assert_eq!(s.stat("jobs").counters.delivered, 0);
    // Not at once (a lasting error would loop), but at the next tick; and
    // with max_deliveries 1 the failed try did not use up its delivery.
    assert!(s.take("c", "DELIVER").is_empty());
    s.advance(1000);
    let d = s.take("c", "DELIVER");
    assert_eq!((&d[0][5][..], &d[0][7][..]), (&b"1"[..], &b"on disk"[..]));
    assert_eq!(s.stat("jobs.dlq").ready, 0);
}

#[test]
fn bodies_waiting_for_storage_are_bounded_with_503() {
    let config = QueueCoreConfig {
        storing_bytes_max: 10,
        ..QueueCoreConfig::default()
    };
    let mut s = Sim::restore_with(config, Catalog::default(), Vec::new());
    s.send("admin", &["DECLARE", "c", "a", ""]);
    s.send("p", &["PUBLISH", "1", "a", "", "sixsix"]);
    // Not yet written: 6 + 6 > 10.
    s.send("p", &["PUBLISH", "2", "a", "", "sixsix"]);
    let refused = s.take("p", "ERROR");
    assert_eq!(refused[0][4], "503", "{refused:?}");
    assert!(String::from_utf8_lossy(&refused[0][5]).contains("waiting for storage"));
    // Once written, there is room again.
    s.sync();
    s.send("p", &["PUBLISH", "3", "a", "", "sixsix"]);
    s.sync();
    assert_eq!(s.take("p", "CONFIRM").len(), 2);
}

#[test]
fn ttl_expired_messages_go_to_the_dead_letters() {
    let mut s = declared(r#"{"message_ttl_ms": 500}"#);
    s.send("p", &["PUBLISH", "1", "jobs", "", "stale"]);
    s.sync();
    s.advance(600);
    s.sync();
    assert_eq!(s.stat("jobs").counters.expired, 1);
    assert_eq!(s.stat("jobs.dlq").ready, 1);
}

#[test]
fn declare_with_other_options_conflicts_and_delete_forgets_the_journal() {
    let mut s = declared("{}");
    s.send("admin", &["DECLARE", "c", "jobs", r#"{"max_length": 5}"#]);
    assert_eq!(s.take("admin", "ERROR")[0][4], "409");
    s.send("p", &["PUBLISH", "1", "jobs", "", "x"]);
    s.sync();
    s.send("admin", &["DELETE", "c", "jobs"]);
    s.send("admin", &["DECLARE", "c", "jobs", ""]);
    let r = Sim::restore(s.catalog.clone(), s.journal.clone());
    assert_eq!(
        r.stat("jobs").ready,
        0,
        "the old incarnation's message stays dead"
    );
}

fn limits(moves_max: usize) -> super::core::CompactLimits {
    super::core::CompactLimits {
        moves_max,
        bytes_max: 1 << 20,
        record_bytes_max: 1 << 24,
    }
}

impl Sim {
    /// One compaction pass below `below`, everything made durable after.
    fn compact(&mut self, below: u64) {
        let a = self.core.compact(self.now, below, limits(100));
        self.apply(a);
        self.sync();
    }

    /// What the store deletes: records below the oldest one still needed
    /// (a deleted record replays as nothing).
    fn delete_dead_records(&mut self) {
        let pending = self.waiting.iter().map(|w| w.1).min();
        let keep = self.core.keep_from(pending, self.journal.len() as u64);
        for r in &mut self.journal[..keep as usize] {
            *r = Bytes::new();
        }
    }

    /// Publish `m0`, `m1`, ... to `jobs` (no msg ids) and make them durable.
    fn publish_numbered(&mut self, n: usize) {
        for i in 0..n {
            self.send(
                "p",
                &["PUBLISH", &i.to_string(), "jobs", "", &format!("m{i}")],
            );
        }
        self.sync();
    }

    /// Bodies in line, in delivery order, from a consumer taking them all.
    fn drain_bodies(&mut self, queue: &str) -> Vec<String> {
        self.send("drain", &["CONSUME", "x", queue, "1000"]);
        self.take("drain", "DELIVER")
            .iter()
            .map(|f| String::from_utf8(f[7].to_vec()).unwrap())
            .collect()
    }
}

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
    s.now += super::core::COMPACT_IDLE_MS;
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

#[test]
fn a_long_held_message_is_moved_and_still_acked_by_its_old_tag() {
    let mut s = declared(r#"{"ack_timeout_ms": 60000}"#);
    s.publish_numbered(3);
    s.send("c", &["CONSUME", "x", "jobs", "1"]);
    let held = s.tags("c");
    assert_eq!(held, ["0"]);
    // The consumer sits on its message (a long job).
    s.now += super::core::COMPACT_IDLE_MS;
    // Start the moves, purge before they are durable, then finish them.
    let a = s.core.compact(s.now, 3, limits(100));
    s.apply(a);
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
    let mut s = declared(r#"{"ack_timeout_ms": 10000}"#);
    s.publish_numbered(1);
    s.send("c", &["CONSUME", "x", "jobs", "1"]);
    assert_eq!(s.tags("c"), ["0"]);
    s.now += super::core::COMPACT_IDLE_MS;
    let a = s.core.compact(s.now, 1, limits(100));
    s.apply(a);
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

impl Sim {
    /// Answer the one waiting record of kind `kind` (1 PUBLISH, 4 MOVE) with
    /// `ok`, or with a failed write (the record is not in the journal).
    fn finish(&mut self, kind: u8, ok: bool) {
        let i = self
            .waiting
            .iter()
            .position(|(_, o)| self.journal[*o as usize].first() == Some(&kind))
            .expect("a waiting record of that kind");
        let (t, o) = self.waiting.remove(i);
        if !ok {
            self.journal[o as usize] = Bytes::new();
        }
        let result = if ok { Ok(o) } else { Err("disk full".into()) };
        let a = self.core.persisted(self.now, t, result);
        self.apply(a);
    }
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
        let mut s = declared(r#"{"ack_timeout_ms": 60000}"#);
        s.publish_numbered(1);
        s.send("c", &["CONSUME", "x", "jobs", "1"]);
        assert_eq!(s.tags("c"), ["0"]);
        s.now += super::core::COMPACT_IDLE_MS;
        let a = s.core.compact(s.now, 1, limits(100));
        s.apply(a);
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
    s.now += super::core::COMPACT_IDLE_MS;
    s.send("fast", &["CONSUME", "x", "jobs", "1"]);
    let tag = s.tags("fast")[0].clone();
    s.send("fast", &["ACK", "jobs", &tag]);
    assert_eq!(s.tags("fast").len(), 1, "m2 delivered just now");
    let a = s.core.compact(s.now, 6, limits(100));
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
    let a = s.core.compact(s.now, 10, limits(100));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(s.core.counters.moved, 0);
    // Once nothing has been delivered for a while, it is fair game.
    s.now += super::core::COMPACT_IDLE_MS;
    let a = s.core.compact(s.now, 10, limits(100));
    assert!(!a.is_empty());
}

#[test]
fn a_purge_while_a_move_is_in_flight_survives_a_kill() {
    let mut s = declared("{}");
    s.publish_numbered(3);
    // The moves are written, not yet durable; the purge is written after them.
    let a = s.core.compact(s.now, 3, limits(100));
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
    let a = s.core.compact(s.now, 1, limits(100));
    s.apply(a);
    let (ticket, _) = s.waiting.pop().unwrap();
    let a = s.core.persisted(s.now, ticket, Err("fsync failed".into()));
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
    let a = s.core.compact(s.now, 1, limits(100)); // m0 only, not yet durable
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

#[derive(Clone, Debug)]
enum Op {
    Publish,
    Consume(u8, u8),
    Ack(u8, usize),
    Nack(u8, usize, bool),
    Leave(u8),
    Sync,
    Advance(u16),
    Compact(u8),
    /// A failed write: the last N records waiting for durability are lost.
    FailTail(u8),
    Crash,
    Kill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Publish),
        1 => (0u8..3, 1u8..5).prop_map(|(c, p)| Op::Consume(c, p)),
        4 => (0u8..3, any::<usize>()).prop_map(|(c, i)| Op::Ack(c, i)),
        1 => (0u8..3, any::<usize>(), any::<bool>()).prop_map(|(c, i, r)| Op::Nack(c, i, r)),
        1 => (0u8..3).prop_map(Op::Leave),
        3 => Just(Op::Sync),
        1 => (0u16..4500).prop_map(Op::Advance),
        1 => (1u8..=4).prop_map(Op::Compact),
        1 => (1u8..=3).prop_map(Op::FailTail),
        1 => Just(Op::Crash),
        1 => Just(Op::Kill),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens — acks, nacks, timeouts, consumers leaving, journal
    /// compaction and deleted dead records, crashes that lose unsynced
    /// records — every confirmed message is at the end
    /// acked, ready, held, or dead-lettered; consumers never exceed their
    /// window; replaying the journal gives the same live messages.
    #[test]
    fn nothing_confirmed_is_lost(
        ops in proptest::collection::vec(op(), 1..120),
        // Bodies all in memory, a few, or none (read back from the journal).
        memory in prop_oneof![Just(u64::MAX), Just(8u64), Just(0u64)],
    ) {
        let config = QueueCoreConfig { bytes_max: memory, ..QueueCoreConfig::default() };
        // Held for 5 s and more before its ack timeout: compaction moves held messages too.
        let mut s = declared_with(config, r#"{"ack_timeout_ms": 8000, "max_deliveries": 3}"#);
        let mut confirmed: BTreeSet<String> = BTreeSet::new();
        let mut acked: BTreeSet<String> = BTreeSet::new();
        let mut held: HashMap<u8, Vec<(String, String)>> = HashMap::new(); // consumer -> (tag, body)
        let mut prefetch: HashMap<u8, usize> = HashMap::new();
        let mut n = 0u32;
        for op in ops {
            match op {
                Op::Publish => {
                    n += 1;
                    s.send("p", &["PUBLISH", &n.to_string(), "jobs", &format!("id{n}"), &format!("m{n}")]);
                }
                Op::Consume(c, p) => {
                    s.send(&format!("c{c}"), &["CONSUME", "x", "jobs", &p.to_string()]);
                    prefetch.insert(c, p as usize);
                }
                Op::Ack(c, i) => {
                    let h = held.entry(c).or_default();
                    if !h.is_empty() {
                        let (tag, body) = h.remove(i % h.len());
                        s.send(&format!("c{c}"), &["ACK", "jobs", &tag]);
                        acked.insert(body);
                    }
                }
                Op::Nack(c, i, requeue) => {
                    let h = held.entry(c).or_default();
                    if !h.is_empty() {
                        let (tag, _) = h.remove(i % h.len());
                        s.send(&format!("c{c}"), &["NACK", "jobs", if requeue { "1" } else { "0" }, &tag]);
                    }
                }
                Op::Leave(c) => {
                    s.send(&format!("c{c}"), &["DISCONNECT"]);
                    held.remove(&c);
                    prefetch.remove(&c);
                }
                Op::Sync => s.sync(),
                Op::Advance(ms) => {
                    s.advance(u64::from(ms));
                    // Consumers keep talking so only acks time out.
                    for c in prefetch.keys().copied().collect::<Vec<_>>() {
                        s.send(&format!("c{c}"), &["HEARTBEAT"]);
                    }
                }
                Op::Compact(quarter) => {
                    // Sometimes left in flight: a crash may come before it is durable.
                    let below = s.journal.len() as u64 * u64::from(quarter) / 4;
                    let a = s.core.compact(s.now, below, limits(3));
                    s.apply(a);
                }
                Op::FailTail(n) => {
                    // Answered in offset order, as the store does after a
                    // failed flush (only records with a ticket are modelled).
                    s.waiting.sort_by_key(|w| w.1);
                    let keep = s.waiting.len().saturating_sub(n as usize);
                    for (t, o) in s.waiting.split_off(keep) {
                        s.journal[o as usize] = Bytes::new();
                        let a = s.core.persisted(s.now, t, Err("disk full".into()));
                        s.apply(a);
                    }
                }
                Op::Crash => {
                    // Dead segments were deleted, unsynced records are lost,
                    // every client reconnects.
                    s.delete_dead_records();
                    let durable = s.waiting.iter().map(|w| w.1).min().unwrap_or(s.journal.len() as u64);
                    let journal = s.journal[..durable as usize].to_vec();
                    s = Sim::restore_with(s.config.clone(), s.catalog.clone(), journal);
                    held.clear();
                    prefetch.clear();
                }
                Op::Kill => {
                    // The process dies (SIGKILL): everything written stays,
                    // records still waiting for their fsync included.
                    s.delete_dead_records();
                    s = Sim::restore_with(s.config.clone(), s.catalog.clone(), s.journal.clone());
                    held.clear();
                    prefetch.clear();
                }
            }
            // As the store does at every tick: a record removed too early
            // makes the next read of its body fail the test.
            s.delete_dead_records();
            let mut sent_now: HashMap<u8, usize> = HashMap::new();
            for (to, f) in std::mem::take(&mut s.sent) {
                let to = String::from_utf8(to.to_vec()).unwrap();
                match &f[2][..] {
                    b"CONFIRM" => { let _ = confirmed.insert(format!("m{}", String::from_utf8_lossy(&f[3]))); }
                    b"DELIVER" => {
                        let c: u8 = to[1..].parse().unwrap();
                        // The body is the one published with this id, from memory or disk.
                        let expected = format!("m{}", String::from_utf8_lossy(&f[6][2..]));
                        prop_assert_eq!(&f[7][..], expected.as_bytes());
                        let h = held.entry(c).or_default();
                        h.push((String::from_utf8(f[4].to_vec()).unwrap(), String::from_utf8(f[7].to_vec()).unwrap()));
                        *sent_now.entry(c).or_insert(0usize) += 1;
                        // The window: one step never hands a consumer more than its prefetch.
                        prop_assert!(sent_now[&c] <= prefetch.get(&c).copied().unwrap_or(0));
                    }
                    _ => {}
                }
            }
        }
        s.sync();
        for (_, f) in std::mem::take(&mut s.sent) {
            if &f[2][..] == b"CONFIRM" { confirmed.insert(format!("m{}", String::from_utf8_lossy(&f[3]))); }
        }
        // Everything live in the core, by body.
        let replayed = Sim::restore_with(s.config.clone(), s.catalog.clone(), s.journal.clone());
        prop_assert_eq!(replayed.core.message_count(), s.core.message_count(),
            "replay disagrees with the running core");
        let stored = replayed.stat("jobs").ready + replayed.stat("jobs").unacked
            + replayed.stat("jobs.dlq").ready;
        // Every confirmed message was acked or is still stored (possibly in the dead letters).
        let unacked_confirmed = confirmed.difference(&acked).count() as u64;
        prop_assert!(stored >= unacked_confirmed,
            "{} confirmed and not acked, only {} stored", unacked_confirmed, stored);
    }
}
