//! Cutting a log's tail, and starting it over further on: what a replica
//! needs (a Raft follower whose unconfirmed tail lost to a new leader's,
//! one that took a snapshot newer than its log). See `docs/storage.md`,
//! "Cutting the tail".

use crate::files::OpenMode;
use crate::log::sync_dir;
use crate::segment::{SegmentMeta, SegmentReader};
use crate::{Log, LogError, Result, index};

impl Log {
    /// Remove the records at `offset` and after, for good: when this
    /// returns, no crash brings them back, and the next append gets
    /// `offset`. For a replica whose unconfirmed tail lost to another's (a
    /// Raft follower's conflicting entries); records below `offset` are
    /// written and synced too.
    ///
    /// Later segments go first, newest first, the directory synced after
    /// each, before the segment holding `offset` is cut: a crash part-way
    /// leaves a prefix of the log, never stale records behind a hole. A
    /// failure part-way poisons the log.
    pub fn truncate_from(&mut self, offset: u64) -> Result<()> {
        self.check_poisoned()?;
        if offset < self.first_offset() {
            return Err(LogError::OutOfRange {
                offset,
                reason: format!("the log's first record is {}", self.first_offset()),
            });
        }
        self.sync()?;
        if offset >= self.next_offset {
            return Ok(());
        }
        let cut = self.cut_from(offset);
        self.poison_after_failed_change(&cut, "a cut");
        cut
    }

    /// After a cut or a restart failed part-way, the segments, files and
    /// offsets the log holds in memory may no longer be the disk's: take no
    /// more writes (a reopen reads the disk again).
    fn poison_after_failed_change(&mut self, result: &Result<()>, what: &str) {
        if let Err(e) = result
            && self.poisoned.is_none()
        {
            tracing::error!(path = %self.dir.display(), error = %e, "{what} failed part-way; the log takes no more writes");
            self.poisoned = Some(format!("{what} failed part-way ({e})"));
        }
    }

    fn cut_from(&mut self, offset: u64) -> Result<()> {
        let keep = self.segments.partition_point(|s| s.base <= offset) - 1;
        let files = self.config.files.clone();
        if keep + 1 < self.segments.len() {
            while self.segments.len() > keep + 1 {
                let gone = self.segments.pop().expect("more than `keep` segments");
                files
                    .remove_file(&gone.path)
                    .map_err(LogError::io(&gone.path))?;
                let _ = files.remove_file(&gone.index_path());
                self.damaged.retain(|d| d.path != gone.path);
                // One at a time: unlinks are not bound to reach the disk in order.
                sync_dir(&*files, &self.dir)?;
            }
            let meta = self.active().clone();
            self.file = files
                .open(&meta.path, OpenMode::Append)
                .map_err(LogError::io(&meta.path))?;
            self.index_file = files
                .open(&meta.index_path(), OpenMode::AppendOrCreate)
                .map_err(LogError::io(meta.index_path()))?;
        }
        let meta = self.active().clone();
        let position = self.position_of(&meta, offset)?;
        self.file
            .set_len(position)
            .and_then(|()| self.file.sync_data())
            .map_err(LogError::io(&meta.path))?;
        // Index entries at or past the cut would point into the next records.
        let index_path = meta.index_path();
        let kept: Vec<(u64, u64)> = files
            .read(&index_path)
            .unwrap_or_default()
            .chunks_exact(16)
            .map(|e| {
                let offset = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
                let position = u64::from_le_bytes(e[8..].try_into().expect("8 bytes"));
                (offset, position)
            })
            .take_while(|&(o, _)| o < offset)
            .collect();
        index::write(&*files, &index_path, &kept)?;
        self.index_file = files
            .open(&index_path, OpenMode::AppendOrCreate)
            .map_err(LogError::io(&index_path))?;
        self.damaged
            .retain(|d| !(d.path == meta.path && d.bytes.start >= position && !d.bytes.is_empty()));
        let active = self.segments.last_mut().expect("at least one segment");
        active.end = offset;
        active.bytes = position;
        self.next_offset = offset;
        self.bytes_since_index = u64::MAX;
        // Offsets from the cut on will be given out again, at other places.
        self.truncations += 1;
        Ok(())
    }

    /// Drop every record and give the next append `offset`, at or past the
    /// log's next offset: a replica that took a snapshot newer than
    /// anything in its log goes on from the snapshot's end.
    ///
    /// The new segment is created (and the directory synced) before the
    /// old ones go: a crash part-way leaves them in front of a gap, which
    /// the next open reports as damage and [`Log::remove_before`] clears.
    pub fn restart_at(&mut self, offset: u64) -> Result<()> {
        self.check_poisoned()?;
        if offset < self.next_offset {
            return Err(LogError::OutOfRange {
                offset,
                reason: format!(
                    "a restart cannot go below the log's next offset {} (cut it first)",
                    self.next_offset
                ),
            });
        }
        if offset == self.next_offset && self.first_offset() == offset {
            return Ok(());
        }
        let restarted = self.start_over_at(offset);
        self.poison_after_failed_change(&restarted, "a restart");
        restarted
    }

    fn start_over_at(&mut self, offset: u64) -> Result<()> {
        self.flush()?;
        // An empty active segment may already start there.
        if self.active().base != offset {
            self.start_segment(offset)?;
        }
        // The new segment takes the next append from here on, whatever fails below.
        self.next_offset = offset;
        self.truncations += 1;
        while self.segments.len() > 1 {
            self.remove_oldest()?;
        }
        sync_dir(&*self.config.files, &self.dir)
    }

    /// Byte position after the last record below `offset` in `meta`: where
    /// a cut at `offset` goes, so damaged bytes past that record go too.
    fn position_of(&self, meta: &SegmentMeta, offset: u64) -> Result<u64> {
        let files = &*self.config.files;
        let start = meta.start_of(files, offset)?;
        let mut reader = SegmentReader::open(files, meta, start, self.config.record_bytes_max)?;
        let mut end_of_records = start;
        loop {
            let position = reader.position();
            debug_assert!(position >= end_of_records);
            if let Some(d) = self
                .damaged
                .iter()
                .find(|d| d.path == meta.path && d.bytes.start == position && !d.bytes.is_empty())
            {
                reader.skip_to(d.bytes.end);
                continue;
            }
            match reader.next()? {
                Some(r) if r.offset < offset => end_of_records = reader.position(),
                _ => return Ok(end_of_records),
            }
        }
    }
}
