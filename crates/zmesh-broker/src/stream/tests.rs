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
    log: Vec<Bytes>,
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
            log: Vec::new(),
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
                StreamAction::Append { record, ticket, .. } => {
                    self.log.push(record);
                    let seq = self.log.len() as u64 - 1;
                    todo.extend(self.core.persisted(ticket, Ok(seq)));
                    todo.extend(self.core.pump_dirty());
                }
                StreamAction::Fetch {
                    sub,
                    from,
                    end,
                    max,
                    ..
                } => {
                    let records = (from..end.min(from + max as u64))
                        .map(|s| (s, self.log[s as usize].clone()))
                        .collect();
                    todo.extend(self.core.fetched(&sub, records));
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, from: &str, parts: &[&str]) {
        let a = self
            .core
            .handle(at(1000), &Bytes::from(from.to_owned()), &msg(parts));
        self.run(a);
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
        let matching = s.log.iter()
            .filter(|r| super::record::StreamRecord::decode(r).unwrap().subject.starts_with(b"ev."))
            .count() as u64;
        prop_assert_eq!(seen.len() as u64, matching.min(credit_total), "a stall after relief");
        // Every ev.* message, in order, once; dseq counts 1, 2, 3…
        let want: Vec<u64> = s.log.iter().enumerate()
            .filter(|(_, r)| super::record::StreamRecord::decode(r).unwrap().subject.starts_with(b"ev."))
            .map(|(i, _)| i as u64)
            .take(seen.len())
            .collect();
        let got: Vec<u64> = seen.iter().map(|m| m.0).collect();
        prop_assert_eq!(got, want);
        prop_assert!(seen.iter().enumerate().all(|(i, m)| m.1 == i as u64 + 1));
    }
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
