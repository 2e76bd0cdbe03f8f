//! The queue core's storage half: the journal (a [`zmesh_log::Log`]), group
//! commit, the catalog file, and replay at start. Carries out the core's
//! actions; the socket stays with the broker's driver.
//!
//! ```text
//! data_dir/
//!   queues.json      the catalog: declared queues (written, fsynced, renamed)
//!   journal/         the storage log: PUBLISH / SETTLE / REQUEUE / MOVE records
//! ```
//!
//! The journal stays near the size of the live messages: segments wholly
//! below the oldest live message are deleted, and once the journal is more
//! than half dead records, each batch also moves a bounded number of live
//! messages out of the oldest segment (`core/compact.rs`), so that one old
//! message cannot keep everything written after it.

use std::collections::VecDeque;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zmesh::clock::{Clock, Now, SystemClock};
use zmesh_log::{Durability, DurableWriter, Log, LogConfig, Outcome, ReadCursor, RecoveryReport};

use super::core::{QueueAction, QueueCore, QueueCoreConfig};
use super::options::Catalog;

/// Where and how the queues are stored.
#[derive(Clone, Debug)]
pub struct QueueStoreConfig {
    /// Directory for the catalog and the journal.
    pub data_dir: PathBuf,
    /// Journal settings.
    pub log: LogConfig,
    /// Queue core settings.
    pub core: QueueCoreConfig,
    /// Group commit: longest a record waits for its fsync to start.
    pub group_commit_ms: u64,
    /// Group commit: unsynced bytes that start an fsync at once.
    pub group_commit_bytes: u64,
    /// Where the queues read the time (the system's, or a test's).
    pub clock: Arc<dyn Clock>,
}

impl Default for QueueStoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("zmesh-data"),
            log: LogConfig::default(),
            core: QueueCoreConfig::default(),
            group_commit_ms: 0,
            group_commit_bytes: 1 << 20,
            clock: SystemClock::shared(),
        }
    }
}

/// What start-up found.
#[derive(Clone, Debug)]
pub struct OpenReport {
    /// The journal's recovery.
    pub recovery: RecoveryReport,
    /// Records replayed.
    pub replayed: u64,
    /// Messages held after replay.
    pub messages: u64,
    /// Time taken.
    pub elapsed: Duration,
}

use super::reads::{BodyReads, ReadDone};
pub use replicated::{Decision, Replicated, ReplicatedDecision, ReplicatedPublish};

mod compaction;
mod replicated;
pub use crate::storage::{Sends, StoreError};

/// Something the disk finished for the store (see [`QueueStore::disk_done`]).
pub struct DiskDone(Done);

enum Done {
    /// A group commit's answer: the sync tag it names, and its result.
    Synced((u64, std::io::Result<u64>)),
    Read(ReadDone),
    Saved(SaveDone),
}
use crate::storage::load_json;
use crate::storage::saves::{SaveDone, Saves};

/// The queue core with its storage.
pub struct QueueStore {
    core: QueueCore,
    /// The journal (log [`JOURNAL`]), and the publishes waiting on it by ticket.
    writer: DurableWriter<u64>,
    durable_rx: tokio::sync::mpsc::UnboundedReceiver<(u64, std::io::Result<u64>)>,
    catalog_path: PathBuf,
    /// The journal's segment size, for the compaction threshold.
    segment_bytes_max: u64,
    /// The journal's largest record: moves that would not fit are skipped.
    record_bytes_max: u64,
    /// Move failures already answered with a pause.
    compact_failures_seen: u64,
    /// The current pause after a failure (zero: none yet).
    compact_backoff: Duration,
    /// No compaction before this.
    compact_resume_mono_ms: Option<u64>,
    /// Shutting down: no compaction (it would only delay the end).
    draining: bool,
    /// In a cluster: publishes and decisions waiting to be handed to their
    /// shard groups (`None`: a single broker, whose journal stores them).
    replicated: Option<Vec<Replicated>>,
    /// Where the last body read back from the journal for a move was.
    body_cursor: ReadCursor,
    /// Deliveries whose bodies are read back off the loop.
    reads: BodyReads,
    read_rx: tokio::sync::mpsc::UnboundedReceiver<ReadDone>,
    /// The catalog, saved off the loop.
    saves: Saves,
    save_rx: tokio::sync::mpsc::UnboundedReceiver<SaveDone>,
    clock: Arc<dyn Clock>,
}

/// The journal's id in the writer: the store has one log.
const JOURNAL: u64 = 0;

