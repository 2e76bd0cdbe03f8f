//! The stream broker's protocol core, sans-IO.
//!
//! I/O contract: feed each stream's stored messages to [`StreamCore::replay`]
//! at start (and the durable positions to [`StreamCore::load_durables`]);
//! then call [`StreamCore::handle`] per ZMST01 message and [`StreamCore::tick`]
//! about every second, and carry out every [`StreamAction`] in order,
//! answering `Append` with [`StreamCore::persisted`], `Fetch` with
//! [`StreamCore::fetched`], `Locate` with [`StreamCore::located`], `ReadSeqs`
//! with [`StreamCore::snapshot_read`] and `Retain` with [`StreamCore::retained`].
//!
//! One delivery path for history and live tail: every subscription is a
//! cursor into its stream's log plus a credit. Whenever it has credit and the
//! cursor is behind the last durable message, the core asks the driver to
//! read from the log at the cursor. Catching up and following live are the
//! same loop, so the switch between them can have no gap and no duplicate;
//! and a subscriber without credit costs the broker a cursor, never a buffer.

use std::collections::BTreeMap;

use bytes::Bytes;
use foldhash::HashMap;
use zmesh::clock::Now;
use zmesh_log::Durability;

mod check;
mod deliver;
mod publish;
mod subs;
use subs::Subs;

use super::options::{StreamCatalog, StreamOptions, StreamSpec};
use super::proto::{self, Command};
use super::record::StreamRecord;
use super::subject::Filter;
use crate::dedup::{Dedup, DedupWindow};
use zmesh_wire::stream::proto::code;

/// Core settings.
#[derive(Clone, Debug)]
pub struct StreamCoreConfig {
    /// How often subscribers hear a HEARTBEAT.
    pub heartbeat_ms: u64,
    /// A subscriber silent this long is dropped.
    pub peer_timeout_ms: u64,
    /// Streams at once.
    pub streams_max: usize,
    /// Subscriptions at once.
    pub subs_max: usize,
    /// Records read per fetch.
    pub fetch_max: usize,
}

impl Default for StreamCoreConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            peer_timeout_ms: 5000,
            streams_max: 1000,
            subs_max: 100_000,
            fetch_max: 512,
        }
    }
}

/// A subscription: (peer identity, the client's subscription id).
pub type SubKey = (Bytes, Bytes);

/// Something for the driver to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamAction {
    /// Send frames to a peer.
    Send {
        /// ROUTER identity.
        to: Bytes,
        /// Frames after the identity.
        frames: Vec<Bytes>,
    },
    /// Append to stream `stream`'s log; answer with `persisted(ticket, ..)`.
    Append {
        /// Stream id.
        stream: u32,
        /// Encoded [`StreamRecord`].
        record: Bytes,
        /// When it counts as stored.
        durability: Durability,
        /// Answer token.
        ticket: u64,
    },
    /// Read up to `max` records from `from` (below `end`); answer with `fetched`.
    Fetch {
        /// Stream id.
        stream: u32,
        /// For whom.
        sub: SubKey,
        /// Which subscription of that key (a key subscribed again is a new
        /// one): passed back with the answer.
        serial: u64,
        /// First sequence number.
        from: u64,
        /// Stop before this one.
        end: u64,
        /// At most this many records.
        max: usize,
    },
    /// Find the first sequence number stored at or after `time_ms`; answer with `located`.
    Locate {
        /// Stream id.
        stream: u32,
        /// For whom.
        sub: SubKey,
        /// As for `Fetch`.
        serial: u64,
        /// Time.
        time_ms: u64,
    },
    /// Read these records; answer with `snapshot_read`.
    ReadSeqs {
        /// Stream id.
        stream: u32,
        /// Sequence numbers.
        seqs: Vec<u64>,
        /// Answer token.
        snapshot: u64,
    },
    /// Apply the stream's retention; answer with `retained`.
    Retain {
        /// Stream id.
        stream: u32,
        /// Its settings.
        options: StreamOptions,
    },
    /// Open storage for a new stream.
    CreateStream(StreamSpec),
    /// Remove a stream's storage.
    DeleteStream(u32),
    /// Save the catalog (atomically) before later actions.
    SaveCatalog(StreamCatalog),
    /// Save durable positions: stream id → durable name → next sequence number.
    SaveDurables(BTreeMap<u32, BTreeMap<String, u64>>),
}

struct Stream {
    spec: StreamSpec,
    first_seq: u64,
    /// Sequence after the last durable message: what subscribers may see.
    visible_end: u64,
    last_time_ms: u64,
    last_values: HashMap<Bytes, u64>,
    durables: BTreeMap<String, u64>,
    published: u64,
    /// Publishes recognised as repeats of a remembered message id.
    duplicates: u64,
    delivered: u64,
    skipped_by_retention: u64,
    dedup: DedupWindow,
}

