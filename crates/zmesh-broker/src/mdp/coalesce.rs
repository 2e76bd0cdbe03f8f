//! Sends to one zmesh peer within a round go out as one BATCH.

use foldhash::HashMap;

use bytes::Bytes;

use super::Action;
use zmesh_wire::mdp::batch::{BATCH_BYTES_MAX, BATCH_ITEMS_MAX, BatchWriter};
use zmesh_wire::mdp::{ZMDPC1, ZMDPW1, cmd};

fn batchable(frames: &[Bytes]) -> bool {
    matches!(frames, [h, c, ..] if (h.as_ref() == ZMDPC1 || h.as_ref() == ZMDPW1) && c.as_ref() != [cmd::BATCH])
}

struct Open {
    /// Index in the output of the first message, which the batch replaces.
    at: usize,
    /// From the second message on.
    batch: Option<BatchWriter>,
    bytes: usize,
}

impl Open {
    fn items(&self) -> usize {
        self.batch.as_ref().map_or(1, BatchWriter::items)
    }

    /// Put the batch, if any, in the place of its first message.
    fn close(self, out: &mut [Action]) {
        if let Some(batch) = self.batch {
            let Action::Send { frames, .. } = &mut out[self.at];
            *frames = batch.finish();
        }
    }
}

/// Merge the sends of one round: every message to the same ZMDPC1 client or
/// ZMDPW1 worker becomes one BATCH (up to [`BATCH_ITEMS_MAX`] items or 1 MiB),
/// at the place of the first. Per peer the order is kept; 7/MDP and 18/MDP
/// peers get their messages one by one, as their protocols say.
///
/// ```
/// use bytes::Bytes;
/// use zmesh_broker::mdp::{Action, coalesce};
/// let to = Bytes::from_static(b"client");
/// let reply = |id: &'static [u8]| Action::Send {
///     to: to.clone(),
///     frames: vec![Bytes::from_static(b"ZMDPC1"), Bytes::from_static(b"\x03"), Bytes::from_static(id)],
/// };
/// assert_eq!(coalesce(vec![reply(b"1"), reply(b"2")]).len(), 1);
/// ```
pub fn coalesce(actions: Vec<Action>) -> Vec<Action> {
    if actions.len() < 2 {
        return actions;
    }
    let mut out: Vec<Action> = Vec::with_capacity(actions.len());
    let mut open: HashMap<(Bytes, Bytes), Open> = HashMap::default();
    for Action::Send { to, frames } in actions {
        if !batchable(&frames) {
            // Whatever follows to this peer must come after it.
            for header in [ZMDPC1, ZMDPW1] {
                if let Some(o) = open.remove(&(to.clone(), Bytes::from_static(header))) {
                    o.close(&mut out);
                }
            }
            out.push(Action::Send { to, frames });
            continue;
        }
        let size: usize = frames.iter().map(Bytes::len).sum();
        // By peer and protocol: one connection may be a client and a worker.
        let key = (to.clone(), frames[0].clone());
        match open.get_mut(&key) {
            Some(o) if o.items() < BATCH_ITEMS_MAX && o.bytes + size <= BATCH_BYTES_MAX => {
                let batch = o.batch.get_or_insert_with(|| {
                    let Action::Send { frames: first, .. } = &out[o.at];
                    let mut b = BatchWriter::new(None);
                    b.push(first);
                    b
                });
                batch.push(&frames);
                o.bytes += size;
            }
            _ => {
                let fresh = Open {
                    at: out.len(),
                    batch: None,
                    bytes: size,
                };
                if let Some(full) = open.insert(key, fresh) {
                    full.close(&mut out);
                }
                out.push(Action::Send { to, frames });
            }
        }
    }
    for (_, o) in open {
        o.close(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmesh_wire::mdp::batch::split;

    fn send(to: &'static [u8], frames: &[&'static [u8]]) -> Action {
        Action::Send {
            to: Bytes::from_static(to),
            frames: frames.iter().map(|f| Bytes::from_static(f)).collect(),
        }
    }

    #[test]
    fn merges_per_zmesh_peer_and_keeps_each_peers_order() {
        let out = coalesce(vec![
            send(b"c", &[b"ZMDPC1", b"\x03", b"1"]),
            send(b"w", &[b"ZMDPW1", b"\x02", b"h", b"", b"x"]),
            send(b"c", &[b"ZMDPC1", b"\x04", b"2"]),
            send(b"m", &[b"", b"MDPW01", b"\x04"]),
            send(b"m", &[b"", b"MDPW01", b"\x04"]),
            send(b"c", &[b"ZMDPC1", b"\x03", b"3"]),
        ]);
        assert_eq!(out.len(), 4, "one batch to c, one message to w, two to m");
        let Action::Send { to, frames } = &out[0];
        assert_eq!(to.as_ref(), b"c");
        let items = split(frames).unwrap();
        let ids: Vec<&[u8]> = items.iter().map(|i| i[2].as_ref()).collect();
        assert_eq!(ids, [b"1", b"2", b"3"]);
        let Action::Send { frames, .. } = &out[1];
        assert_eq!(
            frames[1].as_ref(),
            b"\x02",
            "a lone message is sent as it is"
        );
    }

    #[test]
    fn a_peer_that_is_client_and_worker_gets_one_batch_per_protocol() {
        let out = coalesce(vec![
            send(b"p", &[b"ZMDPC1", b"\x03", b"1"]),
            send(b"p", &[b"ZMDPW1", b"\x02", b"h1", b"", b"x"]),
            send(b"p", &[b"ZMDPC1", b"\x03", b"2"]),
            send(b"p", &[b"ZMDPW1", b"\x02", b"h2", b"", b"y"]),
        ]);
        assert_eq!(out.len(), 2);
        for (Action::Send { frames, .. }, header) in out.iter().zip([b"ZMDPC1", b"ZMDPW1"]) {
            assert_eq!(frames[0].as_ref(), header);
            assert!(
                split(frames)
                    .unwrap()
                    .iter()
                    .all(|m| m[0].as_ref() == header)
            );
        }
    }

    #[test]
    fn a_batch_stops_at_its_item_limit() {
        let many: Vec<Action> = (0..BATCH_ITEMS_MAX + 1)
            .map(|_| send(b"c", &[b"ZMDPC1", b"\x03", b"1"]))
            .collect();
        let out = coalesce(many);
        assert_eq!(out.len(), 2);
        let Action::Send { frames, .. } = &out[0];
        assert_eq!(split(frames).unwrap().len(), BATCH_ITEMS_MAX);
    }
}
