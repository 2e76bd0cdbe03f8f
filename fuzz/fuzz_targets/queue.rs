//! ZMQU01 frames from untrusted peers into the queue core, with journal
//! compaction between rounds: never a panic, and every journal record the
//! core writes decodes back.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zmesh_broker::queue::journal::Entry;
use zmesh_broker::queue::{Catalog, QueueAction, QueueCore, QueueCoreConfig};

fuzz_target!(|data: &[u8]| {
    // Frames separated by 0xff; the first byte picks the sending peer.
    let Some((&who, rest)) = data.split_first() else { return };
    let mut frames = vec![Bytes::new(), Bytes::from_static(b"ZMQU01")];
    frames.extend(rest.split(|b| *b == 0xff).map(Bytes::copy_from_slice));
    let _ = zmesh_broker::queue::proto::parse(&frames);
    let mut core = QueueCore::new(QueueCoreConfig::default(), Catalog::default());
    let mut offset = 0u64;
    for i in 0..4u64 {
        let peer = Bytes::from(vec![who.wrapping_add((i % 2) as u8)]);
        let mut actions = core.handle(1_000 + i * 3_000, &peer, &frames);
        actions.extend(core.tick(1_000 + i * 3_000));
        // Journal compaction over everything written so far.
        let limits = zmesh_broker::queue::core::CompactLimits {
            moves_max: 8,
            bytes_max: 1 << 20,
            record_bytes_max: 1 << 24,
        };
        actions.extend(core.compact(1_000 + i * 3_000, offset, limits));
        for a in actions {
            if let QueueAction::Append { record, ticket, .. } = a {
                assert!(Entry::decode(&record).is_some(), "the core wrote an undecodable record");
                if let Some(t) = ticket {
                    core.persisted(1_000, t, Ok(offset));
                }
                offset += 1;
            }
        }
    }
});
