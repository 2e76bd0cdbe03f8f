//! What can go wrong, and whose fault it is.

use std::path::PathBuf;

/// Errors of the storage log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Environment: the file system refused an operation (disk full, file too
    /// large, permissions, I/O error). Records appended since the last
    /// successful flush were not written and their offsets are free again.
    #[error("storage I/O failed on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Caller: a record larger than the log's `record_bytes_max`.
    #[error("record of {len} bytes exceeds the log's limit of {max} bytes")]
    RecordTooLarge {
        /// Bytes offered.
        len: usize,
        /// The configured limit.
        max: u32,
    },
    /// Environment: bytes on disk changed after the log was opened (bit rot,
    /// another writer). The damaged record cannot be read; the log is unchanged.
    #[error("corrupt record in {path} at byte {position}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte position of the damaged record.
        position: u64,
    },
    /// Environment: the log cannot know what its file holds any more, so it
    /// takes no more writes. Either a failed write could not be cut back (the
    /// segment may end in bytes that are not records, and records appended
    /// after them would reuse offsets already on disk), or an fsync failed
    /// (the kernel may have dropped the unsynced pages and still report them
    /// written). Reopening the log (recovery reads what is really on disk and
    /// cuts a torn tail) clears this.
    #[error("storage log {path} takes no more writes: {reason}")]
    Poisoned {
        /// The active segment.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Caller: a cut or a restart at an offset the log cannot take there
    /// (below its first record, or a restart below its next offset).
    #[error("offset {offset} is out of range: {reason}")]
    OutOfRange {
        /// The offset asked for.
        offset: u64,
        /// Why it cannot be taken.
        reason: String,
    },
    /// Caller: the configuration cannot work (e.g. a zero segment size).
    #[error("invalid log configuration: {0}")]
    Config(String),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }

    /// The error as a refusal to whoever waited on the record: "disk full"
    /// first when it is one, so a publisher can tell.
    pub fn refusal(&self) -> String {
        if self.is_no_space() {
            format!("disk full ({self})")
        } else {
            self.to_string()
        }
    }

    /// True when the error means "no space": disk full or file size limit.
    pub fn is_no_space(&self) -> bool {
        match self {
            LogError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(28 /* ENOSPC */) | Some(27 /* EFBIG */) | Some(122 /* EDQUOT */)
            ),
            _ => false,
        }
    }
}

/// Result alias for log operations.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
