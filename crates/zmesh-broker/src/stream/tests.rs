//! The stream core with an in-memory log: catch-up and live tail are one
//! path, so a subscriber interleaved with publishes sees every matching
//! message once, in order, whatever the credit; and credit bounds what is sent.

use bytes::Bytes;
use proptest::prelude::*;
use zmesh::clock::Now;

use super::core::{StreamAction, StreamCore, StreamCoreConfig};
use super::options::StreamCatalog;
use super::proto::PROTOCOL;

/// A moment at `ms` on both clocks.
fn at(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: ms,
    }
}

struct Sim {
    core: StreamCore,
    /// Each stream's log, by stream id.
    logs: std::collections::BTreeMap<u32, Vec<Bytes>>,
    /// Fetches still to fail as a damaged read would.
    failing_fetches: usize,
    /// Fetches asked for.
    fetches: usize,
    sent: Vec<(Bytes, Vec<Bytes>)>,
}

fn msg(parts: &[&str]) -> Vec<Bytes> {
    let mut f = vec![Bytes::new(), Bytes::from_static(PROTOCOL)];
    f.extend(parts.iter().map(|p| Bytes::from(p.to_string())));
    f
}

impl Sim {
    fn new() -> Sim {
        let mut s = Sim {
            core: StreamCore::new(StreamCoreConfig::default(), StreamCatalog::default()),
            logs: Default::default(),
            failing_fetches: 0,
            fetches: 0,
            sent: Vec::new(),
        };
        s.send("admin", &["CREATE", "c", "ev", ""]);
        s
    }

    fn run(&mut self, actions: Vec<StreamAction>) {
        let mut todo: std::collections::VecDeque<_> = actions.into();
        while let Some(a) = todo.pop_front() {
            match a {
                StreamAction::Send { to, frames } => self.sent.push((to, frames)),
                StreamAction::Append {
                    stream,
                    record,
                    ticket,
                    ..
                } => {
                    let log = self.logs.entry(stream).or_default();
                    log.push(record);
                    let seq = log.len() as u64 - 1;
                    todo.extend(self.core.persisted(ticket, Ok(seq)));
                    todo.extend(self.core.pump_dirty());
                }
                StreamAction::Fetch {
                    stream,
                    sub,
                    serial,
                    from,
                    end,
                    max,
                } => {
                    self.fetches += 1;
                    if self.failing_fetches > 0 {
                        self.failing_fetches -= 1;
                        self.core.fetch_failed(&sub, serial);
                        continue;
                    }
                    let log = &self.logs[&stream];
                    let records = (from..end.min(from + max as u64))
                        .map(|s| (s, log[s as usize].clone()))
                        .collect();
                    todo.extend(self.core.fetched(&sub, serial, records));
                }
                _ => {}
            }
        }
        self.core.check_invariants();
    }

    fn send(&mut self, from: &str, parts: &[&str]) {
        let a = self
            .core
            .handle(at(1000), &Bytes::from(from.to_owned()), &msg(parts));
        self.run(a);
    }

    /// The log of the first stream created ("ev").
    fn log(&self) -> Vec<Bytes> {
        self.logs.values().next().cloned().unwrap_or_default()
    }

