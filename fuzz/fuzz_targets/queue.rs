//! ZMQU01 frames from untrusted peers into the queue core, with journal
//! compaction between rounds and bodies kept on disk past a tiny memory
//! bound: never a panic, every journal record the core writes decodes back,
//! and every body it asks to read back (`body_at`) is a stored message's.
//! The driver's outbox reports (a peer congested, relieved, its connection
//! closed) come in between, picked by the first byte's high bits.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zmesh_broker::queue::journal::{self, Entry};
use zmesh_broker::queue::{Catalog, QueueAction, QueueCore, QueueCoreConfig};

fuzz_target!(|data: &[u8]| {
    // Frames separated by 0xff; the first byte picks the sending peer (and,
    // in its high bits, the outbox reports).
    let Some((&who, rest)) = data.split_first() else { return };
    let mut frames = vec![Bytes::new(), Bytes::from_static(b"ZMQU01")];
    frames.extend(rest.split(|b| *b == 0xff).map(Bytes::copy_from_slice));
    let _ = zmesh_wire::queue::proto::parse(&frames);
    let config = QueueCoreConfig { bytes_max: 16, ..QueueCoreConfig::default() };
    let mut core = QueueCore::new(config, Catalog::default());
    let mut journal: Vec<Bytes> = Vec::new();
    let body_at = |journal: &[Bytes], at: u64| -> Bytes {
        let record = journal.get(at as usize).expect("body_at points into the journal");
        journal::body(record).expect("body_at points at a stored message")
    };
    for i in 0..4u64 {
        let now_ms = 1_000 + i * 3_000;
        let now = zmesh::clock::Now { mono_ms: now_ms, wall_ms: now_ms };
        let peer = Bytes::from(vec![who.wrapping_add((i % 2) as u8)]);
        let mut actions = core.handle(now, &peer, &frames);
        actions.extend(core.tick(now));
        if who & 0x40 != 0 {
            actions.extend(core.set_congested(now, &peer, i < 2));
        }
        if who & 0x80 != 0 && i == 2 {
            actions.extend(core.connection_closed(now, &peer));
        }
        // Journal compaction over everything written so far.
        let limits = zmesh_broker::queue::core::CompactLimits {
            moves_max: 8,
            bytes_max: 1 << 20,
            record_bytes_max: 1 << 24,
        };
        actions.extend(core.compact(now, journal.len() as u64, limits));
        let mut todo: std::collections::VecDeque<QueueAction> = actions.into();
        while let Some(a) = todo.pop_front() {
            match a {
                QueueAction::Append { record, body_at: at, ticket, .. } => {
                    let record = match at {
                        Some(at) => [record, body_at(&journal, at)].concat().into(),
                        None => record,
                    };
                    assert!(Entry::decode(&record).is_some(), "the core wrote an undecodable record");
                    journal.push(record);
                    if let Some(t) = ticket {
                        todo.extend(core.persisted(now, t, Ok(journal.len() as u64 - 1)));
                    }
                }
                QueueAction::Send { body_at: Some(at), .. } => {
                    body_at(&journal, at);
                }
                _ => {}
            }
        }
        core.check_invariants();
    }
});
