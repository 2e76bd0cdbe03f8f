//! The one durable writer: logs, group commit, and who hears what became of
//! each record.
//!
//! Queues, streams (and a replicated log) append records someone waits on:
//! a publisher waits for its CONFIRM, a peer for its STORED. What "done"
//! means depends on the record's [`Durability`]: written (`os`), covered by a
//! group commit (`group`), or covered by a sync that starts as soon as its
//! batch is written, with no gathering delay (`always`). Every fsync runs on
//! the syncer thread, never on the caller's. [`DurableWriter`] owns the
//! records between append and that point, per log, and hands each waiter
//! exactly one outcome:
//!
//! ```text
//!  append ──► unflushed ──flush──► unsynced ──group commit──► Ok(offset)
//!                │  os: Ok(offset) ◄──┘  │
//!                └─ failed write ──► Err  └─ failed fsync ──► Err, log poisoned
//! ```
//!
//! - A failed write is cut back by the log; it fails exactly the records it
//!   lost (offsets at or past the log's written end, which the log reuses).
//! - A failed fsync, here or on the syncer thread, or a failed cut poisons
//!   the log: every record waiting for a sync fails and nothing written to it
//!   since is ever confirmed. A reopen (a restart) clears it.
//! - Outcomes queue up in the writer; the owner takes them with
//!   [`DurableWriter::take_outcomes`] after each call, in order.
//!
//! The writer does no waiting itself: the syncer thread reports group commits
//! through the callback given to [`DurableWriter::new`], and the owner hands
//! them back with [`DurableWriter::on_durable`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::{Durability, Log, LogError, Syncer};

/// What became of a record someone waited on: its offset once done, or why
/// it failed (for the publisher's refusal).
pub type Outcome<W> = (W, Result<u64, String>);

/// Hears group commit results on the syncer thread.
type OnDurable = Box<dyn FnMut(u64, std::io::Result<u64>) + Send + 'static>;

/// The group commit thread, once asked for.
enum LazySyncer {
    /// Not yet: what starts it (delay ms, bytes, the callback).
    NotStarted(Option<(u64, u64, OnDurable)>),
    Running(Syncer),
}

impl LazySyncer {
    fn get(&mut self) -> &Syncer {
        if let LazySyncer::NotStarted(settings) = self {
            let (delay_ms, bytes, on_durable) = settings.take().expect("started once");
            *self = LazySyncer::Running(Syncer::spawn(delay_ms, bytes, on_durable));
        }
        match self {
            LazySyncer::Running(syncer) => syncer,
            LazySyncer::NotStarted(_) => unreachable!("started above"),
        }
    }
}

/// Group commit latencies kept until taken; more are dropped.
const SYNC_LATENCIES_MAX: usize = 10_000;

/// One log and the records of it that someone waits on.
struct Tracked<W> {
    log: Log,
    /// Names this log's sync requests to the syncer. A cut
    /// ([`DurableWriter::truncate`]) gives the log a new one: a sync asked
    /// for before it covered offsets now given out again, so its answer
    /// must confirm nothing.
    sync_tag: u64,
    /// Appended, not yet written: (offset, waiter, durability), ascending.
    unflushed: Vec<(u64, W, Durability)>,
    /// Written, waiting for a group commit: (offset, waiter), ascending.
    unsynced: VecDeque<(u64, W)>,
    /// The log's bytes written when the last sync was asked for.
    requested_at_bytes: u64,
    /// An `always` record was appended since the last sync request: the
    /// next one skips the group commit delay.
    sync_at_once: bool,
    /// When the oldest unanswered sync request went out.
    sync_started: Option<Instant>,
}

