//! The memory bound: bodies kept on disk past it, read back, and bounded while stored.

use super::*;

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
        .handle(at(s.now), &peer("c"), &msg(&["CONSUME", "x", "jobs", "1"]));
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
