//! A queue in a cluster: only the node leading its shard serves it.

use super::*;

#[test]
fn only_a_served_queue_has_consumers_deliveries_and_expiries() {
    let config = QueueCoreConfig {
        served_where_led: true,
        ..QueueCoreConfig::default()
    };
    let mut s = declared_with(config, r#"{"message_ttl_ms": 1000}"#);
    s.send("p", &["PUBLISH", "1", "jobs", "old-1", "x"]);
    s.send("p", &["PUBLISH", "2", "jobs", "old-2", "x"]);
    s.sync();
    assert_eq!(
        s.take("p", "CONFIRM").len(),
        2,
        "publishes are taken anywhere"
    );
    s.send("c", &["CONSUME", "c", "jobs", "10"]);
    let refused = s.take("c", "ERROR");
    assert_eq!(refused[0][4], "503", "{refused:?}");
    s.send("admin", &["PURGE", "p", "jobs"]);
    assert_eq!(s.take("admin", "ERROR")[0][4], "503");

    // Past their TTL, nothing expires where the queue is not served.
    s.advance(2000);
    assert_eq!(s.stat("jobs").counters.expired, 0);
    assert_eq!(s.stat("jobs").ready, 2);
    s.send("p", &["PUBLISH", "3", "jobs", "new-1", "x"]);
    s.send("p", &["PUBLISH", "4", "jobs", "new-2", "x"]);
    s.sync();

    // Served: the old ones expire at the next tick, the new ones are
    // delivered.
    let a = s.core.serve(at(s.now), |name| name == "jobs");
    s.apply(a);
    s.advance(1);
    s.sync();
    assert_eq!(s.stat("jobs").counters.expired, 2);
    s.send("c", &["CONSUME", "c", "jobs", "10"]);
    let tags = s.tags("c");
    assert_eq!(tags.len(), 2);
    let records = s.journal.len();

    // No longer served: the consumer is gone and what it held is back in
    // line, with no record written (the new leader decides on it).
    let a = s.core.serve(at(s.now), |_| false);
    s.apply(a);
    assert_eq!(s.journal.len(), records, "no record");
    let stat = s.stat("jobs");
    assert_eq!((stat.consumers, stat.unacked, stat.ready), (0, 0, 2));
    s.send("c", &["ACK", "jobs", &tags[0]]);
    assert_eq!(s.core.counters.unknown_tags, 1);
    assert_eq!(s.stat("jobs").counters.acked, 0);
    s.advance(1_000_000);
    assert!(s.take("c", "HEARTBEAT").is_empty(), "no longer a consumer");
    assert!(s.take("c", "DELIVER").is_empty());
}
