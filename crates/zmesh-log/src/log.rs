//! The log: a directory of segments, one of them active for appends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::files::{FileSystem, LogFile, OpenMode};
use crate::recovery::{self, Damage, RecoveryReport};
use crate::segment::{self, SegmentMeta};
use crate::{LogConfig, LogError, Record, Result, index, record};

/// How much of the log to keep; `None` keeps without limit. Whole sealed
/// segments are removed, oldest first, so a log keeps up to one segment more
/// than asked.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// Total bytes of records.
    pub bytes_max: Option<u64>,
    /// Number of records.
    pub records_max: Option<u64>,
    /// Age of a segment's newest record.
    pub age_max: Option<Duration>,
    /// Whatever the limits, the segments holding this offset and later
    /// stay (a read in flight needs them).
    pub keep_from: Option<u64>,
}

/// An append-only log of records numbered by offset.
///
/// I/O contract: [`Log::append`] buffers a record and returns its offset;
/// [`Log::flush`] writes buffered records to the file (they survive a process
/// crash from then on); [`Log::sync`] or a [`crate::Syncer`] makes them survive
/// a power cut. Only written records are readable. After an I/O error, every
/// record from [`Log::written_offset`] on is gone and its offset will be reused.
///
/// ```
/// # fn main() -> Result<(), zmesh_log::LogError> {
/// let dir = std::env::temp_dir().join(format!("zmesh-log-doc-{}", std::process::id()));
/// let (mut log, report) = zmesh_log::Log::open(&dir, zmesh_log::LogConfig::default())?;
/// assert!(report.damaged.is_empty());
/// let first = log.append(b"hello")?;
/// log.sync()?;
/// let records = log.read(first, 10, 1 << 20)?;
/// assert_eq!(&records[0].payload[..], b"hello");
/// # drop(log); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// Oldest first; the last one is the active segment.
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) file: Arc<dyn LogFile>,
    pub(crate) index_file: Arc<dyn LogFile>,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// Index entries for the buffered records.
    pending_index: Vec<u8>,
    pub(crate) bytes_since_index: u64,
    /// Offset the next append gets.
    pub(crate) next_offset: u64,
    written_total: u64,
    pub(crate) damaged: Vec<Damage>,
    /// Failed writes cut back so far (their offsets are then reused).
    pub(crate) truncations: u64,
    /// Unique among the logs of this process: a cursor found in one log is
    /// never taken for a place in another (two logs share segment bases).
    pub(crate) id: u64,
    /// Set when a failed write could not be cut back: no more writes.
    pub(crate) poisoned: Option<String>,
}

