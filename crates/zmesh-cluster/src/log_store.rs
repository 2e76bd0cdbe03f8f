//! The Raft log on zmesh-log.
//!
//! One [`zmesh_log::Log`] holds the entries, record offset = Raft index, each
//! entry MessagePack-encoded in its record. The vote and the last purged log
//! id live beside it in `raft-meta.json`, written atomically.
//!
//! ```text
//!  openraft ── append(entries, callback) ──► DurableWriter: append, flush (readable now)
//!                                                 │ sync asked for at once (`always`)
//!  callback.io_completed(Ok) ◄── completion task ◄┘ syncer thread: fdatasync
//!  replication ── LogReader: view taken under the lock, records read outside it
//! ```
//!
//! - **Persisted only after fsync.** The callback of an append rides on its
//!   last entry's record, with `always` durability: it hears `Ok` when a
//!   group commit covers that record, and every earlier one.
//! - **IO in order.** A vote is saved, and a suffix cut, only after
//!   everything appended before is synced (on the caller's thread: both are
//!   rare), so no later IO lands before an earlier one.
//! - **Purge** records the purged id first, then removes whole segments
//!   below it; a purge past the last entry starts the log over after it (a
//!   follower that installed a newer snapshot). Reads never return an entry
//!   at or below the purged id, wherever its bytes still are.
//! - **Damage refuses the open.** A torn tail is cut as for any log (those
//!   entries were never reported persisted), but a hole in the middle of a
//!   Raft log would break its "no holes" rule, so a log with one does not
//!   open: the node must be rebuilt from its peers.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zmesh_log::{Durability, DurableWriter, Log, LogConfig, LogError};

/// The writer's id for the one log it holds.
const LOG: u64 = 0;

/// Bytes of entries one read returns at most (at least one entry).
const READ_BYTES_MAX: usize = 4 << 20;

/// Why the Raft log could not be opened; all are the environment's.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The entries' log could not be opened or repaired.
    #[error("the raft log could not be opened: {0}")]
    Log(#[from] LogError),
    /// The vote and purge record could not be read or written.
    #[error("the raft log's record {path} could not be used: {reason}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A record of the log does not hold the entry it should (bit rot that
    /// kept its checksum, or a log another program wrote).
    #[error("the raft log in {dir} holds a bad entry: {reason}")]
    BadEntry {
        /// The log's directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The log has records missing in its middle (bit rot, a lost file).
    #[error(
        "the raft log in {dir} misses entries {lost:?}: a log with a hole cannot vote or serve; \
         rebuild this node from its peers"
    )]
    Damaged {
        /// The log's directory.
        dir: PathBuf,
        /// The indexes missing.
        lost: std::ops::Range<u64>,
    },
}

/// What is saved beside the entries.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "VoteOf<C>: Serialize, LogIdOf<C>: Serialize",
    deserialize = "VoteOf<C>: DeserializeOwned, LogIdOf<C>: DeserializeOwned"
))]
struct Meta<C: RaftTypeConfig> {
    vote: Option<VoteOf<C>>,
    purged: Option<LogIdOf<C>>,
}

impl<C: RaftTypeConfig> Default for Meta<C> {
    fn default() -> Self {
        Meta {
            vote: None,
            purged: None,
        }
    }
}

/// The state the store and its readers share.
struct Shared<C: RaftTypeConfig> {
    writer: DurableWriter<IOFlushed<C>>,
    meta: Meta<C>,
    meta_path: PathBuf,
    /// The last entry's id, `None` when the log holds none past the purged one.
    last_log_id: Option<LogIdOf<C>>,
    /// Set when a write failed part-way: what the store holds in memory may
    /// not be the disk's, so it takes no more IO (openraft stops the node
    /// on a storage error; a restart reads the disk again).
    broken: Option<String>,
}

/// The Raft log and vote of one node, for openraft ([`RaftLogStorage`]).
pub struct LogStore<C: RaftTypeConfig> {
    shared: Arc<Mutex<Shared<C>>>,
    gate: Arc<RwLock<()>>,
}

/// Reads entries and the vote while the store appends ([`RaftLogReader`]).
pub struct LogReader<C: RaftTypeConfig> {
    shared: Arc<Mutex<Shared<C>>>,
    /// Held for reading while a view is read outside the lock; a cut, a
    /// restart or a purge holds it for writing, so no read sees files
    /// change under it (a leader that steps down may still be reading for
    /// replication when the new leader's entries cut its tail).
    gate: Arc<RwLock<()>>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            shared: self.shared.clone(),
            gate: self.gate.clone(),
        }
    }
}

/// Holds readers off while a cut, a restart or a purge changes files.
fn close_gate(gate: &RwLock<()>) -> RwLockWriteGuard<'_, ()> {
    // The gate guards no data: a panicked holder leaves nothing half done.
    gate.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<C: RaftTypeConfig>(shared: &Mutex<Shared<C>>) -> io::Result<MutexGuard<'_, Shared<C>>> {
    let s = shared
        .lock()
        .map_err(|_| io::Error::other("the raft log store was left broken by an earlier panic"))?;
    match &s.broken {
        Some(reason) => Err(io::Error::other(format!(
            "the raft log store takes no more IO after a failed write: {reason}"
        ))),
        None => Ok(s),
    }
}

