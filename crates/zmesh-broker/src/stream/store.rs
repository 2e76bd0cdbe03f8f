//! The stream core's storage half: one log per stream, written through the
//! one durable writer (shared group commit), the catalog and durable
//! positions, replay at start.
//!
//! ```text
//! data_dir/streams/
//!   streams.json        the catalog (written, fsynced, renamed)
//!   durables.json       durable subscriptions' positions (same)
//!   <id>/               one storage log per stream
//! ```
//!
//! Reads (subscribers' fetches, locating a start time, snapshots) run on the
//! store's read thread through views of the logs, never on the broker's
//! loop; their answers come back through [`StreamStore::disk_done`].
//! Retention keeps the segments from the lowest offset a read in flight
//! reads from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use zmesh::clock::{Clock, SystemClock};
use zmesh_log::{
    DurableWriter, Log, LogConfig, LogError, LogView, Outcome, ReadThread, Record, Retention,
};

use super::core::{StreamAction, StreamCore, StreamCoreConfig, SubKey};
use super::options::StreamCatalog;
use crate::storage::saves::{SaveDone, Saves};
use crate::storage::{Sends, StoreError, load_json as load};

/// Where and how streams are stored.
#[derive(Clone, Debug)]
pub struct StreamStoreConfig {
    /// Directory (a `streams/` folder is made in it).
    pub data_dir: PathBuf,
    /// Settings of each stream's log.
    pub log: LogConfig,
    /// Core settings.
    pub core: StreamCoreConfig,
    /// Group commit: longest a record waits for its fsync to start.
    pub group_commit_ms: u64,
    /// Group commit: unsynced bytes that start an fsync at once.
    pub group_commit_bytes: u64,
    /// Where the streams read the time (the system's, or a test's).
    pub clock: Arc<dyn Clock>,
}

impl Default for StreamStoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("zmesh-data"),
            log: LogConfig::default(),
            core: StreamCoreConfig::default(),
            group_commit_ms: 0,
            group_commit_bytes: 1 << 20,
            clock: SystemClock::shared(),
        }
    }
}

/// The stream core with its storage.
pub struct StreamStore {
    core: StreamCore,
    dir: PathBuf,
    log_config: LogConfig,
    /// One log per stream (by id), and the publishes waiting on them by ticket.
    writer: DurableWriter<u64>,
    durable_rx: tokio::sync::mpsc::UnboundedReceiver<(u64, std::io::Result<u64>)>,
    /// Started at the first read.
    reader: Option<ReadThread>,
    /// A read's answer, with the offset it was read from.
    read_tx: tokio::sync::mpsc::UnboundedSender<(u64, StreamRead)>,
    read_rx: tokio::sync::mpsc::UnboundedReceiver<(u64, StreamRead)>,
    /// Reads in flight per stream (a key only while some are), counted by
    /// the offset each reads from: retention keeps the segments from the
    /// lowest on. Bounded by one fetch or locate per subscription and the
    /// snapshots pending.
    reading: HashMap<u32, BTreeMap<u64, u32>>,
    /// The catalog and durable positions, saved off the loop.
    saves: Saves,
    save_rx: tokio::sync::mpsc::UnboundedReceiver<SaveDone>,
    clock: Arc<dyn Clock>,
}

/// Something the disk finished for the store (see [`StreamStore::disk_done`]).
pub struct DiskDone(Done);

enum Done {
    Synced(u64, std::io::Result<u64>),
    Read(u64, StreamRead),
    Saved(SaveDone),
}

/// A read done on the read thread, with what it answers.
enum StreamRead {
    Fetched {
        stream: u32,
        sub: SubKey,
        serial: u64,
        end: u64,
        records: Result<Vec<Record>, LogError>,
    },
    Located {
        stream: u32,
        sub: SubKey,
        serial: u64,
        seq: u64,
    },
    Snapshot {
        stream: u32,
        snapshot: u64,
        records: Vec<(u64, Bytes)>,
    },
}

impl StreamRead {
    fn stream(&self) -> u32 {
        match self {
            StreamRead::Fetched { stream, .. }
            | StreamRead::Located { stream, .. }
            | StreamRead::Snapshot { stream, .. } => *stream,
        }
    }
}