/// Appends records to a set of logs, makes them durable as each record's
/// [`Durability`] asks, and reports every waiter's outcome exactly once.
/// `W` identifies a waiter (a ticket).
///
/// ```
/// # fn main() -> Result<(), zmesh_log::LogError> {
/// use std::time::Instant;
/// use zmesh_log::{DurableWriter, Durability, Log};
/// let dir = std::env::temp_dir().join(format!("zmesh-writer-doc-{}", std::process::id()));
/// let (tx, rx) = std::sync::mpsc::channel();
/// let mut writer = DurableWriter::new(0, 1 << 20, move |log, r| { let _ = tx.send((log, r)); });
/// writer.add_log(7, Log::open(&dir, Default::default())?.0);
/// let group = Durability::Group { max_delay_ms: 0, max_bytes: 1 << 20 };
/// writer.append(7, b"fast", Some(("a", Durability::Os)))?;
/// writer.append(7, b"safe", Some(("b", group)))?;
/// writer.flush(Instant::now());
/// assert_eq!(writer.take_outcomes(), vec![("a", Ok(0))]);
/// let (log, result) = rx.recv().unwrap();
/// writer.on_durable(log, result, Instant::now());
/// assert_eq!(writer.take_outcomes(), vec![("b", Ok(1))]);
/// # drop(writer); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct DurableWriter<W> {
    logs: BTreeMap<u64, Tracked<W>>,
    /// Which log each live sync tag names.
    sync_tags: BTreeMap<u64, u64>,
    /// Tags a cut retired, and their logs, until the log's live tag answers
    /// (the syncer answers in order): their `Ok` vouches for nothing, but
    /// their error still poisons the log (Linux reports a failed writeback
    /// to one fsync only, perhaps theirs).
    retired_sync_tags: BTreeMap<u64, u64>,
    next_sync_tag: u64,
    /// Logs appended to since the last flush: the only ones it has work in
    /// (repeats are dropped at the flush).
    dirty: Vec<u64>,
    /// Started at the first group commit asked for: a writer whose records
    /// need none (`os`, or synced by [`DurableWriter::sync`]) runs no thread.
    syncer: LazySyncer,
    outcomes: Vec<Outcome<W>>,
    sync_latencies: Vec<Duration>,
}

impl<W> DurableWriter<W> {
    /// A writer whose group commits wait up to `group_commit_ms` or
    /// `group_commit_bytes`; `on_durable` hears each commit's `(sync tag,
    /// result)` on the syncer thread, and the owner passes both to
    /// [`DurableWriter::on_durable`].
    pub fn new(
        group_commit_ms: u64,
        group_commit_bytes: u64,
        on_durable: impl FnMut(u64, std::io::Result<u64>) + Send + 'static,
    ) -> DurableWriter<W> {
        DurableWriter {
            logs: BTreeMap::new(),
            sync_tags: BTreeMap::new(),
            retired_sync_tags: BTreeMap::new(),
            next_sync_tag: 0,
            dirty: Vec::new(),
            syncer: LazySyncer::NotStarted(Some((
                group_commit_ms,
                group_commit_bytes,
                Box::new(on_durable),
            ))),
            outcomes: Vec::new(),
            sync_latencies: Vec::new(),
        }
    }

    /// Write to `log` under the id `id` from now on (replacing any log of that id).
    pub fn add_log(&mut self, id: u64, log: Log) {
        drop(self.remove_log(id, "log replaced"));
        let requested_at_bytes = log.bytes_written_total();
        let sync_tag = self.new_sync_tag(id);
        self.logs.insert(
            id,
            Tracked {
                log,
                sync_tag,
                unflushed: Vec::new(),
                unsynced: VecDeque::new(),
                requested_at_bytes,
                sync_at_once: false,
                sync_started: None,
            },
        );
    }

    /// Stop writing to log `id`: everything waiting on it fails with `reason`.
    pub fn remove_log(&mut self, id: u64, reason: &str) -> Option<Log> {
        let t = self.logs.remove(&id)?;
        self.sync_tags.remove(&t.sync_tag);
        self.retired_sync_tags.retain(|_, log| *log != id);
        self.outcomes.extend(
            t.unflushed
                .into_iter()
                .map(|(_, w, _)| (w, Err(reason.to_owned()))),
        );
        self.outcomes.extend(
            t.unsynced
                .into_iter()
                .map(|(_, w)| (w, Err(reason.to_owned()))),
        );
        Some(t.log)
    }

