//! A disk that fails on command, for tests: real files underneath, faults
//! injected at the [`FileSystem`] boundary.
//!
//! - **Full disk**: [`Faults::limit_space`] lets N more bytes be written; the
//!   write that crosses the limit writes what fits (a short write) and fails
//!   with the chosen error (`ENOSPC`, `EFBIG`).
//! - **Failing calls**: [`Faults::fail_next`] fails the next N calls of one
//!   kind ([`Op`]) with `EIO`: an fsync, a cut, an open, a removal. A failed
//!   fsync behaves as Linux's does: the unsynced bytes stay readable, but
//!   they never reach the disk, even when a later fsync succeeds; a power cut
//!   turns them to zeros.
//! - **A slow or stuck disk**: [`Faults::slow_down`] makes every call of one
//!   kind take longer; [`Faults::hold`] blocks them until
//!   [`Faults::release`] (a test sees who does the waiting).
//! - **Crashes**: [`Faults::halt`] makes every call fail, as a process or a
//!   machine that stopped would (so a log being dropped writes nothing more).
//!   [`Faults::restart`] then leaves every file as it is after a kill (the
//!   page cache survives a process), or gives each file what a power cut
//!   leaves: everything synced, plus some of its unsynced bytes, chosen from
//!   a seed (a torn tail).
//!
//! Files are modelled, directories are not: a file created and never synced
//! keeps its entry after a power cut, as it does on ext4 with the log's
//! directory syncs.
//!
//! ```
//! # fn main() -> Result<(), zmesh_log::LogError> {
//! use zmesh_log::faulty::{Faults, Op};
//! let dir = std::env::temp_dir().join(format!("zmesh-faulty-doc-{}", std::process::id()));
//! let faults = Faults::default();
//! let config = zmesh_log::LogConfig { files: faults.files(), ..Default::default() };
//! let (mut log, _) = zmesh_log::Log::open(&dir, config)?;
//! faults.fail_next(Op::Sync, 1);
//! log.append(b"x")?;
//! assert!(log.sync().is_err());
//! assert!(log.append(b"y").is_err()); // a failed fsync poisons the log
//! # drop(log); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::files::{FileSystem, Files, LogFile, OpenMode, OsFileSystem};

/// `ENOSPC`: no space left on the device.
pub const ENOSPC: i32 = 28;
/// `EFBIG`: the file would exceed the size limit (`RLIMIT_FSIZE`).
pub const EFBIG: i32 = 27;
/// `EIO`: the device failed.
pub const EIO: i32 = 5;

/// A kind of call that [`Faults::fail_next`] can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`LogFile::append`] (fails before writing anything).
    Append,
    /// [`LogFile::set_len`].
    SetLen,
    /// [`LogFile::sync_data`].
    Sync,
    /// [`FileSystem::open`] and [`FileSystem::create_dir_all`].
    Open,
    /// Reads: [`LogFile::read_exact_at`], [`LogFile::size_bytes`],
    /// [`FileSystem::read`], [`FileSystem::list_dir`], [`FileSystem::modified`].
    Read,
    /// [`FileSystem::remove_file`].
    Remove,
    /// [`FileSystem::sync_dir`].
    SyncDir,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes that may still be written, and the error past them.
    space: Option<(u64, i32)>,
    failing: HashMap<Op, u32>,
    powered_off: bool,
    /// Per file written through this disk: the length a power cut keeps for sure.
    synced_len: BTreeMap<PathBuf, u64>,
    /// Per file: byte ranges a failed fsync dropped (zeros after a power cut).
    dropped: BTreeMap<PathBuf, Vec<std::ops::Range<u64>>>,
    /// Calls failed so far, by kind (short writes count as `Append`).
    failed: HashMap<Op, u64>,
    /// Added to every call of a kind.
    delay: HashMap<Op, Duration>,
    /// Kinds whose calls wait for a release, and how many wait now.
    held: HashMap<Op, u64>,
}

/// A held call gives up after this long (with `EIO`), so a test whose code
/// waits where it should not fails instead of hanging.
const HOLD_MAX: Duration = Duration::from_secs(30);