impl Log {
    /// Open (or create) the log in `dir`, recovering from whatever a crash left.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<(Log, RecoveryReport)> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let files = &*config.files;
        files.create_dir_all(&dir).map_err(LogError::io(&dir))?;
        let mut bases: Vec<u64> = files
            .list_dir(&dir)
            .map_err(LogError::io(&dir))?
            .iter()
            .filter_map(|path| segment::parse_name(path))
            .collect();
        bases.sort_unstable();
        let mut report = RecoveryReport::default();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let meta = recover_segment(&dir, base, i + 1 == count, &config, &mut report)?;
            if let Some(prev) = segments.last().map(|s: &SegmentMeta| s.end)
                && meta.base > prev
            {
                report.damaged.push(Damage {
                    path: meta.path.clone(),
                    bytes: 0..0,
                    offsets_lost: prev..meta.base,
                });
            }
            segments.push(meta);
        }
        if report.damaged.len() > config.damage_ranges_max {
            return Err(LogError::Config(format!(
                "{} damaged ranges in {} exceed damage_ranges_max",
                report.damaged.len(),
                dir.display()
            )));
        }
        if segments.is_empty() {
            let meta = SegmentMeta::new(&dir, 0);
            files
                .open(&meta.path, OpenMode::Truncate)
                .map_err(LogError::io(&meta.path))?;
            sync_dir(files, &dir)?;
            segments.push(meta);
        }
        let active = segments.last().expect("at least one segment");
        // Readable too: `read_at` reads the active segment through it.
        let file = files
            .open(&active.path, OpenMode::Append)
            .map_err(LogError::io(&active.path))?;
        let index_path = active.index_path();
        let index_file = files
            .open(&index_path, OpenMode::AppendOrCreate)
            .map_err(LogError::io(&index_path))?;
        let next_offset = active.end;
        let log = Log {
            dir,
            bytes_since_index: if active.bytes == 0 {
                u64::MAX
            } else {
                active.bytes % config.index_interval_bytes
            },
            config,
            segments,
            file,
            index_file,
            buf: Vec::new(),
            pending_index: Vec::new(),
            next_offset,
            written_total: 0,
            damaged: report.damaged.clone(),
            truncations: 0,
            id: LOG_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            poisoned: None,
        };
        Ok((log, report))
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Offset of the oldest record kept.
    pub fn first_offset(&self) -> u64 {
        self.segments[0].base
    }

    /// Offset the next append will get.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Offset after the last record written to the file (readable, crash-safe
    /// against a process crash).
    pub fn written_offset(&self) -> u64 {
        self.active().end
    }

    /// Bytes of records kept, written or buffered.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>() + self.buf.len() as u64
    }

    /// Bytes appended and not yet written.
    pub fn unflushed_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes written to segment files since the log was opened (only grows).
    pub fn bytes_written_total(&self) -> u64 {
        self.written_total
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Damage found at open, still on disk.
    pub fn damaged(&self) -> &[Damage] {
        &self.damaged
    }

    pub(crate) fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(reason) => Err(LogError::Poisoned {
                path: self.active().path.clone(),
                reason: reason.clone(),
            }),
        }
    }

    pub(crate) fn active(&self) -> &SegmentMeta {
        self.segments.last().expect("at least one segment")
    }

    /// Buffer `payload` as the next record and return its offset. Writes the
    /// buffer out when it is full, so an I/O error can surface here.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64> {
        self.check_poisoned()?;
        if payload.len() > self.config.record_bytes_max as usize {
            return Err(LogError::RecordTooLarge {
                len: payload.len(),
                max: self.config.record_bytes_max,
            });
        }
        let size = (record::HEADER_LEN + payload.len()) as u64;
        let filled = self.active().bytes + self.buf.len() as u64;
        if filled > 0 && filled + size > self.config.segment_bytes_max {
            self.rotate()?;
        }
        let position = self.active().bytes + self.buf.len() as u64;
        if self.bytes_since_index >= self.config.index_interval_bytes {
            self.pending_index
                .extend_from_slice(&index::entry(self.next_offset, position));
            self.bytes_since_index = 0;
        }
        let offset = self.next_offset;
        record::encode(offset, payload, &mut self.buf);
        self.bytes_since_index += size;
        self.next_offset += 1;
        if self.buf.len() >= self.config.write_buffer_bytes {
            self.flush()?;
        }
        Ok(offset)
    }

    /// Write buffered records to the file. On error nothing of the buffer is
    /// kept: the file is cut back to its last good length.
    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.check_poisoned()?;
        let path = self.active().path.clone();
        let good_len = self.active().bytes;
        if let Err(e) = self.file.append(&self.buf) {
            // A partial write must not stay: the next record would follow garbage.
            if let Err(cut) = self.file.set_len(good_len) {
                tracing::error!(path = %path.display(), error = %cut, "cutting back a failed write failed; the log takes no more writes");
                self.poisoned = Some(format!("a failed write could not be cut back ({cut})"));
            }
            self.truncations += 1;
            self.buf.clear();
            self.pending_index.clear();
            self.next_offset = self.active().end;
            self.bytes_since_index = u64::MAX;
            return Err(LogError::Io { path, source: e });
        }
        if !self.pending_index.is_empty() && self.active().index_ok {
            let index_len = self.index_file.size_bytes().unwrap_or(0);
            if self.index_file.append(&self.pending_index).is_err()
                && self.index_file.set_len(index_len).is_err()
            {
                // The index is derived data: a missing entry only makes lookups scan longer,
                // but a torn one would misalign every later entry. Uncut, it is not used
                // again (the file goes, if it can; a reopen rebuilds it).
                tracing::warn!(path = %path.display(), "a torn index entry could not be cut; lookups in this segment scan it");
                let index_path = self.active().index_path();
                let _ = self.config.files.remove_file(&index_path);
                self.segments
                    .last_mut()
                    .expect("at least one segment")
                    .index_ok = false;
            }
        }
        self.pending_index.clear();
        let written = self.buf.len() as u64;
        self.written_total += written;
        self.buf.clear();
        let next = self.next_offset;
        let active = self.segments.last_mut().expect("at least one segment");
        active.bytes += written;
        active.end = next;
        Ok(())
    }

    /// Flush, then `fdatasync` the active segment. A failed sync poisons the
    /// log: after a failed fsync the kernel may have dropped the unsynced
    /// pages while still serving them to reads, so nothing written since the
    /// last good sync can be trusted until a reopen reads the disk again.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if let Err(e) = self.file.sync_data() {
            self.poison_after_failed_sync(&e);
            return Err(LogError::Io {
                path: self.active().path.clone(),
                source: e,
            });
        }
        Ok(())
    }

    /// Take no more writes after an fsync of this log failed, here or on a
    /// [`crate::Syncer`]: what that sync covered may not be on disk.
    pub fn poison_after_failed_sync(&mut self, error: &std::io::Error) {
        if self.poisoned.is_none() {
            tracing::error!(path = %self.active().path.display(), %error, "fsync failed; the log takes no more writes");
            self.poisoned = Some(format!("an fsync failed ({error})"));
        }
    }

    /// Why the log takes no more writes, if it does not.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// What a [`crate::Syncer`] needs to make everything written so far durable.
    pub fn sync_target(&self) -> (Arc<dyn LogFile>, u64) {
        (self.file.clone(), self.written_offset())
    }

    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        self.start_segment(self.next_offset)
    }

    /// Seal the active segment and start a new one at `base`.
    pub(crate) fn start_segment(&mut self, base: u64) -> Result<()> {
        let meta = SegmentMeta::new(&self.dir, base);
        let files = &*self.config.files;
        let file = files
            // Not create-new: a rotation that failed half-way left an empty file to reuse.
            .open(&meta.path, OpenMode::AppendOrCreate)
            .map_err(LogError::io(&meta.path))?;
        let index_path = meta.index_path();
        let index_file = files
            .open(&index_path, OpenMode::Truncate)
            .map_err(LogError::io(&index_path))?;
        sync_dir(files, &self.dir)?;
        self.file = file;
        self.index_file = index_file;
        self.segments.push(meta);
        self.bytes_since_index = u64::MAX;
        Ok(())
    }

    /// Up to `records_max` written records (and about `bytes_max` bytes, at
    /// least one record) from `from` on. Offsets below the oldest kept record
    /// start at the oldest; damaged ranges found at open are skipped.
    pub fn read(&self, from: u64, records_max: usize, bytes_max: usize) -> Result<Vec<Record>> {
        self.layout().read(from, records_max, bytes_max)
    }

    /// The offset after the last record of the oldest segment, when that
    /// segment is sealed (it is the only one [`Log::remove_before`] can delete
    /// next); `None` while only the active segment exists.
    pub fn oldest_sealed_end(&self) -> Option<u64> {
        (self.segments.len() > 1).then(|| self.segments[0].end)
    }

    /// Delete sealed segments whose records all lie below `offset`.
    pub fn remove_before(&mut self, offset: u64) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[0].end <= offset {
            self.remove_oldest()?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Apply `retention` to sealed segments; returns the segments removed.
    pub fn retain(&mut self, retention: &Retention, now: SystemTime) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let total_bytes = self.bytes();
            let total_records = self.next_offset - self.first_offset();
            let too_big = retention.bytes_max.is_some_and(|m| total_bytes > m);
            let too_many = retention
                .records_max
                .is_some_and(|m| total_records - (oldest.end - oldest.base) >= m);
            let too_old = retention.age_max.is_some_and(|age| {
                self.config
                    .files
                    .modified(&oldest.path)
                    .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age))
            });
            if !(too_big || too_many || too_old)
                || retention.keep_from.is_some_and(|k| oldest.end > k)
            {
                break;
            }
            self.remove_oldest()?;
            removed += 1;
        }
        Ok(removed)
    }

    pub(crate) fn remove_oldest(&mut self) -> Result<()> {
        let old = self.segments.remove(0);
        let files = &*self.config.files;
        files
            .remove_file(&old.path)
            .map_err(LogError::io(&old.path))?;
        let _ = files.remove_file(&old.index_path());
        // A gap between segments (bytes `0..0`) is kept on the later one; it
        // no longer matters once everything below it is gone.
        let first = self.first_offset();
        self.damaged
            .retain(|d| d.path != old.path && !(d.bytes.is_empty() && d.offsets_lost.end <= first));
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Best effort: a clean close leaves nothing for recovery to cut.
        let _ = self.sync();
    }
}