    /// Log `id`, for reading.
    pub fn log(&self, id: u64) -> Option<&Log> {
        self.logs.get(&id).map(|t| &t.log)
    }

    /// Log `id`, for removing old segments (appends go through the writer).
    pub fn log_mut(&mut self, id: u64) -> Option<&mut Log> {
        self.logs.get_mut(&id).map(|t| &mut t.log)
    }

    /// Nothing waits to be written or synced.
    pub fn settled(&self) -> bool {
        self.logs
            .values()
            .all(|t| t.unflushed.is_empty() && t.unsynced.is_empty())
    }

    /// The lowest offset of log `id` someone still waits on (written or not):
    /// segments from there on must stay.
    pub fn oldest_waiting(&self, id: u64) -> Option<u64> {
        let t = self.logs.get(&id)?;
        let unsynced = t.unsynced.front().map(|(o, _)| *o);
        let unflushed = t.unflushed.first().map(|(o, _, _)| *o);
        unsynced.into_iter().chain(unflushed).min()
    }

    /// Records written and waiting for a group commit, in all logs.
    pub fn unsynced_records(&self) -> usize {
        self.logs.values().map(|t| t.unsynced.len()).sum()
    }

    /// Outcomes decided since the last call, in the order they were decided.
    pub fn take_outcomes(&mut self) -> Vec<Outcome<W>> {
        std::mem::take(&mut self.outcomes)
    }