/// The control handle of a [`FaultyFileSystem`]; clones control the same disk.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
    /// Wakes held calls at a release.
    released: Arc<Condvar>,
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test thread that panicked holding the lock leaves the state usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file system to put in [`crate::LogConfig::files`].
    pub fn files(&self) -> Files {
        Files(Arc::new(FaultyFileSystem {
            faults: self.clone(),
        }))
    }

    /// Let `bytes` more bytes be appended, then fail with `errno`; `None`
    /// lifts the limit. Cuts give no space back.
    pub fn limit_space(&self, bytes: Option<u64>, errno: i32) {
        self.state().space = bytes.map(|b| (b, errno));
    }

    /// Fail the next `count` calls of `op` with `EIO`.
    pub fn fail_next(&self, op: Op, count: u32) {
        self.state().failing.insert(op, count);
    }

    /// Calls of `op` failed so far.
    pub fn failed(&self, op: Op) -> u64 {
        self.state().failed.get(&op).copied().unwrap_or(0)
    }

    /// Make every later call of `op` take `delay` longer (zero: no delay).
    pub fn slow_down(&self, op: Op, delay: Duration) {
        self.state().delay.insert(op, delay);
    }

    /// Block every later call of `op` until [`Faults::release`].
    pub fn hold(&self, op: Op) {
        self.state().held.entry(op).or_insert(0);
    }

    /// Let calls of `op` held by [`Faults::hold`] go on, and later ones pass.
    pub fn release(&self, op: Op) {
        self.state().held.remove(&op);
        self.released.notify_all();
    }

    /// Calls of `op` blocked by [`Faults::hold`] right now.
    pub fn held(&self, op: Op) -> u64 {
        self.state().held.get(&op).copied().unwrap_or(0)
    }

    /// From now on every call fails, until a restart.
    pub fn halt(&self) {
        self.state().powered_off = true;
        self.released.notify_all();
    }

    /// After [`Faults::halt`], as after a process was killed: every byte
    /// written stays (bytes a failed fsync dropped stay readable until a
    /// power cut); calls work again.
    fn restart_after_kill(&self) {
        self.state().powered_off = false;
    }

    /// After [`Faults::halt`], as after a power cut: leave each file written
    /// since the disk was made with its synced bytes plus `keep(path,
    /// unsynced_len)` of its unsynced ones (capped), with zeros where a failed
    /// fsync dropped bytes; then calls work again. Returns the bytes cut.
    fn restart_after_power_cut(&self, mut keep: impl FnMut(&Path, u64) -> u64) -> io::Result<u64> {
        let mut state = self.state();
        let mut dropped = 0;
        for (path, &synced) in &state.synced_len {
            let file = match std::fs::OpenOptions::new().write(true).open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            let unsynced = len.saturating_sub(synced);
            let kept = keep(path, unsynced).min(unsynced);
            if kept < unsynced {
                file.set_len(synced + kept)?;
                dropped += unsynced - kept;
            }
            let end = synced + kept;
            for range in state.dropped.get(path).into_iter().flatten() {
                let range = range.start.min(end)..range.end.min(end);
                if !range.is_empty() {
                    use std::os::unix::fs::FileExt;
                    file.write_all_at(&vec![0; (range.end - range.start) as usize], range.start)?;
                }
            }
        }
        state.dropped.clear();
        // What survived the cut is on disk now.
        for (path, synced) in state.synced_len.iter_mut() {
            if let Ok(m) = std::fs::metadata(path) {
                *synced = m.len();
            }
        }
        state.powered_off = false;
        Ok(dropped)
    }

    /// After [`Faults::halt`]: clear the failures asked for the old run (a
    /// full disk stays full), then restart as after a kill (`None`) or a
    /// power cut whose torn tails are chosen from `seed`.
    pub fn restart(&self, power_cut_seed: Option<u64>) -> io::Result<()> {
        self.state().failing.clear();
        match power_cut_seed {
            None => self.restart_after_kill(),
            Some(mut seed) => {
                self.restart_after_power_cut(|_, unsynced| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) % (unsynced + 1)
                })?;
            }
        }
        Ok(())
    }

    /// The injected failure for a call of `op`, if any.
    fn check(&self, op: Op) -> io::Result<()> {
        let mut state = self.state();
        if state.powered_off {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        if let Some(left) = state.failing.get_mut(&op)
            && *left > 0
        {
            *left -= 1;
            *state.failed.entry(op).or_default() += 1;
            return Err(io::Error::from_raw_os_error(EIO));
        }
        if state.held.contains_key(&op) {
            *state.held.get_mut(&op).expect("checked") += 1;
            let (mut s, timeout) = self
                .released
                .wait_timeout_while(state, HOLD_MAX, |s| {
                    s.held.contains_key(&op) && !s.powered_off
                })
                .unwrap_or_else(|e| e.into_inner());
            if let Some(waiting) = s.held.get_mut(&op) {
                *waiting -= 1;
            }
            if timeout.timed_out() || s.powered_off {
                return Err(io::Error::from_raw_os_error(EIO));
            }
            state = s;
        }
        let delay = state.delay.get(&op).copied().unwrap_or_default();
        drop(state);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        Ok(())
    }
}