    /// (seq, dseq, subject) of MSGs sent to `to`, taken out of the outbox.
    fn msgs(&mut self, to: &str) -> Vec<(u64, u64, String)> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|(p, f)| p == to.as_bytes() && f[2] == "MSG");
        self.sent = rest;
        let n = |b: &Bytes| std::str::from_utf8(b).unwrap().parse::<u64>().unwrap();
        mine.iter()
            .map(|(_, f)| {
                (
                    n(&f[4]),
                    n(&f[5]),
                    String::from_utf8(f[7].to_vec()).unwrap(),
                )
            })
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn catch_up_then_live_without_gap_or_duplicate(
        before in 0usize..50,
        ops in proptest::collection::vec((0u8..4, 1u32..20), 1..80),
    ) {
        let c = Bytes::from_static(b"c");
        let mut s = Sim::new();
        for i in 0..before {
            s.send("p", &["PUBLISH", "1", "ev", &format!("ev.{}", i % 3), "x"]);
        }
        s.send("c", &["SUBSCRIBE", "1", "ev", "sub", "ev.*", "first", "5"]);
        let mut seen = s.msgs("c");
        prop_assert!(seen.len() <= 5, "credit bounds the first burst");
        let mut credit_left = 5 - seen.len() as i64;
        let mut credit_total = 5u64;
        let mut congested = false;
        for (op, n) in ops {
            match op {
                0 => for i in 0..n {
                    s.send("p", &["PUBLISH", "1", "ev", &format!("ev.{}", i % 3), "x"]);
                },
                1 => {
                    s.send("c", &["CREDIT", "sub", &n.to_string()]);
                    credit_left += i64::from(n);
                    credit_total += u64::from(n);
                }
                // The outbox reports the subscriber's peer congested (odd) or relieved.
                2 => {
                    congested = n % 2 == 1;
                    let a = s.core.set_congested(&c, congested);
                    s.run(a);
                }
                _ => s.send("p", &["PUBLISH", "1", "ev", "other.subject", "x"]),
            }
            let got = s.msgs("c");
            credit_left -= got.len() as i64;
            prop_assert!(credit_left >= 0, "sent beyond the credit");
            prop_assert!(!congested || got.is_empty(), "a MSG to a congested peer");
            seen.extend(got);
        }
        // Relieved, the subscriber gets all it has credit for: nothing stalls.
        let a = s.core.set_congested(&c, false);
        s.run(a);
        seen.extend(s.msgs("c"));
        let matching = s.log().iter()
            .filter(|r| super::record::StreamRecord::decode(r).unwrap().subject.starts_with(b"ev."))
            .count() as u64;
        prop_assert_eq!(seen.len() as u64, matching.min(credit_total), "a stall after relief");
        // Every ev.* message, in order, once; dseq counts 1, 2, 3…
        let want: Vec<u64> = s.log().iter().enumerate()
            .filter(|(_, r)| super::record::StreamRecord::decode(r).unwrap().subject.starts_with(b"ev."))
            .map(|(i, _)| i as u64)
            .take(seen.len())
            .collect();
        let got: Vec<u64> = seen.iter().map(|m| m.0).collect();
        prop_assert_eq!(got, want);
        prop_assert!(seen.iter().enumerate().all(|(i, m)| m.1 == i as u64 + 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Subscribing, re-subscribing a name to another stream, unsubscribing,
    /// deleting and re-creating streams and closing connections keep the
    /// by-stream and by-peer indexes exact; and publishes reach exactly the
    /// subscriptions of their stream.
    #[test]
    fn subscription_indexes_follow_every_change(
        ops in proptest::collection::vec((0u8..6, 0usize..2, 0usize..2, 0usize..2), 1..60),
    ) {
        let peers = ["a", "b"];
        let names = ["s1", "s2"];
        let streams = ["ev", "ev2"];
        let mut s = Sim::new();
        s.send("admin", &["CREATE", "c", "ev2", ""]);
        // What each (peer, name) is subscribed to, as the model says.
        let mut model: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
        for (op, p, n, st) in ops {
            match op {
                0 | 1 => {
                    s.send(peers[p], &["SUBSCRIBE", "1", streams[st], names[n], ">", "new", "100"]);
                    model.insert((p, n), st);
                }
                2 => {
                    s.send(peers[p], &["UNSUBSCRIBE", "1", names[n]]);
                    model.remove(&(p, n));
                }
                3 => {
                    s.send("admin", &["DELETE", "1", streams[st]]);
                    s.send("admin", &["CREATE", "1", streams[st], ""]);
                    model.retain(|_, v| *v != st);
                }
                4 => {
                    let a = s.core.connection_closed(&Bytes::from(peers[p]));
                    s.run(a);
                    model.retain(|k, _| k.0 != p);
                }
                _ => {
                    s.sent.clear();
                    s.send("pub", &["PUBLISH", "1", streams[st], "x", "body"]);
                    let mut got: Vec<(String, String)> = s.sent.iter()
                        .filter(|(_, f)| f[2] == "MSG")
                        .map(|(to, f)| (String::from_utf8_lossy(to).into(), String::from_utf8_lossy(&f[3]).into()))
                        .collect();
                    got.sort();
                    let want: Vec<(String, String)> = model.iter()
                        .filter(|(_, v)| **v == st)
                        .map(|((p, n), _)| (peers[*p].to_owned(), names[*n].to_owned()))
                        .collect();
                    prop_assert_eq!(got, want);
                }
            }
            s.core.check_invariants();
        }
    }
}

#[test]
fn a_failed_read_is_fetched_again_at_the_next_heartbeat_and_idle_ones_are_not() {
    let mut s = Sim::new();
    for i in 0..100 {
        s.send(
            "idle",
            &["SUBSCRIBE", "1", "ev", &format!("s{i}"), ">", "new", "10"],
        );
    }
    s.send("p", &["PUBLISH", "1", "ev", "ev.a", "x"]);
    s.send("c", &["SUBSCRIBE", "1", "ev", "sub", ">", "first", "10"]);
    s.msgs("idle");
    // The new subscription's catch-up read fails: nothing is sent yet.
    s.failing_fetches = 1;
    s.send("p", &["PUBLISH", "1", "ev", "ev.b", "x"]);
    let got = s.msgs("c");
    assert!(got.len() <= 2, "{got:?}");
    let before = s.fetches;
    let heartbeat_ms = StreamCoreConfig::default().heartbeat_ms;
    let a = s.core.tick(at(1000 + heartbeat_ms));
    s.run(a);
    let mut all = got;
    all.extend(s.msgs("c"));
    let seqs: Vec<u64> = all.iter().map(|m| m.0).collect();
    assert_eq!(seqs, vec![0, 1], "every message once, in order");
    // Only the failed subscription was fetched again, not the 100 idle ones.
    assert!(
        s.fetches - before <= 1,
        "{} fetches on a tick",
        s.fetches - before
    );
    let a = s.core.tick(at(1000 + 2 * heartbeat_ms));
    s.run(a);
    assert_eq!(s.fetches - before, 1, "an idle tick fetches nothing");
    s.core.check_invariants();
}

/// `(peer, STORED seq)` replies in `actions`.
fn stored(actions: &[StreamAction]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            StreamAction::Send { to, frames } if frames[2] == "STORED" => Some((
                String::from_utf8(to.to_vec()).unwrap(),
                String::from_utf8(frames[4].to_vec()).unwrap(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_repeated_msg_id_is_stored_once_while_storing_after_and_after_a_restart() {
    let mut s = Sim::new();
    let core = &mut s.core;
    let publish = |core: &mut StreamCore, who: &str, id: &str| {
        core.handle(
            at(1000),
            &Bytes::from(who.to_owned()),
            &msg(&["PUBLISH", "1", "ev", "ev.a", "body", id]),
        )
    };
    // The first is being written when its retry arrives: the retry waits.
    let first = publish(core, "p", "id-1");
    let Some(StreamAction::Append { record, ticket, .. }) = first.first().cloned() else {
        panic!("{first:?}")
    };
    assert!(publish(core, "q", "id-1").is_empty(), "no second append");
    let answers = stored(&core.persisted(ticket, Ok(0)));
    assert_eq!(
        answers,
        [("p".into(), "0".into()), ("q".into(), "0".into())]
    );
    // Once stored, a repeat is answered at once with the same sequence number.
    assert_eq!(
        stored(&publish(core, "r", "id-1")),
        [("r".into(), "0".into())]
    );
    // A different id, and no id at all, are new messages.
    assert!(matches!(
        publish(core, "p", "id-2").first(),
        Some(StreamAction::Append { .. })
    ));
    assert!(matches!(
        publish(core, "p", "").first(),
        Some(StreamAction::Append { .. })
    ));
    let info = core.infos();
    assert_eq!(info[0]["duplicates"], 2);

    // After a restart the ids come back from the log.
    let mut again = Sim::new();
    again.core.replay(0, 0, &record);
    assert_eq!(
        stored(&publish(&mut again.core, "p", "id-1")),
        [("p".into(), "0".into())]
    );
}

#[test]
fn a_refused_publish_lets_its_id_try_again() {
    let mut s = Sim::new();
    let a = s.core.handle(
        at(1000),
        &Bytes::from_static(b"p"),
        &msg(&["PUBLISH", "1", "ev", "ev.a", "body", "id-1"]),
    );
    let Some(StreamAction::Append { ticket, .. }) = a.first() else {
        panic!("{a:?}")
    };
    let refused = s.core.persisted(*ticket, Err("disk full".into()));
    assert!(stored(&refused).is_empty());
    let retry = s.core.handle(
        at(1000),
        &Bytes::from_static(b"p"),
        &msg(&["PUBLISH", "2", "ev", "ev.a", "body", "id-1"]),
    );
    assert!(matches!(retry.first(), Some(StreamAction::Append { .. })));
}

/// Snapshots wait for the disk; a client asking without waiting is refused
/// past the limit, with a clear error, instead of queueing reads without end.
#[test]
fn snapshots_in_progress_are_bounded() {
    let mut s = Sim::new();
    // The simulation never answers a snapshot's read: each stays in progress.
    for i in 0..1025 {
        s.send("c", &["SNAPSHOT", &i.to_string(), "ev", ">"]);
    }
    let errors: Vec<_> = s
        .sent
        .iter()
        .filter(|(p, f)| p == "c" && f[2] == "ERROR")
        .map(|(_, f)| (f[3].clone(), f[4].clone()))
        .collect();
    assert_eq!(
        errors,
        vec![(Bytes::from("1024"), Bytes::from("503"))],
        "only the one past 1024 is refused"
    );
}