    /// Group commit times (request to durable) since the last call.
    pub fn take_sync_latencies(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.sync_latencies)
    }

    /// Append `record` to log `id`. With a `waiter`, its outcome comes out of
    /// [`DurableWriter::take_outcomes`], now (a failure) or after a later
    /// flush or sync. Returns the record's offset, or
    /// the error that refused it (a waiter has its outcome either way).
    pub fn append(
        &mut self,
        id: u64,
        record: &[u8],
        waiter: Option<(W, Durability)>,
    ) -> Result<u64, LogError> {
        let Some(t) = self.logs.get_mut(&id) else {
            let e = LogError::Config(format!("no log {id}"));
            if let Some((w, _)) = waiter {
                self.outcomes.push((w, Err(e.to_string())));
            }
            return Err(e);
        };
        if self.dirty.last() != Some(&id) {
            self.dirty.push(id);
        }
        let appended = t.log.append(record);
        // Buffered records of others may have been written out (a full
        // buffer, a rotation), or lost with a failed write.
        t.settle_written(&mut self.outcomes);
        let offset = match appended {
            Ok(offset) => offset,
            Err(e) => {
                let reason = e.refusal();
                if !matches!(e, LogError::RecordTooLarge { .. }) {
                    t.fail_lost(&reason, &mut self.outcomes);
                }
                if let Some((w, _)) = waiter {
                    self.outcomes.push((w, Err(reason)));
                }
                return Err(e);
            }
        };
        if let Some((w, durability)) = waiter {
            // `always` waits for the next sync like `group`, but that sync
            // starts as soon as its batch is written (see `flush`): the loop
            // never waits on the disk itself.
            t.sync_at_once |= durability == Durability::Always;
            t.unflushed.push((offset, w, durability));
        }
        Ok(offset)
    }

    /// Write every log's buffer out (the end of a batch): `os` records are
    /// done, the others wait for a group commit, which is asked for here.
    pub fn flush(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for id in dirty {
            let Some(t) = self.logs.get_mut(&id) else {
                continue;
            };
            if !t.unflushed.is_empty() || t.log.unflushed_bytes() > 0 {
                let flushed = t.log.flush();
                t.settle_written(&mut self.outcomes);
                if let Err(e) = flushed {
                    tracing::warn!(log = id, error = %e, "write failed");
                    t.fail_lost(&e.refusal(), &mut self.outcomes);
                }
            }
            // Records a full buffer wrote out during appends wait here too.
            let written = t.log.bytes_written_total();
            if !t.unsynced.is_empty() && written > t.requested_at_bytes {
                let (file, offset) = t.log.sync_target();
                let bytes = written - t.requested_at_bytes;
                self.syncer
                    .get()
                    .request(t.sync_tag, file, offset, bytes, t.sync_at_once);
                t.requested_at_bytes = written;
                t.sync_at_once = false;
                t.sync_started.get_or_insert(now);
            }
        }
    }

    /// Flush log `id` and fsync it here, now: every record of it written so
    /// far is done (the caller's own group commit, for a writer that runs
    /// no syncer thread). A failure fails them and poisons the log.
    pub fn sync(&mut self, id: u64) {
        let Some(t) = self.logs.get_mut(&id) else {
            return;
        };
        let synced = t.log.sync();
        t.settle_written(&mut self.outcomes);
        match synced {
            Ok(()) => t.confirm_synced_below(t.log.written_offset(), &mut self.outcomes),
            Err(e) => {
                // The sync asked for did not happen: nothing waiting on it is done.
                let reason = e.refusal();
                t.fail_lost(&reason, &mut self.outcomes);
                self.outcomes
                    .extend(t.unsynced.drain(..).map(|(_, w)| (w, Err(reason.clone()))));
            }
        }
    }

    /// A group commit finished for the log its `sync_tag` names (the tag
    /// the syncer callback heard): `Ok(offset)` makes every record below it
    /// durable; an error fails every record waiting for a sync and poisons
    /// the log (the kernel may have dropped the pages it reported). The
    /// tag of a log since removed names none: nothing happens. The tag of a
    /// log since cut confirms nothing; its error poisons the log all the same.
    pub fn on_durable(&mut self, sync_tag: u64, result: std::io::Result<u64>, now: Instant) {
        let (id, retired) = match self.sync_tags.get(&sync_tag) {
            Some(&id) => {
                // Answers come in order: no retired tag of this log answers after.
                if !self.retired_sync_tags.is_empty() {
                    self.retired_sync_tags.retain(|_, log| *log != id);
                }
                (id, false)
            }
            None => match self.retired_sync_tags.get(&sync_tag) {
                Some(&id) => (id, true),
                None => return,
            },
        };
        let Some(t) = self.logs.get_mut(&id) else {
            return;
        };
        match result {
            // It covered offsets given out again since: it vouches for nothing.
            Ok(_) if retired => {}
            Ok(durable) => {
                if let Some(started) = t.sync_started.take()
                    && self.sync_latencies.len() < SYNC_LATENCIES_MAX
                {
                    self.sync_latencies
                        .push(now.saturating_duration_since(started));
                }
                t.confirm_synced_below(durable, &mut self.outcomes);
            }
            Err(e) => {
                if !retired {
                    t.sync_started = None;
                }
                t.log.poison_after_failed_sync(&e);
                t.fail_lost(&format!("fsync failed: {e}"), &mut self.outcomes);
            }
        }
    }
}

impl<W> DurableWriter<W> {
    /// The log a sync tag names, if it still names one.
    pub fn log_of_sync_tag(&self, sync_tag: u64) -> Option<u64> {
        self.sync_tags.get(&sync_tag).copied()
    }

    fn new_sync_tag(&mut self, id: u64) -> u64 {
        let tag = self.next_sync_tag;
        self.next_sync_tag += 1;
        self.sync_tags.insert(tag, id);
        tag
    }