impl QueueStore {
    /// Open the data directory, recover the journal and replay it.
    pub fn open(config: QueueStoreConfig) -> Result<(QueueStore, OpenReport), StoreError> {
        let started = Instant::now();
        fs::create_dir_all(&config.data_dir).map_err(|e| StoreError::Catalog {
            path: config.data_dir.clone(),
            reason: e.to_string(),
        })?;
        let catalog_path = config.data_dir.join("queues.json");
        let catalog: Catalog = load_json(&catalog_path)?;
        let (log, recovery) = Log::open(config.data_dir.join("journal"), config.log.clone())?;
        let mut core = QueueCore::new(config.core.clone(), catalog);
        let now = config.clock.now();
        let mut from = log.first_offset();
        let mut replayed = 0u64;
        loop {
            let batch = log.read(from, 4096, 8 << 20)?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            for r in &batch {
                core.replay(now, r.offset, &r.payload);
            }
            replayed += batch.len() as u64;
        }
        core.replay_done();
        let (tx, durable_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writer = DurableWriter::new(
            config.group_commit_ms,
            config.group_commit_bytes,
            move |sync_tag, r| {
                let _ = tx.send((sync_tag, r));
            },
        );
        writer.add_log(JOURNAL, log);
        let (read_tx, read_rx) = tokio::sync::mpsc::unbounded_channel();
        let (save_tx, save_rx) = tokio::sync::mpsc::unbounded_channel();
        let report = OpenReport {
            recovery,
            replayed,
            messages: core.message_count(),
            elapsed: started.elapsed(),
        };
        let store = QueueStore {
            core,
            writer,
            durable_rx,
            catalog_path,
            segment_bytes_max: config.log.segment_bytes_max,
            record_bytes_max: u64::from(config.log.record_bytes_max),
            compact_failures_seen: 0,
            compact_backoff: Duration::ZERO,
            compact_resume_mono_ms: None,
            draining: false,
            replicated: None,
            body_cursor: ReadCursor::default(),
            reads: BodyReads::new(read_tx),
            read_rx,
            saves: Saves::new(save_tx),
            save_rx,
            clock: config.clock.clone(),
        };
        Ok((store, report))
    }

    /// The time now, from the store's clock.
    fn now(&self) -> Now {
        self.clock.now()
    }

    /// The protocol core (for stats).
    pub fn core(&self) -> &QueueCore {
        &self.core
    }

    /// Shutting down: refuse new publishes.
    pub fn begin_drain(&mut self) {
        self.core.begin_drain();
        self.draining = true;
    }

    /// Nothing waits to be written, synced or saved: every accepted publish
    /// is answered (what a drain waits for; deliveries still being read
    /// are not: their messages stay unacked and come back after a restart).
    pub fn settled(&self) -> bool {
        self.writer.settled()
            && self.saves.idle()
            && self
                .replicated
                .as_ref()
                .is_none_or(|r| r.is_empty() && self.core.tickets_waiting() == 0)
    }

    /// Settled, and no body being read: every delivery decided is sent.
    pub fn idle(&self) -> bool {
        self.settled() && self.reads.idle()
    }

    /// Group-commit times (sync asked to durable) since the last call.
    pub fn take_sync_latencies(&mut self) -> Vec<Duration> {
        self.writer.take_sync_latencies()
    }

    /// The journal (for stats).
    pub fn log(&self) -> &Log {
        self.writer
            .log(JOURNAL)
            .expect("the journal is added at open")
    }

    fn log_mut(&mut self) -> &mut Log {
        self.writer
            .log_mut(JOURNAL)
            .expect("the journal is added at open")
    }

    /// Purge a queue on an operator's request; returns how many went.
    pub fn admin_purge(&mut self, queue: &str) -> (Result<u64, String>, Sends) {
        let (result, sends) =
            self.run_as(b"\xffadmin", b"PURGE", vec![Bytes::from(queue.to_owned())]);
        let purged = result.and_then(|body| {
            body.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["purged"].as_u64())
                .ok_or_else(|| "malformed purge reply".to_owned())
        });
        (purged, sends)
    }

    /// Apply a change the cluster's catalog agreed on: declare `queue` with
    /// `options` (JSON, as a DECLARE carries them), or delete it when
    /// `options` is `None`. Returns the core's refusal, if it refused (a
    /// local limit, or a queue here from before with other options).
    pub fn apply_agreed(
        &mut self,
        queue: &str,
        options: Option<&[u8]>,
    ) -> (Result<(), String>, Sends) {
        let name = Bytes::from(queue.to_owned());
        let (result, sends) = match options {
            Some(o) => self.run_as(
                b"\xffcluster",
                b"DECLARE",
                vec![name, Bytes::copy_from_slice(o)],
            ),
            None => self.run_as(b"\xffcluster", b"DELETE", vec![name]),
        };
        (result.map(|_| ()), sends)
    }