/// Gives each log opened in this process its id.
static LOG_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn sync_dir(files: &dyn FileSystem, dir: &Path) -> Result<()> {
    files.sync_dir(dir).map_err(LogError::io(dir))
}

/// Scan one segment file, rebuild its index and cut a torn tail.
fn recover_segment(
    dir: &Path,
    base: u64,
    is_last: bool,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<SegmentMeta> {
    let mut meta = SegmentMeta::new(dir, base);
    // Bounded by segment_bytes_max plus one record: one segment in memory at a time.
    let files = &*config.files;
    let bytes = files.read(&meta.path).map_err(LogError::io(&meta.path))?;
    let mut entries = Vec::new();
    let mut since = u64::MAX;
    let scan = recovery::scan(&bytes, base, config.record_bytes_max, |f| {
        if since >= config.index_interval_bytes {
            entries.push((f.offset, f.position));
            since = 0;
        }
        since += f.size;
        report.records += 1;
    });
    report.segments += 1;
    for (range, lost) in scan.damaged {
        tracing::warn!(segment = %meta.path.display(), bytes = ?range, offsets_lost = ?lost, "damaged records skipped");
        report.damaged.push(Damage {
            path: meta.path.clone(),
            bytes: range,
            offsets_lost: lost,
        });
    }
    let file_len = bytes.len() as u64;
    if scan.valid_end < file_len {
        if is_last {
            tracing::warn!(segment = %meta.path.display(), bytes = file_len - scan.valid_end, "torn tail truncated");
            files
                .open(&meta.path, OpenMode::Append)
                .and_then(|f| {
                    f.set_len(scan.valid_end)?;
                    f.sync_data()
                })
                .map_err(LogError::io(&meta.path))?;
            report.torn_tail_bytes += file_len - scan.valid_end;
        } else {
            report.damaged.push(Damage {
                path: meta.path.clone(),
                bytes: scan.valid_end..file_len,
                offsets_lost: scan.next_offset..scan.next_offset,
            });
        }
    }
    meta.end = scan.next_offset;
    meta.bytes = if is_last { scan.valid_end } else { file_len };
    let index_path = meta.index_path();
    if let Err(e) = index::write(files, &index_path, &entries) {
        // The index only speeds lookups up: a disk too full for it must not
        // keep the log from opening. A torn one would misplace reads, so it goes.
        tracing::warn!(error = %e, "rebuilding a segment index failed; reads of the segment scan it");
        files
            .remove_file(&index_path)
            .map_err(LogError::io(&index_path))?;
    }
    Ok(meta)
}
