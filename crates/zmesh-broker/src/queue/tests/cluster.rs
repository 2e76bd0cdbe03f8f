//! A queue in a cluster: only the node leading its shard serves it.

use super::*;
use crate::queue::core::Served;

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
    // Served elsewhere, where is not known yet: 421 without an endpoint.
    s.send("c", &["CONSUME", "c", "jobs", "10"]);
    let refused = s.take("c", "ERROR");
    assert_eq!(refused[0][4], "421", "{refused:?}");
    assert_eq!(refused[0].len(), 6, "no endpoint: {refused:?}");
    // Known: the endpoint follows the reason.
    let a = s.core.serve(at(s.now), |_| {
        Served::Elsewhere(Some(std::sync::Arc::from("tcp://10.0.0.2:5555")))
    });
    s.apply(a);
    s.send("c", &["CONSUME", "c", "jobs", "10"]);
    let refused = s.take("c", "ERROR");
    assert_eq!(refused[0][4], "421", "{refused:?}");
    assert_eq!(refused[0][6], "tcp://10.0.0.2:5555", "{refused:?}");
    s.send("admin", &["PURGE", "p", "jobs"]);
    let refused = s.take("admin", "ERROR");
    assert_eq!(refused[0][4], "421");
    assert_eq!(refused[0][6], "tcp://10.0.0.2:5555", "{refused:?}");

    // Past their TTL, nothing expires where the queue is not served.
    s.advance(2000);
    assert_eq!(s.stat("jobs").counters.expired, 0);
    assert_eq!(s.stat("jobs").ready, 2);
    s.send("p", &["PUBLISH", "3", "jobs", "new-1", "x"]);
    s.send("p", &["PUBLISH", "4", "jobs", "new-2", "x"]);
    s.sync();

    // Served: the old ones expire at the next tick, the new ones are
    // delivered.
    let a = s.core.serve(at(s.now), |name| match name {
        "jobs" => Served::Here,
        _ => Served::Elsewhere(None),
    });
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
    let a = s.core.serve(at(s.now), |_| Served::Elsewhere(None));
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

/// A PUBLISH record of `id` to queue 0, as a shard commits it.
fn committed_publish(id: &str) -> Bytes {
    crate::queue::journal::Entry::Publish {
        queue: 0,
        published_ms: 1,
        msg_id: Bytes::from(id.to_owned()),
        body: Bytes::from_static(b"x"),
    }
    .encode()
}

#[test]
fn a_publish_committed_twice_through_two_nodes_is_kept_once_everywhere() {
    let config = QueueCoreConfig {
        served_where_led: true,
        ..QueueCoreConfig::default()
    };
    let mut s = declared_with(config, "{}");
    // This node takes `x` and hands it to the shard (its ticket waits) ...
    s.send("p", &["PUBLISH", "1", "jobs", "x", "x"]);
    let (ticket, _) = s.waiting.pop().expect("a ticket waits");
    // ... while a resend of `x` through another node commits first.
    let now = at(s.now);
    let (first, mine) = (1 << 20, 2 << 20);
    let a = s
        .core
        .apply_committed(now, first, None, &committed_publish("x"), false);
    s.apply(a);
    // This node's own copy commits next: kept once, its publisher told
    // where the first is.
    let a = s
        .core
        .apply_committed(now, mine, Some(ticket), &committed_publish("x"), false);
    s.apply(a);
    let confirm = s.take("p", "CONFIRM");
    assert_eq!(confirm.len(), 1);
    assert_eq!(confirm[0][4], first.to_string());
    assert_eq!(confirm[0][5], "duplicate");
    // A third copy, from yet another node, is skipped alike.
    let a = s
        .core
        .apply_committed(now, 3 << 20, None, &committed_publish("x"), false);
    s.apply(a);
    let stat = s.stat("jobs");
    assert_eq!((stat.ready, stat.storing, stat.bytes), (1, 0, 1));
    assert_eq!(stat.counters.duplicates, 2);
    assert_eq!(s.core.message_count(), 1);
    // A dead-letter copy is kept whatever its id.
    let a = s
        .core
        .apply_committed(now, 4 << 20, None, &committed_publish("x"), true);
    s.apply(a);
    assert_eq!(s.stat("jobs").ready, 2);
}

/// What a follower does with the leader's records `from` on: applies them
/// as the shard commits them (at the leader's offsets). Returns the end.
fn follow(leader: &Sim, follower: &mut Sim, from: usize) -> usize {
    let now = at(follower.now);
    for (offset, record) in leader.journal.iter().enumerate().skip(from) {
        let a =
            match crate::queue::journal::Entry::decode(record) {
                Some(crate::queue::journal::Entry::Publish { .. }) => follower
                    .core
                    .apply_committed(now, offset as u64, None, record, false),
                _ => {
                    follower.core.apply_decision(now, record);
                    Vec::new()
                }
            };
        follower.apply(a);
    }
    leader.journal.len()
}

