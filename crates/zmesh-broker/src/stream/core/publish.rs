//! PUBLISH: append a message and answer once it is durable; a repeat of a
//! remembered message id gets the first message's outcome instead of a
//! second copy (so a producer's retry after a lost reply stores nothing).

use bytes::Bytes;
use zmesh::clock::Now;

use super::{PendingPublish, StreamAction, StreamCore, err, no_stream};
use crate::dedup::Dedup;
use crate::stream::proto;
use crate::stream::record::StreamRecord;
use zmesh_wire::stream::proto::code;

impl StreamCore {
    #[allow(clippy::too_many_arguments)] // one per PUBLISH field
    pub(super) fn publish(
        &mut self,
        now: Now,
        from: &Bytes,
        corr: Bytes,
        name: &str,
        subject: Bytes,
        body: Bytes,
        msg_id: Bytes,
    ) {
        if self.draining {
            return self
                .out
                .push(err(from, &corr, code::UNAVAILABLE, "broker shutting down"));
        }
        let Some(s) = self.names.get(name).and_then(|id| self.streams.get_mut(id)) else {
            return self.out.push(no_stream(from, &corr, name));
        };
        match s.dedup.get(&msg_id) {
            Some(Dedup::Stored(seq)) => {
                s.duplicates += 1;
                return self.send(from, proto::stored(&corr, seq));
            }
            Some(Dedup::Storing(ticket)) => {
                s.duplicates += 1;
                if let Some(p) = self.publishes.get_mut(&ticket) {
                    p.waiters.push((from.clone(), corr));
                }
                return;
            }
            None => {}
        }
        // Times never go backwards within a stream: "start at time T" relies on it.
        s.last_time_ms = s.last_time_ms.max(now.wall_ms);
        let record = StreamRecord {
            time_ms: s.last_time_ms,
            subject: subject.clone(),
            msg_id: msg_id.clone(),
            body,
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let window = s.spec.options.dedup_window as usize;
        s.dedup
            .remember(msg_id.clone(), Dedup::Storing(ticket), window);
        self.out.push(StreamAction::Append {
            stream: s.spec.id,
            record: record.encode(),
            durability: s.spec.options.durability,
            ticket,
        });
        self.publishes.insert(
            ticket,
            PendingPublish {
                stream: s.spec.id,
                waiters: vec![(from.clone(), corr)],
                subject,
                msg_id,
            },
        );
    }

    /// The record of `ticket` is durable as `seq`, or could not be stored.
    pub fn persisted(&mut self, ticket: u64, result: Result<u64, String>) -> Vec<StreamAction> {
        let Some(p) = self.publishes.remove(&ticket) else {
            return std::mem::take(&mut self.out);
        };
        match (result, self.streams.get_mut(&p.stream)) {
            (Ok(seq), Some(s)) => {
                s.visible_end = s.visible_end.max(seq + 1);
                s.published += 1;
                super::remember_last(s, p.subject, seq);
                // Only if still remembered: an id the window let go while
                // this was stored must not push out a newer one.
                s.dedup.update(&p.msg_id, Dedup::Stored(seq));
                for (to, corr) in &p.waiters {
                    self.send(to, proto::stored(corr, seq));
                }
                // Subscribers are served once per batch (`pump_dirty`),
                // not once per message: one log read covers the batch.
                if !self.dirty.contains(&p.stream) {
                    self.dirty.push(p.stream);
                }
            }
            (Ok(_), None) => {
                for (to, corr) in &p.waiters {
                    self.out
                        .push(err(to, corr, code::NOT_FOUND, "stream deleted"));
                }
            }
            (Err(reason), s) => {
                // Not stored: a repeat may try again.
                if let Some(s) = s {
                    s.dedup.forget(&p.msg_id);
                }
                let reason = format!("storage refused the message: {reason}");
                for (to, corr) in &p.waiters {
                    self.out.push(err(to, corr, code::STORAGE, &reason));
                }
            }
        }
        std::mem::take(&mut self.out)
    }
}