impl StreamStore {
    /// Open every stream's log and replay it.
    pub fn open(config: StreamStoreConfig) -> Result<(StreamStore, Duration), StoreError> {
        let started = Instant::now();
        let dir = config.data_dir.join("streams");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Catalog {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let catalog: StreamCatalog = load(&dir.join("streams.json"))?;
        let durables: BTreeMap<u32, BTreeMap<String, u64>> = load(&dir.join("durables.json"))?;
        let mut core = StreamCore::new(config.core.clone(), catalog.clone());
        let (tx, durable_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writer = DurableWriter::new(
            config.group_commit_ms,
            config.group_commit_bytes,
            move |tag, r| {
                let _ = tx.send((tag, r));
            },
        );
        for spec in &catalog.streams {
            let (log, report) = Log::open(dir.join(spec.id.to_string()), config.log.clone())?;
            for d in &report.damaged {
                tracing::warn!(stream = %spec.name, bytes = ?d.bytes, offsets_lost = ?d.offsets_lost, "damaged stream records skipped");
            }
            core.set_bounds(spec.id, log.first_offset(), log.written_offset());
            let mut from = log.first_offset();
            loop {
                let batch = log.read(from, 4096, 8 << 20)?;
                let Some(last) = batch.last() else { break };
                from = last.offset + 1;
                for r in &batch {
                    core.replay(spec.id, r.offset, &r.payload);
                }
            }
            writer.add_log(spec.id.into(), log);
        }
        core.load_durables(durables);
        let (read_tx, read_rx) = tokio::sync::mpsc::unbounded_channel();
        let (save_tx, save_rx) = tokio::sync::mpsc::unbounded_channel();
        let store = StreamStore {
            core,
            dir,
            log_config: config.log,
            writer,
            durable_rx,
            reader: None,
            read_tx,
            read_rx,
            reading: HashMap::new(),
            saves: Saves::new(save_tx),
            save_rx,
            clock: config.clock.clone(),
        };
        Ok((store, started.elapsed()))
    }

    /// Shutting down: refuse new publishes.
    pub fn begin_drain(&mut self) {
        self.core.begin_drain();
    }

    /// Nothing waits to be written, synced or saved: every accepted publish
    /// is answered (what a drain waits for; reads in flight are not: a
    /// subscriber reading a backlog would keep a drain waiting to its end).
    pub fn settled(&self) -> bool {
        self.writer.settled() && self.saves.idle()
    }

    /// Settled, and nothing being read.
    pub fn idle(&self) -> bool {
        self.settled() && self.reading.is_empty()
    }

    /// The protocol core (for stats).
    pub fn core(&self) -> &StreamCore {
        &self.core
    }

    /// Handle one ZMST01 message; returns what to send now.
    pub fn handle(&mut self, from: &Bytes, frames: &[Bytes]) -> Sends {
        let actions = self.core.handle(self.clock.now(), from, frames);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// A peer's connection closed (see [`StreamCore::connection_closed`]).
    pub fn connection_closed(&mut self, peer: &Bytes) -> Sends {
        let actions = self.core.connection_closed(peer);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// A peer reads too slowly, or has caught up (see [`StreamCore::set_congested`]).
    pub fn set_congested(&mut self, peer: &Bytes, congested: bool) -> Sends {
        let actions = self.core.set_congested(peer, congested);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// Timers, retention, durable positions.
    pub fn tick(&mut self) -> Sends {
        let actions = self.core.tick(self.clock.now());
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// How long until [`StreamStore::tick`] is next due, on the store's clock
    /// (at most a second, so a clock that is stepped is looked at again soon).
    pub fn next_wait(&self) -> Duration {
        let wait = self
            .core
            .next_deadline_ms()
            .saturating_sub(self.clock.now().mono_ms);
        Duration::from_millis(wait.min(1000))
    }

    /// End of a batch: write the logs, acknowledge what needs no fsync, ask for group commits.
    pub fn end_batch(&mut self) -> Sends {
        let mut sends = Vec::new();
        loop {
            self.writer.flush(self.clock.instant());
            let outcomes = self.writer.take_outcomes();
            if outcomes.is_empty() {
                break;
            }
            let actions = self.answer(outcomes);
            self.carry_out(actions, &mut sends);
        }
        let a = self.core.pump_dirty();
        self.carry_out(a, &mut sends);
        self.saves.pass(sends)
    }

    /// What the core does with the outcomes of publishes.
    fn answer(&mut self, outcomes: Vec<Outcome<u64>>) -> Vec<StreamAction> {
        if outcomes.is_empty() {
            // Most appends decide nothing at once; reading the clock would cost more.
            return Vec::new();
        }
        let mut actions = Vec::new();
        for (ticket, result) in outcomes {
            actions.extend(self.core.persisted(ticket, result));
        }
        actions
    }

    /// Wait for the disk to finish something: a group commit, or a read.
    /// Hand it to [`StreamStore::on_disk_done`].
    pub async fn disk_done(&mut self) -> DiskDone {
        tokio::select! {
            Some((tag, r)) = self.durable_rx.recv() => DiskDone(Done::Synced(tag, r)),
            Some((from, r)) = self.read_rx.recv() => DiskDone(Done::Read(from, r)),
            Some(d) = self.save_rx.recv() => DiskDone(Done::Saved(d)),
            else => std::future::pending().await,
        }
    }

    /// What the disk finished leads to: acknowledgements, messages, snapshots.
    pub fn on_disk_done(&mut self, done: DiskDone) -> Sends {
        let mut sends = Vec::new();
        let actions = match done.0 {
            Done::Synced(tag, result) => self.on_durable(tag, result),
            Done::Read(from, read) => self.on_read(from, read),
            Done::Saved(d) => {
                self.saves.done(d);
                Vec::new()
            }
        };
        self.carry_out(actions, &mut sends);
        let a = self.core.pump_dirty();
        self.carry_out(a, &mut sends);
        self.saves.pass(sends)
    }

    /// A group commit finished for the stream its sync tag names (an error
    /// fails every publish waiting for one, and the stream takes no more
    /// writes until a restart).
    fn on_durable(&mut self, sync_tag: u64, result: std::io::Result<u64>) -> Vec<StreamAction> {
        if let Err(e) = &result {
            let stream = self.writer.log_of_sync_tag(sync_tag);
            tracing::error!(?stream, error = %e, "stream fsync failed");
        }
        self.writer
            .on_durable(sync_tag, result, self.clock.instant());
        let outcomes = self.writer.take_outcomes();
        self.answer(outcomes)
    }

    /// A read came back: hand it to the core.
    fn on_read(&mut self, from: u64, read: StreamRead) -> Vec<StreamAction> {
        let stream = read.stream();
        let reads = self
            .reading
            .get_mut(&stream)
            .expect("a read in flight is counted");
        match reads.get_mut(&from) {
            Some(1) => {
                reads.remove(&from);
            }
            Some(n) => *n -= 1,
            None => debug_assert!(false, "a read in flight is counted"),
        }
        if reads.is_empty() {
            self.reading.remove(&stream);
        }
        match read {
            StreamRead::Fetched {
                sub,
                serial,
                end,
                records,
                ..
            } => match records {
                Ok(records) => {
                    let records = records
                        .into_iter()
                        .filter(|r| r.offset < end)
                        .map(|r| (r.offset, r.payload))
                        .collect();
                    self.core.fetched(&sub, serial, records)
                }
                Err(e) => {
                    // Not an empty read: that would skip messages. Try again at the next tick.
                    tracing::warn!(error = %e, "stream read failed");
                    self.core.fetch_failed(&sub, serial);
                    Vec::new()
                }
            },
            StreamRead::Located {
                sub, serial, seq, ..
            } => self.core.located(&sub, serial, seq),
            StreamRead::Snapshot {
                snapshot, records, ..
            } => self.core.snapshot_read(snapshot, records),
        }
    }

    /// Run `read` on the read thread; its answer comes back through [`StreamStore::disk_done`].
    /// `from`: the lowest offset it reads, kept until it is done.
    fn read_off_loop(
        &mut self,
        stream: u32,
        from: u64,
        read: impl FnOnce(&mut zmesh_log::ReadCursor) -> StreamRead + Send + 'static,
    ) {
        *self
            .reading
            .entry(stream)
            .or_default()
            .entry(from)
            .or_default() += 1;
        let tx = self.read_tx.clone();
        self.reader
            .get_or_insert_with(|| ReadThread::spawn("zmesh-stream-read"))
            .run(move |cursor| {
                let _ = tx.send((from, read(cursor)));
            });
    }

    fn carry_out(&mut self, actions: Vec<StreamAction>, sends: &mut Sends) {
        let mut todo: VecDeque<StreamAction> = actions.into();
        while let Some(action) = todo.pop_front() {
            match action {
                StreamAction::Send { to, frames } => sends.push((to, frames)),
                StreamAction::Append {
                    stream,
                    record,
                    durability,
                    ticket,
                } => {
                    if self.writer.log(stream.into()).is_none() {
                        todo.extend(self.core.persisted(ticket, Err("no storage".into())));
                        continue;
                    }
                    if let Err(e) =
                        self.writer
                            .append(stream.into(), &record, Some((ticket, durability)))
                    {
                        tracing::warn!(stream, error = %e, "stream append failed");
                    }
                    let outcomes = self.writer.take_outcomes();
                    todo.extend(self.answer(outcomes));
                }
                StreamAction::Fetch {
                    stream,
                    sub,
                    serial,
                    from,
                    end,
                    max,
                } => {
                    let Some(log) = self.writer.log(stream.into()) else {
                        todo.extend(self.core.fetched(&sub, serial, Vec::new()));
                        continue;
                    };
                    let n = max.min((end - from) as usize);
                    let view = log.view(from, n as u64);
                    self.read_off_loop(stream, from, move |_| StreamRead::Fetched {
                        stream,
                        sub,
                        serial,
                        end,
                        records: view.read(from, n, 1 << 20),
                    });
                }
                StreamAction::Locate {
                    stream,
                    sub,
                    serial,
                    time_ms,
                } => {
                    let Some(log) = self.writer.log(stream.into()) else {
                        todo.extend(self.core.located(&sub, serial, 0));
                        continue;
                    };
                    let first = log.first_offset();
                    let view = log.view(first, u64::MAX);
                    self.read_off_loop(stream, first, move |_| StreamRead::Located {
                        stream,
                        sub,
                        serial,
                        seq: locate(&view, time_ms),
                    });
                }
                StreamAction::ReadSeqs {
                    stream,
                    seqs,
                    snapshot,
                } => {
                    let log = self.writer.log(stream.into());
                    let (Some(log), Some(&first)) = (log, seqs.first()) else {
                        todo.extend(self.core.snapshot_read(snapshot, Vec::new()));
                        continue;
                    };
                    let view = log.view(first, u64::MAX);
                    self.read_off_loop(stream, first, move |cursor| {
                        // Ascending: the cursor goes on from one to the next.
                        let records = seqs
                            .into_iter()
                            .filter_map(|seq| match view.read_at(cursor, seq) {
                                Ok(Some(r)) => Some((seq, r.payload)),
                                _ => None,
                            })
                            .collect();
                        StreamRead::Snapshot {
                            stream,
                            snapshot,
                            records,
                        }
                    });
                }
                StreamAction::Retain { stream, options } => {
                    // No segment goes under a read in flight.
                    let keep_from = self
                        .reading
                        .get(&stream)
                        .and_then(|reads| reads.keys().next().copied());
                    if let Some(log) = self.writer.log_mut(stream.into()) {
                        let retention = Retention {
                            bytes_max: options.max_bytes,
                            records_max: options.max_msgs,
                            age_max: options.max_age_ms.map(Duration::from_millis),
                            keep_from,
                        };
                        // Ages are of stored stamps: the wall clock's business.
                        let wall = UNIX_EPOCH + Duration::from_millis(self.clock.now().wall_ms);
                        match log.retain(&retention, wall) {
                            Ok(0) => {}
                            Ok(_) => {
                                self.core.retained(stream, log.first_offset());
                                if let Some(reader) = &self.reader {
                                    reader.forget_place();
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "stream retention failed"),
                        }
                    }
                }
                StreamAction::CreateStream(spec) => {
                    match Log::open(self.dir.join(spec.id.to_string()), self.log_config.clone()) {
                        Ok((log, _)) => {
                            self.writer.add_log(spec.id.into(), log);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, stream = %spec.name, "cannot open stream storage")
                        }
                    }
                }
                StreamAction::DeleteStream(id) => {
                    drop(self.writer.remove_log(id.into(), "stream deleted"));
                    let outcomes = self.writer.take_outcomes();
                    todo.extend(self.answer(outcomes));
                    // Off the loop, once the catalog without it is saved.
                    self.saves
                        .remove_dir_when_saved(self.dir.join(id.to_string()));
                }
                StreamAction::SaveCatalog(c) => {
                    // Off the loop; what is sent from now on waits for it.
                    self.saves.save(self.dir.join("streams.json"), &c, true);
                }
                StreamAction::SaveDurables(d) => {
                    // A position saved late means a redelivery after a crash: nothing waits.
                    self.saves.save(self.dir.join("durables.json"), &d, false);
                }
            }
        }
    }
}

/// Binary search for the first record stored at or after `time_ms` (times
/// never decrease within a stream).
fn locate(log: &LogView, time_ms: u64) -> u64 {
    let time_at = |seq: u64| -> Option<u64> {
        let r = log.read(seq, 1, 0).ok()?.pop()?;
        super::record::StreamRecord::decode(&r.payload).map(|m| m.time_ms)
    };
    let (mut lo, mut hi) = (log.first_offset(), log.written_offset());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match time_at(mid) {
            Some(t) if t < time_ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    lo
}
