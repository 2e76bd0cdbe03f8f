//! File access behind a trait, so a test can put a failing disk under the log.
//!
//! Everything the log does to files goes through [`FileSystem`] and
//! [`LogFile`]: open, append, positioned read, cut, `fdatasync`, list, remove.
//! [`OsFileSystem`] is the real one. With the `fault-injection` feature,
//! [`crate::faulty::FaultyFileSystem`] wraps it and fails on command (disk
//! full at byte N, a failed fsync or cut, a power cut that tears unsynced
//! bytes), so tests run the log's real code against the failures a disk has.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// How [`FileSystem::open`] opens a file. Every mode but `Read` writes only
/// at the end (`O_APPEND`) and can read too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Append; the file must exist.
    Append,
    /// Append, creating the file when it is missing.
    AppendOrCreate,
    /// Create the file, or empty it when it exists.
    Truncate,
}

/// Operations on paths.
pub trait FileSystem: Debug + Send + Sync + 'static {
    /// Create `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the entries in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Open `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn LogFile>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Delete `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Make `dir`'s entries (files created or removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// When `path` was last written.
    fn modified(&self, path: &Path) -> io::Result<SystemTime>;
}

/// An open file. Shared (`Arc`) between the log, its read cursors and the
/// syncer thread, so every method takes `&self`.
pub trait LogFile: Send + Sync {
    /// Write all of `bytes` at the end. On error a prefix of them may have
    /// been written: the caller cuts it back.
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Fill `buf` from byte `position`; an error when the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn size_bytes(&self) -> io::Result<u64>;
    /// Cut (or extend) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: what was written, and the length, survive a power cut.
    fn sync_data(&self) -> io::Result<()>;
}

/// The operating system's files.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFileSystem;

impl FileSystem for OsFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        // An entry that cannot be read is skipped, as a missing one would be.
        Ok(fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn LogFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::Append => options.read(true).append(true),
            OpenMode::AppendOrCreate | OpenMode::Truncate => {
                options.read(true).append(true).create(true)
            }
        };
        let file = options.open(path)?;
        if mode == OpenMode::Truncate {
            // Not O_TRUNC with a write cursor: after a cut back, a cursor past
            // the end would leave a hole of zeros before the next write.
            file.set_len(0)?;
        }
        Ok(Arc::new(file))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        fs::metadata(path)?.modified()
    }
}

impl LogFile for File {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        // Every writable mode opens with O_APPEND: each write lands at the
        // end, wherever a cut left it.
        (&*self).write_all(bytes)
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, position)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// The file system a log uses; the operating system's unless a test says otherwise.
#[derive(Clone, Debug)]
pub struct Files(pub Arc<dyn FileSystem>);

impl Default for Files {
    fn default() -> Self {
        Files(Arc::new(OsFileSystem))
    }
}

impl std::ops::Deref for Files {
    type Target = dyn FileSystem;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// `bytes` as the new content of `path`: write, fsync, rename, fsync the
/// directory, so the file is old or new, never torn (a store's catalog, a
/// replica's vote). Two fsyncs: the broker's stores call it off their loop.
/// The temporary file is `path` with `.tmp` added to its name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}