    /// Runs `command` through the protocol path as `me`, a peer no socket
    /// can have (identities from the engine are never 0xff-prefixed), and
    /// returns its answer: the OK body, or the error's reason.
    fn run_as(
        &mut self,
        me: &'static [u8],
        command: &'static [u8],
        args: Vec<Bytes>,
    ) -> (Result<Option<Bytes>, String>, Sends) {
        let me = Bytes::from_static(me);
        let frames: Vec<Bytes> = [
            Bytes::new(),
            Bytes::from_static(super::proto::PROTOCOL),
            Bytes::from_static(command),
            Bytes::from_static(b"op"),
        ]
        .into_iter()
        .chain(args)
        .collect();
        // The answer to an operator depends on no catalog save: not held.
        let (mine, sends): (Sends, Sends) = self
            .handle_now(&me, &frames)
            .into_iter()
            .partition(|(to, _)| *to == me);
        let result = match mine.first() {
            Some((_, f)) if f.get(2).is_some_and(|c| c == "OK") => Ok(f.get(4).cloned()),
            Some((_, f)) => {
                Err(String::from_utf8_lossy(f.get(5).map_or(&b""[..], |b| &b[..])).into_owned())
            }
            None => Err("no reply".to_owned()),
        };
        (result, self.saves.pass(sends))
    }

    /// Handle one ZMQU01 message; returns what to send now.
    pub fn handle(&mut self, from: &Bytes, frames: &[Bytes]) -> Sends {
        let sends = self.handle_now(from, frames);
        self.saves.pass(sends)
    }

    fn handle_now(&mut self, from: &Bytes, frames: &[Bytes]) -> Sends {
        let actions = self.core.handle(self.now(), from, frames);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        sends
    }