struct Sub {
    /// Unique over the core's life: an answer to a fetch or locate of an
    /// earlier subscription under the same key is not this one's.
    serial: u64,
    stream: u32,
    filter: Filter,
    cursor: u64,
    credit: u32,
    dseq: u64,
    durable: Option<String>,
    /// A fetch or locate is out: wait for its answer.
    busy: bool,
    /// The OK still owed (subscriptions starting at a time).
    pending_ok: Option<Bytes>,
}

struct PendingPublish {
    stream: u32,
    /// The publisher first, then repeats of its message id: (peer, corr).
    waiters: Vec<(Bytes, Bytes)>,
    subject: Bytes,
    msg_id: Bytes,
}

struct PendingSnapshot {
    to: Bytes,
    corr: Bytes,
    next_seq: u64,
}

/// Streams and subscriptions: see the module docs for the I/O contract.
pub struct StreamCore {
    config: StreamCoreConfig,
    catalog: StreamCatalog,
    streams: HashMap<u32, Stream>,
    names: HashMap<String, u32>,
    subs: Subs,
    peers: HashMap<Bytes, u64>,
    publishes: HashMap<u64, PendingPublish>,
    snapshots: HashMap<u64, PendingSnapshot>,
    next_ticket: u64,
    next_heartbeat_ms: u64,
    durables_dirty: bool,
    /// Streams with new durable messages since the last `pump_dirty`.
    dirty: Vec<u32>,
    /// Shutting down: publishes are refused (503).
    draining: bool,
    /// Peers whose MSGs pile up unread in the driver's outbox: their
    /// subscriptions fetch nothing until relieved. Bounded by the outbox.
    congested: foldhash::HashSet<Bytes>,
    out: Vec<StreamAction>,
}

fn err(to: &Bytes, corr: &Bytes, c: u16, reason: &str) -> StreamAction {
    StreamAction::Send {
        to: to.clone(),
        frames: proto::error(corr, c, reason),
    }
}

/// ERROR 404 for a stream that does not exist.
fn no_stream(to: &Bytes, corr: &Bytes, name: &str) -> StreamAction {
    err(to, corr, code::NOT_FOUND, &format!("no stream {name:?}"))
}

impl StreamCore {
    /// A core with the streams of `catalog` (empty until replayed).
    pub fn new(config: StreamCoreConfig, catalog: StreamCatalog) -> StreamCore {
        let mut core = StreamCore {
            config,
            catalog: StreamCatalog::default(),
            streams: HashMap::default(),
            names: HashMap::default(),
            subs: Subs::default(),
            peers: HashMap::default(),
            publishes: HashMap::default(),
            snapshots: HashMap::default(),
            next_ticket: 0,
            next_heartbeat_ms: 0,
            durables_dirty: false,
            dirty: Vec::new(),
            draining: false,
            congested: Default::default(),
            out: Vec::new(),
        };
        for spec in &catalog.streams {
            core.add_stream(spec.clone(), 0);
        }
        core.catalog = catalog;
        core
    }

    fn add_stream(&mut self, spec: StreamSpec, first_seq: u64) {
        self.names.insert(spec.name.clone(), spec.id);
        self.streams.insert(
            spec.id,
            Stream {
                spec,
                first_seq,
                visible_end: first_seq,
                last_time_ms: 0,
                last_values: HashMap::default(),
                durables: BTreeMap::new(),
                published: 0,
                duplicates: 0,
                delivered: 0,
                skipped_by_retention: 0,
                dedup: DedupWindow::default(),
            },
        );
    }

