//! Publish, delivery, acks, limits, timeouts and dead letters, one rule a test.

use super::*;

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
    let a = s.core.persisted(at(s.now), t, Err("disk full".into()));
    s.apply(a);
    let e = s.take("p", "ERROR");
    assert_eq!(e[0][4], "507");
    s.sync();
    assert_eq!(s.stat("jobs").ready, 1);
    assert_eq!(s.stat("jobs").counters.refused, 2);
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

#[test]
fn a_single_broker_names_no_other_node() {
    let mut s = declared("");
    s.send("c", &["NODES", "n1"]);
    let ok = s.take("c", "OK");
    assert_eq!(ok[0][3], "n1");
    let body: serde_json::Value = serde_json::from_slice(&ok[0][4]).unwrap();
    assert_eq!(body, serde_json::json!({"node": null, "nodes": {}}));
}