    /// A peer's connection closed (see [`QueueCore::connection_closed`]).
    pub fn connection_closed(&mut self, peer: &Bytes) -> Sends {
        let actions = self.core.connection_closed(self.now(), peer);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// A peer reads too slowly, or has caught up (see [`QueueCore::set_congested`]).
    pub fn set_congested(&mut self, peer: &Bytes, congested: bool) -> Sends {
        let actions = self.core.set_congested(self.now(), peer, congested);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        self.saves.pass(sends)
    }

    /// Timers and log cleanup.
    pub fn tick(&mut self) -> Sends {
        let actions = self.core.tick(self.now());
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        if self.replicated.is_some() {
            // The journal holds no messages: the cluster's logs do.
            return self.saves.pass(sends);
        }
        // Segments waited on by a write or a read in flight stay.
        let pending = self
            .writer
            .oldest_waiting(JOURNAL)
            .into_iter()
            .chain(self.reads.oldest_offset());
        let keep = self.core.keep_from(pending, self.log().written_offset());
        match self.log_mut().remove_before(keep) {
            Ok(0) => {}
            Ok(n) => {
                // They may hold a removed segment open (and its disk space).
                self.body_cursor = ReadCursor::default();
                self.reads.segments_removed();
                tracing::debug!(segments = n, "settled journal segments removed");
            }
            Err(e) => tracing::warn!(error = %e, "removing settled journal segments failed"),
        }
        self.saves.pass(sends)
    }

    /// How long until [`QueueStore::tick`] is next due, on the store's clock
    /// (at most a second, so a clock that is stepped is looked at again soon).
    pub fn next_wait(&self) -> Duration {
        let wait = self
            .core
            .next_deadline_ms()
            .saturating_sub(self.now().mono_ms);
        Duration::from_millis(wait.min(1000))
    }

    /// End of a batch of messages: write the journal out, confirm what needs
    /// no fsync, and ask for a group commit for the rest.
    pub fn end_batch(&mut self) -> Sends {
        // The batch's own records first, on their own: a failed write of
        // compaction's moves must not take them with it.
        let mut sends = self.write_out();
        if self.compact(&mut sends) {
            sends.extend(self.write_out());
        }
        self.saves.pass(sends)
    }

    /// Write the journal out and carry out what the outcomes lead to, until
    /// they lead to nothing more that is decided now.
    fn write_out(&mut self) -> Sends {
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
        sends
    }

    /// What the core does with the outcomes of publishes.
    fn answer(&mut self, outcomes: Vec<Outcome<u64>>) -> Vec<QueueAction> {
        if outcomes.is_empty() {
            // Most appends decide nothing at once; reading the clock would cost more.
            return Vec::new();
        }
        let now = self.now();
        let mut actions = Vec::new();
        for (ticket, result) in outcomes {
            actions.extend(self.core.persisted(now, ticket, result));
        }
        actions
    }

    /// Wait for the disk to finish something: a group commit, or a body
    /// read back for a delivery. Hand it to [`QueueStore::on_disk_done`].
    pub async fn disk_done(&mut self) -> DiskDone {
        tokio::select! {
            Some(r) = self.durable_rx.recv() => DiskDone(Done::Synced(r)),
            Some(r) = self.read_rx.recv() => DiskDone(Done::Read(r)),
            Some(d) = self.save_rx.recv() => DiskDone(Done::Saved(d)),
            else => std::future::pending().await,
        }
    }

    /// What the disk finished leads to: confirms, deliveries.
    pub fn on_disk_done(&mut self, done: DiskDone) -> Sends {
        let sends = match done.0 {
            Done::Synced(r) => self.on_durable(r),
            Done::Read(r) => self.on_body_read(r),
            Done::Saved(d) => {
                self.saves.done(d);
                Vec::new()
            }
        };
        self.saves.pass(sends)
    }

    /// A group commit finished (`Ok(offset)`: everything below is durable;
    /// an error fails every publish waiting for one, and the journal takes
    /// no more writes until a restart).
    fn on_durable(&mut self, (sync_tag, result): (u64, std::io::Result<u64>)) -> Sends {
        if let Err(e) = &result {
            tracing::error!(error = %e, "journal fsync failed");
        }
        self.writer
            .on_durable(sync_tag, result, self.clock.instant());
        let outcomes = self.writer.take_outcomes();
        let actions = self.answer(outcomes);
        let mut sends = Vec::new();
        self.carry_out(actions, &mut sends);
        sends
    }

    /// A body came back (or failed to): its DELIVER goes out, and what
    /// waited behind it for the same consumer.
    fn on_body_read(&mut self, done: ReadDone) -> Sends {
        let core = &self.core;
        let outcome = self
            .reads
            .done(done, |to, deliver| core.is_current_delivery(to, deliver));
        if let Some((to, offset, reason)) = outcome.failed {
            self.body_read_failed(&to, offset, &reason);
        }
        outcome.sends
    }

    /// A DELIVER was not sent for want of its body: back in line, tried again later.
    fn body_read_failed(&mut self, to: &Bytes, offset: u64, reason: &str) {
        tracing::error!(
            offset,
            reason,
            "reading a message body back from the journal failed"
        );
        self.core.counters.storage_errors += 1;
        self.core.delivery_failed(to, offset);
    }

    fn carry_out(&mut self, actions: Vec<QueueAction>, sends: &mut Sends) {
        let mut todo: VecDeque<QueueAction> = actions.into();
        while let Some(action) = todo.pop_front() {
            match action {
                QueueAction::Send {
                    to,
                    frames,
                    body_at,
                } => {
                    let log = self
                        .writer
                        .log(JOURNAL)
                        .expect("the journal is added at open");
                    if let Err(reason) = self.reads.send(log, to.clone(), frames, body_at, sends) {
                        let offset = body_at.expect("only a body can fail");
                        self.body_read_failed(&to, offset, &reason);
                    }
                }
                QueueAction::SaveCatalog(c) => {
                    // Off the loop; what is sent from now on waits for it.
                    self.saves.save(self.catalog_path.clone(), &c, true);
                }
                QueueAction::Append {
                    record,
                    body_at,
                    durability,
                    ticket,
                } => match self.with_stored_body(record, body_at) {
                    Ok(record) => todo.extend(self.append(record, durability, ticket)),
                    Err(reason) => {
                        tracing::error!(
                            reason,
                            "reading a message body back from the journal failed"
                        );
                        if let Some(ticket) = ticket {
                            todo.extend(self.core.persisted(self.now(), ticket, Err(reason)));
                        }
                    }
                },
            }
        }
    }

    /// Append one record; returns what the core says to the answers decided
    /// at once (this record's under `always`, or records a failed write lost).
    fn append(
        &mut self,
        record: Bytes,
        durability: Durability,
        ticket: Option<u64>,
    ) -> Vec<QueueAction> {
        if self.replicated.is_some() {
            return self.hand_to_cluster(record, ticket);
        }
        if let Err(e) = self
            .writer
            .append(JOURNAL, &record, ticket.map(|t| (t, durability)))
        {
            tracing::warn!(error = %e, "journal append failed");
        }
        let outcomes = self.writer.take_outcomes();
        self.answer(outcomes)
    }

    /// The body of the message stored by the journal record at `offset`.
    fn stored_body(&mut self, offset: u64) -> Result<Bytes, String> {
        let log = self
            .writer
            .log(JOURNAL)
            .expect("the journal is added at open");
        super::journal::body_read_back(offset, log.read_at(&mut self.body_cursor, offset))
    }

    /// `record`, completed with the body stored at `body_at` if it has one.
    fn with_stored_body(&mut self, record: Bytes, body_at: Option<u64>) -> Result<Bytes, String> {
        let Some(at) = body_at else {
            return Ok(record);
        };
        let body = self.stored_body(at)?;
        let mut full = Vec::with_capacity(record.len() + body.len());
        full.extend_from_slice(&record);
        full.extend_from_slice(&body);
        Ok(full.into())
    }
}
