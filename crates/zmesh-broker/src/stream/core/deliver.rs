//! Subscriptions: starting one, the cursor-and-credit delivery loop that
//! serves history and live tail alike, and snapshots.

use bytes::Bytes;
use zmesh::clock::Now;

use super::{PendingSnapshot, StreamAction, StreamCore, Sub, SubKey, err, no_stream};
use crate::stream::proto::{self, Start};
use crate::stream::record::StreamRecord;
use crate::stream::subject::Filter;
use zmesh_wire::stream::proto::code;

/// Snapshots being read at once, over all clients.
const SNAPSHOTS_PENDING_MAX: usize = 1024;

impl StreamCore {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn subscribe(
        &mut self,
        now: Now,
        from: &Bytes,
        corr: Bytes,
        name: &str,
        sub: Bytes,
        filter: Filter,
        start: Start,
        credit: u32,
        durable: Option<String>,
    ) {
        let Some(s) = self.names.get(name).and_then(|id| self.streams.get_mut(id)) else {
            return self.out.push(no_stream(from, &corr, name));
        };
        let key = (from.clone(), sub);
        if !self.subs.contains_key(&key) && self.subs.len() >= self.config.subs_max {
            return self.out.push(err(
                from,
                &corr,
                code::UNAVAILABLE,
                "the broker's subscription limit is reached",
            ));
        }
        let saved = durable.as_ref().and_then(|d| s.durables.get(d).copied());
        let mut locate = None;
        let cursor = match (saved, start) {
            (Some(pos), _) => pos,
            (None, Start::First) => s.first_seq,
            (None, Start::New) => s.visible_end,
            (None, Start::Seq(n)) => n,
            (None, Start::Time(t)) => {
                locate = Some(t);
                s.first_seq
            }
        }
        .max(s.first_seq);
        if let Some(d) = &durable
            && saved.is_none()
            && locate.is_none()
        {
            s.durables.insert(d.clone(), cursor);
            self.durables_dirty = true;
        }
        let stream = s.spec.id;
        self.peers.insert(from.clone(), now.mono_ms);
        let serial = self.next_ticket;
        self.next_ticket += 1;
        self.subs.insert(
            key.clone(),
            Sub {
                serial,
                stream,
                filter,
                cursor,
                credit,
                dseq: 0,
                durable,
                busy: locate.is_some(),
                pending_ok: locate.map(|_| corr.clone()),
            },
        );
        match locate {
            Some(time_ms) => self.out.push(StreamAction::Locate {
                stream,
                sub: key,
                serial,
                time_ms,
            }),
            None => {
                let body = format!(r#"{{"cursor":{cursor}}}"#);
                self.send(from, proto::ok(&corr, Some(body.into())));
                self.pump(&key);
            }
        }
    }

    /// The first sequence stored at or after the subscription's start time.
    pub fn located(&mut self, sub: &SubKey, serial: u64, seq: u64) -> Vec<StreamAction> {
        if let Some(s) = self.subs.get_mut(sub)
            && s.serial == serial
        {
            s.cursor = s.cursor.max(seq);
            s.busy = false;
            if let Some(d) = s.durable.clone()
                && let Some(st) = self.streams.get_mut(&s.stream)
            {
                st.durables.entry(d).or_insert(s.cursor);
                self.durables_dirty = true;
            }
            if let Some(corr) = s.pending_ok.take() {
                let body = format!(r#"{{"cursor":{}}}"#, s.cursor);
                self.send(&sub.0, proto::ok(&corr, Some(body.into())));
            }
            self.pump(sub);
        }
        std::mem::take(&mut self.out)
    }

    /// Serve subscribers of streams that grew since the last call; the driver
    /// calls it at the end of each batch.
    pub fn pump_dirty(&mut self) -> Vec<StreamAction> {
        for stream in std::mem::take(&mut self.dirty) {
            self.pump_stream(stream);
        }
        std::mem::take(&mut self.out)
    }

    pub(super) fn pump_stream(&mut self, stream: u32) {
        for k in self.subs.keys_of_stream(stream) {
            self.pump(&k);
        }
    }

    /// Ask for the next records of a subscription that has credit and is behind.
    pub(super) fn pump(&mut self, key: &SubKey) {
        let Some(sub) = self.subs.get_mut(key) else {
            return;
        };
        let Some(s) = self.streams.get(&sub.stream) else {
            return;
        };
        if sub.busy
            || sub.credit == 0
            || sub.cursor >= s.visible_end
            || self.congested.contains(&key.0)
        {
            return;
        }
        sub.busy = true;
        self.out.push(StreamAction::Fetch {
            stream: sub.stream,
            sub: key.clone(),
            serial: sub.serial,
            from: sub.cursor,
            end: s.visible_end,
            max: self.config.fetch_max,
        });
    }

    /// Records read for a subscription's `Fetch`, in order (may be empty).
    pub fn fetched(
        &mut self,
        key: &SubKey,
        serial: u64,
        records: Vec<(u64, Bytes)>,
    ) -> Vec<StreamAction> {
        let Some(sub) = self.subs.get_mut(key).filter(|s| s.serial == serial) else {
            // Gone, or subscribed again since: the answer is no one's.
            return std::mem::take(&mut self.out);
        };
        sub.busy = false;
        let Some(s) = self.streams.get_mut(&sub.stream) else {
            return std::mem::take(&mut self.out);
        };
        if sub.cursor < s.first_seq {
            s.skipped_by_retention += s.first_seq - sub.cursor;
            sub.cursor = s.first_seq;
        }
        let progressed = !records.is_empty();
        for (seq, payload) in records {
            if seq < sub.cursor {
                continue;
            }
            sub.cursor = seq + 1;
            let Some(r) = StreamRecord::decode(&payload) else {
                continue;
            };
            if !std::str::from_utf8(&r.subject).is_ok_and(|subj| sub.filter.matches(subj)) {
                continue;
            }
            sub.dseq += 1;
            sub.credit -= 1;
            s.delivered += 1;
            self.out.push(StreamAction::Send {
                to: key.0.clone(),
                frames: proto::msg(&key.1, seq, sub.dseq, r.time_ms, &r.subject, &r.body),
            });
            if sub.credit == 0 {
                break;
            }
        }
        if !progressed {
            // Nothing readable where the log should have it (damage): move on
            // rather than ask again forever.
            sub.cursor = s.visible_end;
        }
        self.pump(key);
        std::mem::take(&mut self.out)
    }

    /// A `Fetch` could not be read: the subscription tries again at the next heartbeat tick.
    pub fn fetch_failed(&mut self, key: &SubKey, serial: u64) {
        if let Some(s) = self.subs.get_mut(key)
            && s.serial == serial
        {
            s.busy = false;
            self.subs.retry_later(key);
        }
    }

    pub(super) fn snapshot(&mut self, from: &Bytes, corr: Bytes, name: &str, filter: &Filter) {
        let Some(s) = self.names.get(name).and_then(|id| self.streams.get(id)) else {
            return self.out.push(no_stream(from, &corr, name));
        };
        if self.snapshots.len() >= SNAPSHOTS_PENDING_MAX {
            // Each is a read queued for the disk: a client that asks without
            // waiting must not queue them without end.
            return self.out.push(err(
                from,
                &corr,
                code::UNAVAILABLE,
                "too many snapshots in progress; retry",
            ));
        }
        let mut seqs: Vec<u64> = s
            .last_values
            .iter()
            .filter(|(subj, seq)| {
                **seq >= s.first_seq && std::str::from_utf8(subj).is_ok_and(|x| filter.matches(x))
            })
            .map(|(_, seq)| *seq)
            .collect();
        seqs.sort_unstable();
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.snapshots.insert(
            id,
            PendingSnapshot {
                to: from.clone(),
                corr,
                next_seq: s.visible_end,
            },
        );
        self.out.push(StreamAction::ReadSeqs {
            stream: s.spec.id,
            seqs,
            snapshot: id,
        });
    }

    /// The records of a snapshot: reply `SNAPSHOT corr next_seq count` and then
    /// `subject seq time_ms body` per subject, oldest first.
    pub fn snapshot_read(
        &mut self,
        snapshot: u64,
        records: Vec<(u64, Bytes)>,
    ) -> Vec<StreamAction> {
        if let Some(p) = self.snapshots.remove(&snapshot) {
            let mut f = proto::head(b"SNAPSHOT");
            f.push(p.corr);
            f.push(Bytes::from(p.next_seq.to_string()));
            let decoded: Vec<(u64, StreamRecord)> = records
                .into_iter()
                .filter_map(|(seq, b)| Some((seq, StreamRecord::decode(&b)?)))
                .collect();
            f.push(Bytes::from(decoded.len().to_string()));
            for (seq, r) in decoded {
                f.push(r.subject);
                f.push(Bytes::from(seq.to_string()));
                f.push(Bytes::from(r.time_ms.to_string()));
                f.push(r.body);
            }
            self.send(&p.to, f);
        }
        std::mem::take(&mut self.out)
    }
}
