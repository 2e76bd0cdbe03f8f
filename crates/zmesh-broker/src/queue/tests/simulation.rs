//! The seeded simulation: random operations, crashes and failed writes.

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Publish,
    Consume(u8, u8),
    Ack(u8, usize),
    Nack(u8, usize, bool),
    Leave(u8),
    /// The driver's outbox reports the consumer's peer congested or relieved.
    Congest(u8, bool),
    /// The consumer's connection closed (no DISCONNECT said).
    Closed(u8),
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
        1 => (0u8..3, any::<bool>()).prop_map(|(c, on)| Op::Congest(c, on)),
        1 => (0u8..3).prop_map(Op::Closed),
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
    /// records, congested peers and closed connections — every confirmed
    /// message is at the end
    /// acked, ready, held, or dead-lettered; consumers never exceed their
    /// window; a congested peer gets no delivery; replaying the journal gives
    /// the same live messages.
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
        let mut congested: BTreeSet<u8> = BTreeSet::new();
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
                Op::Congest(c, on) => {
                    if on { congested.insert(c); } else { congested.remove(&c); }
                    let a = s.core.set_congested(at(s.now), &peer(&format!("c{c}")), on);
                    s.apply(a);
                }
                Op::Closed(c) => {
                    let a = s.core.connection_closed(at(s.now), &peer(&format!("c{c}")));
                    s.apply(a);
                    held.remove(&c);
                    prefetch.remove(&c);
                    congested.remove(&c);
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
                    let a = s.core.compact(at(s.now), below, limits(3));
                    s.apply(a);
                }
                Op::FailTail(n) => {
                    // Answered in offset order, as the store does after a
                    // failed flush (only records with a ticket are modelled).
                    s.waiting.sort_by_key(|w| w.1);
                    let keep = s.waiting.len().saturating_sub(n as usize);
                    for (t, o) in s.waiting.split_off(keep) {
                        s.journal[o as usize] = Bytes::new();
                        let a = s.core.persisted(at(s.now), t, Err("disk full".into()));
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
                    congested.clear();
                }
                Op::Kill => {
                    // The process dies (SIGKILL): everything written stays,
                    // records still waiting for their fsync included.
                    s.delete_dead_records();
                    s = Sim::restore_with(s.config.clone(), s.catalog.clone(), s.journal.clone());
                    held.clear();
                    prefetch.clear();
                    congested.clear();
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
                        prop_assert!(!congested.contains(&c), "a delivery to congested c{}", c);
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
