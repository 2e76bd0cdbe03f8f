//! # zmesh-log — the storage log under durable queues and streams
//!
//! An append-only sequence of records numbered by offset, kept in segment
//! files with length-prefixed, CRC-checked records and a sparse index per
//! segment. Recovery at open truncates a torn tail and reports (never hides)
//! damage in the middle while keeping every readable record. Memory use is
//! bounded by the write buffer and one segment during recovery, whatever the
//! log's size. Design and invariants: `docs/storage.md`.
//!
//! - [`Log`]: append, flush, sync, read, retention; a cut tail and a
//!   restart further on, for replicas (`cut`).
//! - [`DurableWriter`]: the one owner of records waiting to be written or
//!   synced, for queues and streams alike.
//! - [`Syncer`]: group commit on a background thread.
//! - [`LogView`], [`ReadThread`]: reads taken from the log's owner, run off its thread.
//! - [`Durability`]: the policies (`always`, `group`, `os`).
//! - [`record`]: the on-disk record format.
//! - [`FileSystem`]: the file access the log does, replaceable by a test's
//!   failing disk (`faulty`, with the `fault-injection` feature).

mod config;
mod cursor;
mod cut;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faulty;
mod files;
mod index;
mod log;
mod reader;
pub mod record;
mod recovery;
mod segment;
mod syncer;
mod writer;

pub use config::{Durability, LogConfig};
pub use cursor::{LogView, ReadCursor};
pub use error::{LogError, Result};
pub use files::{FileSystem, Files, LogFile, OpenMode, OsFileSystem, write_atomically};
pub use log::{Log, Retention};
pub use reader::ReadThread;
pub use record::Record;
pub use recovery::{Damage, RecoveryReport};
pub use syncer::Syncer;
pub use writer::{DurableWriter, Outcome};