    /// Where a stream's log starts and ends after recovery.
    pub fn set_bounds(&mut self, stream: u32, first_seq: u64, end: u64) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.first_seq = first_seq;
            s.visible_end = end;
        }
    }

    /// One stored message, read back at start-up (rebuilds the last values).
    pub fn replay(&mut self, stream: u32, seq: u64, record: &Bytes) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(r) = StreamRecord::decode(record) {
            s.last_time_ms = s.last_time_ms.max(r.time_ms);
            remember_last(s, r.subject, seq);
            let window = s.spec.options.dedup_window as usize;
            s.dedup.remember(r.msg_id, Dedup::Stored(seq), window);
        }
    }

    /// Durable positions saved by an earlier run.
    pub fn load_durables(&mut self, saved: BTreeMap<u32, BTreeMap<String, u64>>) {
        for (id, durables) in saved {
            if let Some(s) = self.streams.get_mut(&id) {
                s.durables = durables;
            }
        }
    }

    fn send(&mut self, to: &Bytes, frames: Vec<Bytes>) {
        self.out.push(StreamAction::Send {
            to: to.clone(),
            frames,
        });
    }

    /// Handle one ZMST01 message from `from` (frames after the identity).
    pub fn handle(&mut self, now: Now, from: &Bytes, frames: &[Bytes]) -> Vec<StreamAction> {
        if let Some(seen) = self.peers.get_mut(from) {
            *seen = now.mono_ms;
        }
        match proto::parse(frames) {
            Ok(cmd) => self.command(now, from, cmd),
            Err(e) => {
                if let Some(corr) = e.corr {
                    self.out
                        .push(err(from, &corr, code::BAD_REQUEST, &e.reason));
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    fn command(&mut self, now: Now, from: &Bytes, cmd: Command) {
        match cmd {
            Command::Create {
                corr,
                stream,
                options,
            } => self.create(from, &corr, &stream, options),
            Command::Delete { corr, stream } => self.delete(from, &corr, &stream),
            Command::Info { corr, stream } => {
                let info: Vec<serde_json::Value> = match &stream {
                    Some(name) => match self.names.get(name) {
                        Some(id) => vec![self.info(*id)],
                        None => return self.out.push(no_stream(from, &corr, name)),
                    },
                    None => {
                        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
                        ids.sort_unstable();
                        ids.into_iter().map(|id| self.info(id)).collect()
                    }
                };
                let body = serde_json::to_vec(&info).expect("info serializes");
                self.send(from, proto::ok(&corr, Some(body.into())));
            }
            Command::Publish {
                corr,
                stream,
                subject,
                body,
                msg_id,
            } => self.publish(now, from, corr, &stream, subject, body, msg_id),
            Command::Subscribe {
                corr,
                stream,
                sub,
                filter,
                start,
                credit,
                durable,
            } => self.subscribe(
                now, from, corr, &stream, sub, filter, start, credit, durable,
            ),
            Command::Credit { sub, credit } => {
                let key = (from.clone(), sub);
                if let Some(s) = self.subs.get_mut(&key) {
                    s.credit = s.credit.saturating_add(credit).min(proto::CREDIT_MAX);
                    self.pump(&key);
                }
            }
            Command::Ack { sub, seq } => {
                let key = (from.clone(), sub);
                if let Some(s) = self.subs.get(&key)
                    && let Some(name) = s.durable.clone()
                    && let Some(st) = self.streams.get_mut(&s.stream)
                {
                    let pos = st.durables.entry(name).or_insert(0);
                    *pos = (*pos).max(seq + 1);
                    self.durables_dirty = true;
                }
            }
            Command::Unsubscribe { corr, sub } => {
                let gone = self.subs.remove(&(from.clone(), sub)).is_some();
                let frames = if gone {
                    proto::ok(&corr, None)
                } else {
                    proto::error(&corr, code::NOT_FOUND, "no such subscription")
                };
                self.send(from, frames);
            }
            Command::Snapshot {
                corr,
                stream,
                filter,
            } => self.snapshot(from, corr, &stream, &filter),
            Command::Heartbeat => {}
            Command::Disconnect => self.drop_peer(from),
        }
    }

    /// Every stream's INFO object, by id.
    pub fn infos(&self) -> Vec<serde_json::Value> {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| self.info(id)).collect()
    }

    fn info(&self, id: u32) -> serde_json::Value {
        let s = &self.streams[&id];
        serde_json::json!({
            "name": s.spec.name,
            "first_seq": s.first_seq,
            "last_seq": s.visible_end.checked_sub(1),
            "messages": s.visible_end - s.first_seq,
            "subjects": s.last_values.len(),
            "subscribers": self.subs.of_stream(id).count(),
            // How far the slowest subscription is behind the newest message.
            "lag_max": self.subs.of_stream(id)
                .map(|x| s.visible_end.saturating_sub(x.cursor)).max().unwrap_or(0),
            "durables": s.durables,
            "published": s.published,
            "duplicates": s.duplicates,
            "delivered": s.delivered,
            "skipped_by_retention": s.skipped_by_retention,
            "options": s.spec.options,
        })
    }

    fn create(&mut self, from: &Bytes, corr: &Bytes, name: &str, options: Option<StreamOptions>) {
        if let Some(id) = self.names.get(name) {
            let s = &self.streams[id];
            let frames = match &options {
                Some(o) if *o != s.spec.options => proto::error(
                    corr,
                    code::CONFLICT,
                    &format!("stream {name:?} exists with other options"),
                ),
                _ => proto::ok(
                    corr,
                    Some(serde_json::to_vec(&s.spec).expect("spec").into()),
                ),
            };
            return self.send(from, frames);
        }
        if self.streams.len() >= self.config.streams_max {
            return self.out.push(err(
                from,
                corr,
                code::UNAVAILABLE,
                "the broker's stream limit is reached",
            ));
        }
        let spec = StreamSpec {
            id: self.catalog.next_id,
            name: name.to_owned(),
            options: options.unwrap_or_default(),
        };
        self.catalog.next_id += 1;
        self.catalog.streams.push(spec.clone());
        self.add_stream(spec.clone(), 0);
        self.out.push(StreamAction::CreateStream(spec.clone()));
        self.out
            .push(StreamAction::SaveCatalog(self.catalog.clone()));
        tracing::info!(stream = name, "stream created");
        self.send(
            from,
            proto::ok(corr, Some(serde_json::to_vec(&spec).expect("spec").into())),
        );
    }

    fn delete(&mut self, from: &Bytes, corr: &Bytes, name: &str) {
        let Some(id) = self.names.remove(name) else {
            return self.out.push(no_stream(from, corr, name));
        };
        self.streams.remove(&id);
        self.subs.remove_stream(id);
        self.catalog.streams.retain(|s| s.id != id);
        self.out
            .push(StreamAction::SaveCatalog(self.catalog.clone()));
        self.out.push(StreamAction::DeleteStream(id));
        self.send(from, proto::ok(corr, None));
    }

    /// Refuse new publishes from now on ("503 broker shutting down").
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Retention removed everything below `first_seq`.
    pub fn retained(&mut self, stream: u32, first_seq: u64) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.first_seq = s.first_seq.max(first_seq);
            let first = s.first_seq;
            s.last_values.retain(|_, seq| *seq >= first);
        }
    }

    fn drop_peer(&mut self, peer: &Bytes) {
        self.subs.remove_peer(peer);
        self.peers.remove(peer);
    }

    /// `peer`'s connection closed: its subscriptions end at once, as they
    /// would after `peer_timeout_ms` of silence.
    pub fn connection_closed(&mut self, peer: &Bytes) -> Vec<StreamAction> {
        self.congested.remove(peer);
        if self.peers.contains_key(peer) {
            tracing::info!(peer = ?peer, "stream subscriber's connection closed; dropped");
            self.drop_peer(peer);
        }
        std::mem::take(&mut self.out)
    }

    /// `peer` reads too slowly (`true`) or has caught up (`false`), as the
    /// driver's outbox reports: its subscriptions keep their credit but fetch
    /// nothing meanwhile, so MSGs stay in the log, not in memory in front of
    /// a reader that does not read. (A scan of the subscriptions, on changes only.)
    pub fn set_congested(&mut self, peer: &Bytes, congested: bool) -> Vec<StreamAction> {
        if congested {
            self.congested.insert(peer.clone());
        } else if self.congested.remove(peer) {
            for k in self.subs.keys_of_peer(peer) {
                self.pump(&k);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Heartbeats, silent peers, retention, saving durable positions.
    pub fn tick(&mut self, now: Now) -> Vec<StreamAction> {
        let silent: Vec<Bytes> = self
            .peers
            .iter()
            .filter(|(_, seen)| now.mono_ms >= **seen + self.config.peer_timeout_ms)
            .map(|(p, _)| p.clone())
            .collect();
        for p in silent {
            tracing::info!(peer = ?p, "stream subscriber silent too long; dropped");
            self.drop_peer(&p);
        }
        if now.mono_ms >= self.next_heartbeat_ms {
            let peers: Vec<Bytes> = self.peers.keys().cloned().collect();
            for p in peers {
                self.send(&p, proto::heartbeat());
            }
            self.next_heartbeat_ms = now.mono_ms + self.config.heartbeat_ms;
            // Every other way a subscription stalls pumps it when it ends
            // (credit, a fetch read, relief from congestion, new messages):
            // only failed reads wait for this tick.
            for k in self.subs.take_retries() {
                self.pump(&k);
            }
            let mut ids: Vec<u32> = self.streams.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                let options = self.streams[&id].spec.options.clone();
                self.out.push(StreamAction::Retain {
                    stream: id,
                    options,
                });
            }
        }
        if self.durables_dirty {
            self.durables_dirty = false;
            let all = self
                .streams
                .iter()
                .filter(|(_, s)| !s.durables.is_empty())
                .map(|(id, s)| (*id, s.durables.clone()))
                .collect();
            self.out.push(StreamAction::SaveDurables(all));
        }
        debug_assert!(self.next_heartbeat_ms > now.mono_ms);
        debug_assert!(self.subs.len() <= self.config.subs_max);
        std::mem::take(&mut self.out)
    }

    /// When [`StreamCore::tick`] is next due.
    pub fn next_deadline_ms(&self) -> u64 {
        self.next_heartbeat_ms
    }
}

fn remember_last(s: &mut Stream, subject: Bytes, seq: u64) {
    if let Some(last) = s.last_values.get_mut(&subject) {
        *last = seq;
    } else if s.last_values.len() < s.spec.options.last_values_max as usize {
        // A copy: the subject is a slice of a whole message (a received
        // frame, or a record read back at start), which it would keep alive.
        s.last_values.insert(Bytes::copy_from_slice(&subject), seq);
    }
}