fn io_error(e: LogError) -> io::Error {
    io::Error::other(e.to_string())
}

fn decode<C>(offset: u64, payload: &[u8]) -> io::Result<C::Entry>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    let entry: C::Entry = rmp_serde::from_slice(payload).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("raft log record {offset} is not an entry: {e}"),
        )
    })?;
    if entry.index() != offset {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("raft log record {offset} holds entry {}", entry.index()),
        ));
    }
    Ok(entry)
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    /// Open (or create) the log in `dir`. Must run inside a tokio runtime:
    /// a task hands group commits' results to the callbacks.
    pub fn open(dir: &Path, config: LogConfig) -> Result<LogStore<C>, LogStoreError> {
        let meta_path = dir.join("raft-meta.json");
        let meta_error = |reason: String| LogStoreError::Meta {
            path: meta_path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| meta_error(e.to_string()))?;
        let meta: Meta<C> = match std::fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| meta_error(e.to_string()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(meta_error(e.to_string())),
        };
        let log_dir = dir.join("log");
        let (mut log, _report) = Log::open(&log_dir, config)?;
        let first_kept = meta.purged.as_ref().map_or(0, |p| p.index() + 1);
        if log.next_offset() < first_kept {
            // A purge past the end whose restart a crash cut short.
            log.restart_at(first_kept)?;
        } else {
            log.remove_before(first_kept)?;
        }
        if let Some(d) = log
            .damaged()
            .iter()
            .find(|d| d.offsets_lost.end > first_kept && !d.offsets_lost.is_empty())
        {
            return Err(LogStoreError::Damaged {
                dir: log_dir,
                lost: d.offsets_lost.clone(),
            });
        }
        let last = log.written_offset();
        let last_log_id = if last > first_kept.max(log.first_offset()) {
            let record = log
                .read(last - 1, 1, 1)?
                .pop()
                .filter(|r| r.offset == last - 1)
                .ok_or(LogStoreError::Damaged {
                    dir: log_dir.clone(),
                    lost: last - 1..last,
                })?;
            let entry = decode::<C>(record.offset, &record.payload).map_err(|e| {
                LogStoreError::BadEntry {
                    dir: log_dir.clone(),
                    reason: e.to_string(),
                }
            })?;
            Some(entry.log_id())
        } else {
            None
        };
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writer = DurableWriter::new(0, 1 << 20, move |tag, result| {
            let _ = done_tx.send((tag, result));
        });
        writer.add_log(LOG, log);
        let shared = Arc::new(Mutex::new(Shared {
            writer,
            meta,
            meta_path,
            last_log_id,
            broken: None,
        }));
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            while let Some((tag, result)) = done_rx.recv().await {
                let Some(shared) = weak.upgrade() else { break };
                let Ok(mut s) = lock(&shared) else { break };
                s.writer.on_durable(tag, result, Instant::now());
                s.complete();
            }
        });
        Ok(LogStore {
            shared,
            gate: Arc::new(RwLock::new(())),
        })
    }
}

impl<C: RaftTypeConfig> Shared<C> {
    /// Tell openraft what became of its IO.
    fn complete(&mut self) {
        for (callback, result) in self.writer.take_outcomes() {
            callback.io_completed(result.map(|_| ()).map_err(io::Error::other));
        }
    }

    fn log(&self) -> &Log {
        self.writer.log(LOG).expect("the one log is always there")
    }

    fn first_kept(&self) -> u64 {
        let purged = self.meta.purged.as_ref().map_or(0, |p| p.index() + 1);
        purged.max(self.log().first_offset())
    }

    /// Save `meta` and hold it from then on (not before: a reader must
    /// never see a vote that is not on disk).
    fn save_meta(&mut self, meta: Meta<C>) -> io::Result<()>
    where
        VoteOf<C>: Serialize,
        LogIdOf<C>: Serialize,
    {
        let bytes = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        zmesh_log::write_atomically(&self.meta_path, &bytes)?;
        self.meta = meta;
        Ok(())
    }

    /// Fail the store for good after `error`, and pass the error on.
    fn break_on(&mut self, error: io::Error) -> io::Error {
        self.broken.get_or_insert_with(|| error.to_string());
        error
    }

