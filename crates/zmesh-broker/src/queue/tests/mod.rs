//! The queue core's rules, each a deterministic test; and a seeded
//! simulation checking that nothing confirmed is ever lost, replay included.
//! This file holds the simulated store the tests drive the core through.

mod cluster;
mod compaction;
mod memory;
mod rules;
mod simulation;

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use proptest::prelude::*;
use zmesh::clock::Now;

use crate::queue::core::{QueueAction, QueueCore, QueueCoreConfig};
use crate::queue::options::Catalog;
use crate::queue::proto::PROTOCOL;

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

/// A moment at `ms` on both clocks.
fn at(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: ms,
    }
}

fn peer(name: &str) -> Bytes {
    Bytes::from(name.to_owned())
}

impl Sim {
    fn restore(catalog: Catalog, journal: Vec<Bytes>) -> Sim {
        Sim::restore_with(QueueCoreConfig::default(), catalog, journal)
    }

    fn restore_with(config: QueueCoreConfig, catalog: Catalog, journal: Vec<Bytes>) -> Sim {
        let mut core = QueueCore::new(config.clone(), catalog.clone());
        for (o, r) in journal.iter().enumerate() {
            core.replay(at(1_000_000), o as u64, r);
        }
        core.replay_done();
        core.check_invariants();
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
        // Every step of every test and simulation ends on a whole check.
        self.core.check_invariants();
    }

    /// What the store does for `body_at`: the body of the record there.
    fn stored_body(&self, at: u64) -> Bytes {
        super::journal::body(&self.journal[at as usize]).expect("a message's record, not deleted")
    }

    fn send(&mut self, from: &str, parts: &[&str]) {
        let a = self.core.handle(at(self.now), &peer(from), &msg(parts));
        self.apply(a);
    }

    /// Make everything appended durable.
    fn sync(&mut self) {
        while !self.waiting.is_empty() {
            for (t, o) in std::mem::take(&mut self.waiting) {
                let a = self.core.persisted(at(self.now), t, Ok(o));
                self.apply(a);
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let a = self.core.tick(at(self.now));
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
        let a = self.core.compact(at(self.now), below, limits(100));
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
        let a = self.core.persisted(at(self.now), t, result);
        self.apply(a);
    }
}