/// A new consumer's deliveries on `node`: (tag, delivery count) each.
fn consumed_tags_and_counts(node: &mut Sim) -> Vec<(String, String)> {
    node.send("d", &["CONSUME", "d", "jobs", "10"]);
    node.take("d", "DELIVER")
        .iter()
        .map(|f| {
            (
                String::from_utf8(f[4].to_vec()).unwrap(),
                String::from_utf8(f[5].to_vec()).unwrap(),
            )
        })
        .collect()
}

/// Two nodes of a cluster with queue `jobs`: the first serves it.
fn leader_and_follower() -> (Sim, Sim) {
    let config = QueueCoreConfig {
        served_where_led: true,
        ..QueueCoreConfig::default()
    };
    let mut leader = declared_with(config.clone(), "{}");
    let follower = declared_with(config, "{}");
    let a = leader.core.serve(at(leader.now), |_| Served::Here);
    leader.apply(a);
    (leader, follower)
}

#[test]
fn a_new_leader_knows_what_the_old_one_delivered_and_settled() {
    let (mut leader, mut follower) = leader_and_follower();
    for id in ["a", "b", "c"] {
        leader.send("p", &["PUBLISH", id, "jobs", id, "x"]);
    }
    leader.sync();
    leader.send("c", &["CONSUME", "c", "jobs", "10"]);
    let tags = leader.tags("c");
    assert_eq!(tags.len(), 3);
    leader.send("c", &["ACK", "jobs", &tags[0]]);
    leader.send("c", &["NACK", "jobs", "1", &tags[1]]);
    let (held, requeued) = (&tags[2], &tags[1]);
    // The leader delivered `b` again to the same consumer.
    assert_eq!(leader.take("c", "DELIVER")[0][5], "2");
    follow(&leader, &mut follower, 0);

    // The leader dies; the follower leads and serves.
    let a = follower.core.serve(at(follower.now), |_| Served::Here);
    follower.apply(a);
    let seen = consumed_tags_and_counts(&mut follower);
    // `a` was acked: gone. `b` was delivered twice, `c` once: each comes
    // again, counted.
    assert_eq!(
        seen,
        vec![(requeued.clone(), "3".into()), (held.clone(), "2".into())]
    );
    assert_eq!(follower.core.message_count(), 2);
}

#[test]
fn a_queue_restored_from_a_snapshot_holds_what_its_leader_held() {
    let (mut leader, mut follower) = leader_and_follower();
    for id in ["a", "b", "c", "d"] {
        leader.send("p", &["PUBLISH", id, "jobs", id, "x"]);
    }
    leader.sync();
    leader.send("c", &["CONSUME", "c", "jobs", "10"]);
    let tags = leader.tags("c");
    assert_eq!(tags.len(), 4);
    leader.send("c", &["ACK", "jobs", &tags[0]]);
    leader.send("c", &["NACK", "jobs", "1", &tags[1]]);
    assert_eq!(leader.take("c", "DELIVER")[0][5], "2");

    // The follower holds something the snapshot does not: it goes.
    let now = at(follower.now);
    let a = follower
        .core
        .apply_committed(now, 99 << 20, None, &committed_publish("stale"), false);
    follower.apply(a);
    assert_eq!(follower.core.message_count(), 1);

    // Through its encoding, as a shard's snapshot carries it.
    let snapshot = leader.core.queue_snapshot("jobs").unwrap().unwrap();
    let bytes = rmp_serde::to_vec(&snapshot).unwrap();
    let snapshot: crate::queue::core::QueueSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    assert!(leader.core.queue_snapshot("nope").is_none());
    let a = follower
        .core
        .restore_queue(at(follower.now), "jobs", Some(&snapshot));
    follower.apply(a);
    assert_eq!(follower.core.message_count(), 3);

    // A repeat of an id the leader stored is a repeat here too.
    let a = follower
        .core
        .apply_committed(now, 100 << 20, None, &committed_publish("c"), false);
    follower.apply(a);
    assert_eq!(follower.stat("jobs").counters.duplicates, 1);
    assert_eq!(follower.core.message_count(), 3);

    // The follower leads: the three not acked come in their order, counted.
    let a = follower.core.serve(at(follower.now), |_| Served::Here);
    follower.apply(a);
    let seen = consumed_tags_and_counts(&mut follower);
    assert_eq!(
        seen,
        vec![
            (tags[1].clone(), "3".into()),
            (tags[2].clone(), "2".into()),
            (tags[3].clone(), "2".into()),
        ]
    );

    // Restored from nothing, the queue is empty and remembers no id.
    let a = follower.core.restore_queue(at(follower.now), "jobs", None);
    follower.apply(a);
    assert_eq!(follower.core.message_count(), 0);
    assert_eq!(follower.stat("jobs").unacked, 0);
}
