//! Random runs of workers (7/MDP and ZMDPW1 with credit), clients, replies,
//! disconnects, closes, congestion and time, with the broker's whole state
//! checked after every step; and every request answered at most once.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    /// Worker `w` says READY for service `s` (odd workers speak ZMDPW1 with credit 1 + w).
    Ready { w: u8, s: u8 },
    /// Client `c` asks service `s`.
    Request { c: u8, s: u8 },
    /// Worker `w` answers the oldest request it holds.
    Reply { w: u8 },
    /// Worker `w` says DISCONNECT.
    Disconnect { w: u8 },
    /// Peer `p`'s connection closes (workers 0-3, then clients).
    Closed { p: u8 },
    /// Peer `p` reads too slowly, or catches up.
    Congested { p: u8, on: bool },
    /// Time passes.
    Advance { ms: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..4, 0u8..2).prop_map(|(w, s)| Op::Ready { w, s }),
        3 => (0u8..3, 0u8..2).prop_map(|(c, s)| Op::Request { c, s }),
        2 => (0u8..4).prop_map(|w| Op::Reply { w }),
        1 => (0u8..4).prop_map(|w| Op::Disconnect { w }),
        1 => (0u8..7).prop_map(|p| Op::Closed { p }),
        1 => (0u8..7, any::<bool>()).prop_map(|(p, on)| Op::Congested { p, on }),
        1 => (0u16..4000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn worker(w: u8) -> Bytes {
    id(&format!("w{w}"))
}

fn peer(p: u8) -> Bytes {
    if p < 4 {
        worker(p)
    } else {
        id(&format!("c{}", p - 4))
    }
}

/// Every message in `actions`, batches split.
fn messages(actions: Vec<Action>) -> Vec<(Bytes, Vec<Bytes>)> {
    coalesce(actions)
        .into_iter()
        .flat_map(|Action::Send { to, frames }| {
            let parts = if mdp::batch::is_batch(&frames) {
                mdp::batch::split(&frames).unwrap()
            } else {
                vec![frames]
            };
            parts.into_iter().map(move |m| (to.clone(), m))
        })
        .collect()
}

struct Run {
    b: Broker,
    now: Instant,
    /// (handle, body) of the requests each worker was given, oldest first.
    held: BTreeMap<Bytes, VecDeque<(Bytes, Bytes)>>,
    /// Request bodies sent, and the answers each got (one at most).
    answers: BTreeMap<String, u32>,
    next_body: u32,
}

impl Run {
    fn take(&mut self, actions: Vec<Action>) {
        for (to, m) in messages(actions) {
            let head = m.iter().position(|f| f == "MDPW01" || f == "ZMDPW1");
            if let Some(i) = head
                && m.get(i + 1).is_some_and(|c| c[..] == [0x02])
            {
                // A REQUEST: [.., proto, 0x02, handle, ...].
                let body = m.last().cloned().unwrap_or_default();
                self.held
                    .entry(to)
                    .or_default()
                    .push_back((m[i + 2].clone(), body));
            } else if to.starts_with(b"c") {
                // To a client: its answer or error carries the body or a status.
                let body = m.last().map(|b| String::from_utf8_lossy(b).into_owned());
                if let Some(body) = body.filter(|b| b.starts_with("r")) {
                    *self.answers.entry(body).or_default() += 1;
                }
            }
        }
        self.b.check_invariants();
    }

    fn step(&mut self, op: Op) {
        let a = match op {
            Op::Ready { w, s } => {
                let service = format!("s{s}");
                if w % 2 == 0 {
                    let frames = f(&[b"", b"MDPW01", b"\x01", service.as_bytes()]);
                    self.b.handle(self.now, &worker(w), &frames)
                } else {
                    let credit = u32::from(1 + w).to_be_bytes();
                    let frames = f(&[b"ZMDPW1", b"\x01", service.as_bytes(), &credit]);
                    self.b.handle(self.now, &worker(w), &frames)
                }
            }
            Op::Request { c, s } => {
                self.next_body += 1;
                let body = format!("r{}", self.next_body);
                let frames = f(&[b"", b"MDPC01", format!("s{s}").as_bytes(), body.as_bytes()]);
                self.b.handle(self.now, &id(&format!("c{c}")), &frames)
            }
            Op::Reply { w } => {
                let Some((handle, body)) =
                    self.held.get_mut(&worker(w)).and_then(VecDeque::pop_front)
                else {
                    return;
                };
                // The worker echoes the request's body back.
                let frames = if w % 2 == 0 {
                    vec![
                        Bytes::new(),
                        Bytes::from_static(b"MDPW01"),
                        Bytes::from_static(b"\x03"),
                        handle,
                        Bytes::new(),
                        body,
                    ]
                } else {
                    let mut m = f(&[b"ZMDPW1", b"\x04"]);
                    m.extend([handle, Bytes::new(), body]);
                    m
                };
                self.b.handle(self.now, &worker(w), &frames)
            }
            Op::Disconnect { w } => {
                self.held.remove(&worker(w));
                let frames = if w % 2 == 0 {
                    f(&[b"", b"MDPW01", b"\x05"])
                } else {
                    f(&[b"ZMDPW1", b"\x06"])
                };
                self.b.handle(self.now, &worker(w), &frames)
            }
            Op::Closed { p } => {
                self.held.remove(&peer(p));
                self.b.connection_closed(self.now, &peer(p))
            }
            Op::Congested { p, on } => self.b.set_congested(self.now, &peer(p), on),
            Op::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                self.b.tick(self.now)
            }
        };
        self.take(a);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_broker_state_holds_together_through_any_run(ops in proptest::collection::vec(op(), 1..120)) {
        let cfg = BrokerConfig {
            heartbeat_interval: Duration::from_millis(1000),
            request_timeout: Duration::from_millis(5000),
            queue_max: 4,
            requests_max: 12,
            slots_max: 8,
            ..BrokerConfig::default()
        };
        let mut run = Run {
            b: Broker::new(cfg),
            now: Instant::now(),
            held: BTreeMap::new(),
            answers: BTreeMap::new(),
            next_body: 0,
        };
        for op in ops {
            run.step(op);
        }
        // No request is answered twice (the broker's own errors carry a status, not the body).
        prop_assert!(run.answers.values().all(|n| *n == 1), "{:?}", run.answers);
    }
}