    /// Cut log `id` back to `offset` for good ([`Log::truncate_from`]).
    /// Everything written before is first synced here, on the caller's
    /// thread, so every record waited on gets its outcome, `Ok` or the
    /// sync's error, before a record of it is cut: a waiter never hears of
    /// a record that was cut, and a later sync never vouches for one. Rare
    /// (a replica whose tail lost to another's), so two fsyncs on the
    /// caller's thread are fine.
    pub fn truncate(&mut self, id: u64, offset: u64) -> Result<(), LogError> {
        self.renumber(id, |log| log.truncate_from(offset))
    }

    /// Drop every record of log `id` and go on at `offset`
    /// ([`Log::restart_at`]), with waiters settled first as for
    /// [`DurableWriter::truncate`].
    pub fn restart_at(&mut self, id: u64, offset: u64) -> Result<(), LogError> {
        self.renumber(id, |log| log.restart_at(offset))
    }

    /// Settle log `id`'s waiters with a sync here, change its records with
    /// `change` (offsets will be given out again), and retire its sync tag.
    fn renumber(
        &mut self,
        id: u64,
        change: impl FnOnce(&mut Log) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        if !self.logs.contains_key(&id) {
            return Err(LogError::Config(format!("no log {id}")));
        }
        self.sync(id);
        let tag = self.new_sync_tag(id);
        let t = self.logs.get_mut(&id).expect("checked above");
        debug_assert!(
            t.unflushed.is_empty() && t.unsynced.is_empty() || t.log.poisoned().is_some(),
            "a sync here settles every waiter"
        );
        // A sync asked for before covered offsets that will be given out again.
        let old = std::mem::replace(&mut t.sync_tag, tag);
        self.sync_tags.remove(&old);
        self.retired_sync_tags.insert(old, id);
        t.sync_at_once = false;
        t.sync_started = None;
        let changed = change(&mut t.log);
        t.requested_at_bytes = t.log.bytes_written_total();
        changed
    }
}

impl<W> Tracked<W> {
    /// Move records the log has written from `unflushed` on: `os` ones are
    /// done, the others wait for a sync.
    fn settle_written(&mut self, outcomes: &mut Vec<Outcome<W>>) {
        let written_end = self.log.written_offset();
        // Most appends write nothing out: one comparison then.
        if self
            .unflushed
            .first()
            .is_none_or(|(o, _, _)| *o >= written_end)
        {
            return;
        }
        let n = self
            .unflushed
            .partition_point(|(offset, _, _)| *offset < written_end);
        for (offset, w, durability) in self.unflushed.drain(..n) {
            match durability {
                Durability::Os => outcomes.push((w, Ok(offset))),
                _ => {
                    debug_assert!(self.unsynced.back().is_none_or(|(o, _)| *o < offset));
                    self.unsynced.push_back((offset, w));
                }
            }
        }
    }

    /// A write failed (or the log is poisoned): fail what it lost, the
    /// records past the written end, whose offsets the log gives out again;
    /// when the log is poisoned, fail what waits for a sync too.
    fn fail_lost(&mut self, reason: &str, outcomes: &mut Vec<Outcome<W>>) {
        debug_assert!(
            self.unflushed
                .first()
                .is_none_or(|(o, _, _)| *o >= self.log.written_offset()),
            "written records are settled first"
        );
        outcomes.extend(
            self.unflushed
                .drain(..)
                .map(|(_, w, _)| (w, Err(reason.to_owned()))),
        );
        if self.log.poisoned().is_some() {
            outcomes.extend(
                self.unsynced
                    .drain(..)
                    .map(|(_, w)| (w, Err(reason.to_owned()))),
            );
        }
    }

    fn confirm_synced_below(&mut self, durable: u64, outcomes: &mut Vec<Outcome<W>>) {
        if self.log.poisoned().is_some() {
            // A sync asked for before the log was poisoned does not vouch for it.
            return;
        }
        while let Some(&(offset, _)) = self.unsynced.front() {
            if offset >= durable {
                break;
            }
            let (offset, w) = self.unsynced.pop_front().expect("front exists");
            outcomes.push((w, Ok(offset)));
        }
    }
}
