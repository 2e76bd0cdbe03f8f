//! ZMST01 frames from untrusted peers into the stream core, and the stream
//! record decoder: never a panic (outbox reports included), and a decoded
//! record encodes back to itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zmesh_broker::stream::record::StreamRecord;
use zmesh_broker::stream::{StreamAction, StreamCatalog, StreamCore, StreamCoreConfig};

fuzz_target!(|data: &[u8]| {
    if let Some(r) = StreamRecord::decode(&Bytes::copy_from_slice(data))
        && r.msg_id.len() <= 255
        && r.subject.len() <= 255
    {
        assert_eq!(StreamRecord::decode(&r.encode()), Some(r), "record round trip");
    }
    let Some((&who, rest)) = data.split_first() else { return };
    let mut frames = vec![Bytes::new(), Bytes::from_static(b"ZMST01")];
    frames.extend(rest.split(|b| *b == 0xff).map(Bytes::copy_from_slice));
    let _ = zmesh_wire::stream::proto::parse(&frames);
    let mut core = StreamCore::new(StreamCoreConfig::default(), StreamCatalog::default());
    let peer = Bytes::from(vec![who]);
    let mut actions = core.handle(zmesh::clock::Now { mono_ms: 1_000, wall_ms: 1_000 }, &peer, &frames);
    // The driver's outbox reports, picked by the first byte's high bits.
    if who & 0x40 != 0 {
        actions.extend(core.set_congested(&peer, true));
        actions.extend(core.set_congested(&peer, false));
    }
    if who & 0x80 != 0 {
        actions.extend(core.connection_closed(&peer));
    }
    actions.extend(core.tick(zmesh::clock::Now { mono_ms: 2_000, wall_ms: 2_000 }));
    for a in actions {
        if let StreamAction::Append { ticket, .. } = a {
            core.persisted(ticket, Ok(0));
        }
    }
    core.check_invariants();
});