    /// Append and write `entries`, the callback (taken from `callback`)
    /// riding on the last one: it is done when that one is.
    fn append_entries(
        &mut self,
        entries: impl IntoIterator<Item = C::Entry>,
        callback: &mut Option<IOFlushed<C>>,
        gate: &RwLock<()>,
    ) -> io::Result<()>
    where
        C::Entry: Serialize,
    {
        let mut entries = entries.into_iter().peekable();
        let mut record = Vec::new();
        let mut end = None;
        while let Some(entry) = entries.next() {
            let mut next = self.log().next_offset();
            if self.last_log_id.is_none() && self.meta.purged.is_none() && entry.index() > next {
                // A log that never held an entry may start anywhere.
                let _readers_held_off = close_gate(gate);
                let restarted = self.writer.restart_at(LOG, entry.index());
                self.complete();
                restarted.map_err(io_error)?;
                next = entry.index();
            }
            if entry.index() != next {
                return Err(io::Error::other(format!(
                    "raft entry {} appended where entry {next} goes: a hole or an overlap",
                    entry.index()
                )));
            }
            record.clear();
            rmp_serde::encode::write(&mut record, &entry).map_err(io::Error::other)?;
            let waiter = match entries.peek() {
                None => callback.take().map(|c| (c, Durability::Always)),
                Some(_) => None,
            };
            self.writer.append(LOG, &record, waiter).map_err(io_error)?;
            self.last_log_id = Some(entry.log_id());
            end = Some(entry.index() + 1);
        }
        self.writer.flush(Instant::now());
        if let Some(end) = end
            && self.log().written_offset() < end
        {
            return Err(io::Error::other(format!(
                "raft entries up to {end} could not be written: {}",
                self.log().poisoned().unwrap_or("the write failed")
            )));
        }
        Ok(())
    }

    /// Sync everything appended so far, here: the IO after it must not land first.
    fn sync_appended(&mut self) -> io::Result<()> {
        self.writer.sync(LOG);
        self.complete();
        match self.log().poisoned() {
            Some(reason) => Err(io::Error::other(format!("the raft log failed: {reason}"))),
            None => Ok(()),
        }
    }
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let (view, start, end, _gate) = {
            let s = lock(&self.shared)?;
            let start = match range.start_bound() {
                Bound::Included(&i) => i,
                Bound::Excluded(&i) => i.saturating_add(1),
                Bound::Unbounded => 0,
            }
            .max(s.first_kept());
            let written = s.log().written_offset();
            let end = match range.end_bound() {
                Bound::Included(&i) => i.saturating_add(1),
                Bound::Excluded(&i) => i,
                Bound::Unbounded => u64::MAX,
            }
            .min(written);
            if start >= end {
                return Ok(Vec::new());
            }
            let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
            (s.log().view(start, end - start), start, end, gate)
        };
        // Outside the lock: appends go on meanwhile (cuts wait at the gate).
        let mut entries = Vec::with_capacity((end - start).min(1024) as usize);
        let mut from = start;
        while from < end {
            let records = view
                .read(from, (end - from) as usize, READ_BYTES_MAX)
                .map_err(io_error)?;
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for r in records {
                entries.push(decode::<C>(r.offset, &r.payload)?);
            }
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(lock(&self.shared)?.meta.vote.clone())
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
    VoteOf<C>: Serialize + DeserializeOwned,
    LogIdOf<C>: Serialize + DeserializeOwned,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let s = lock(&self.shared)?;
        Ok(LogState {
            last_purged_log_id: s.meta.purged.clone(),
            last_log_id: s.last_log_id.clone().or_else(|| s.meta.purged.clone()),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: self.shared.clone(),
            gate: self.gate.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let mut s = lock(&self.shared)?;
        s.sync_appended()?;
        let meta = Meta {
            vote: Some(vote.clone()),
            purged: s.meta.purged.clone(),
        };
        s.save_meta(meta)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut s = lock(&self.shared)?;
        let mut callback = Some(callback);
        let appended = s.append_entries(entries, &mut callback, &self.gate);
        s.complete();
        if let Err(e) = appended {
            if let Some(callback) = callback.take() {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
            }
            return Err(s.break_on(e));
        }
        if let Some(callback) = callback {
            // Nothing appended: done once all before it is.
            let synced = s.sync_appended();
            callback.io_completed(synced);
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let mut s = lock(&self.shared)?;
        // Nothing below the first record is kept: a cut there drops them all.
        let from = last_log_id
            .as_ref()
            .map_or(0, |l| l.index() + 1)
            .max(s.log().first_offset());
        if from >= s.log().next_offset() {
            return Ok(());
        }
        let _readers_held_off = close_gate(&self.gate);
        let cut = s.writer.truncate(LOG, from);
        s.complete();
        if let Err(e) = cut {
            return Err(s.break_on(io_error(e)));
        }
        s.last_log_id = last_log_id.filter(|l| l.index() >= s.first_kept());
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let mut s = lock(&self.shared)?;
        let upto = log_id.index() + 1;
        if s.meta
            .purged
            .as_ref()
            .is_some_and(|p| p.index() >= log_id.index())
        {
            return Ok(());
        }
        // Recorded first: a crash before the segments go leaves them unread.
        let meta = Meta {
            vote: s.meta.vote.clone(),
            purged: Some(log_id),
        };
        s.save_meta(meta)?;
        let _readers_held_off = close_gate(&self.gate);
        let removed = if upto >= s.log().next_offset() {
            s.last_log_id = None;
            let restarted = s.writer.restart_at(LOG, upto);
            s.complete();
            restarted
        } else {
            s.writer
                .log_mut(LOG)
                .expect("the one log is always there")
                .remove_before(upto)
                .map(|_| ())
        };
        if let Err(e) = removed {
            return Err(s.break_on(io_error(e)));
        }
        Ok(())
    }
}