/// Real files behind a [`Faults`] handle.
#[derive(Debug)]
pub struct FaultyFileSystem {
    faults: Faults,
}

struct FaultyFile {
    inner: Arc<dyn LogFile>,
    path: PathBuf,
    faults: Faults,
}

impl FileSystem for FaultyFileSystem {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.faults.check(Op::Open)?;
        OsFileSystem.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.faults.check(Op::Read)?;
        OsFileSystem.list_dir(dir)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn LogFile>> {
        self.faults.check(Op::Open)?;
        let inner = OsFileSystem.open(path, mode)?;
        if mode != OpenMode::Read {
            let len = inner.size_bytes()?;
            let mut state = self.faults.state();
            let synced = state.synced_len.entry(path.to_path_buf()).or_insert(len);
            if mode == OpenMode::Truncate {
                // Emptied, and not yet synced that way: a power cut may
                // leave the old bytes or none; the model keeps none.
                *synced = 0;
            }
            *synced = (*synced).min(len);
        }
        Ok(Arc::new(FaultyFile {
            inner,
            path: path.to_path_buf(),
            faults: self.faults.clone(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.faults.check(Op::Read)?;
        OsFileSystem.read(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.faults.check(Op::Remove)?;
        OsFileSystem.remove_file(path)?;
        self.faults.state().synced_len.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.check(Op::SyncDir)?;
        OsFileSystem.sync_dir(dir)
    }

    fn modified(&self, path: &Path) -> io::Result<SystemTime> {
        self.faults.check(Op::Read)?;
        OsFileSystem.modified(path)
    }
}

impl LogFile for FaultyFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        self.faults.check(Op::Append)?;
        let mut state = self.faults.state();
        if let Some((left, errno)) = &mut state.space
            && (bytes.len() as u64) > *left
        {
            // A short write: what fits lands, then the error.
            let fits = *left as usize;
            let errno = *errno;
            *left = 0;
            *state.failed.entry(Op::Append).or_default() += 1;
            drop(state);
            self.inner.append(&bytes[..fits])?;
            return Err(io::Error::from_raw_os_error(errno));
        }
        if let Some((left, _)) = &mut state.space {
            *left -= bytes.len() as u64;
        }
        drop(state);
        self.inner.append(bytes)
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.faults.check(Op::Read)?;
        self.inner.read_exact_at(buf, position)
    }

    fn size_bytes(&self) -> io::Result<u64> {
        self.faults.check(Op::Read)?;
        self.inner.size_bytes()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check(Op::SetLen)?;
        self.inner.set_len(len)?;
        if let Some(synced) = self.faults.state().synced_len.get_mut(&self.path) {
            // The log cuts above the synced length (a failed write) or in
            // recovery, which syncs right after; the model takes the cut as held.
            *synced = (*synced).min(len);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        // The length read before the sync is covered by it.
        let len = self.inner.size_bytes()?;
        if let Err(e) = self.faults.check(Op::Sync) {
            // The kernel marks the pages clean: they never reach the disk.
            let mut state = self.faults.state();
            let synced = state.synced_len.get(&self.path).copied().unwrap_or(len);
            // (With the power off nothing reaches the disk anyway.)
            if len > synced && !state.powered_off {
                state
                    .dropped
                    .entry(self.path.clone())
                    .or_default()
                    .push(synced..len);
            }
            return Err(e);
        }
        self.inner.sync_data()?;
        if let Some(synced) = self.faults.state().synced_len.get_mut(&self.path) {
            *synced = (*synced).max(len);
        }
        Ok(())
    }
}
