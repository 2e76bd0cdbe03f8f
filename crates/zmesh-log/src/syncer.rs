//! Group commit: one thread that runs `fdatasync` for everyone.
//!
//! The writer keeps appending and flushing while a sync runs; each sync covers
//! everything written before it started. So under load one `fdatasync`
//! confirms a whole batch, and throughput no longer collapses to the disk's
//! fsync rate.
//!
//! ```text
//!  writer:  append append flush ─request(file, offset)─►  syncer thread:
//!                                                          wait ≤ max_delay_ms or max_bytes
//!                                                          fdatasync(file)
//!  writer: confirm records < offset ◄──on_durable(offset)─┘
//! ```

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::LogFile;

/// Ask for everything written to `file` before `offset` to be made durable.
struct SyncRequest {
    /// Which log (one syncer may serve several).
    tag: u64,
    file: Arc<dyn LogFile>,
    offset: u64,
    bytes: u64,
    /// A record waits that must not wait for others (`always`): sync now.
    at_once: bool,
}

/// A background thread running group commits.
///
/// ```
/// # fn main() -> Result<(), zmesh_log::LogError> {
/// use std::sync::mpsc;
/// let dir = std::env::temp_dir().join(format!("zmesh-syncer-doc-{}", std::process::id()));
/// let (mut log, _) = zmesh_log::Log::open(&dir, Default::default())?;
/// let (tx, rx) = mpsc::channel();
/// let syncer = zmesh_log::Syncer::spawn(1, 1 << 20, move |tag, r| { let _ = tx.send((tag, r)); });
/// log.append(b"x")?;
/// log.flush()?;
/// let (file, offset) = log.sync_target();
/// syncer.request(7, file, offset, 21, false);
/// let (tag, result) = rx.recv().unwrap();
/// assert_eq!((tag, result.unwrap()), (7, 1));
/// # drop(log); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct Syncer {
    tx: Option<mpsc::Sender<SyncRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Start the thread. `on_durable` hears `(tag, Ok(offset))` when every
    /// record of log `tag` before `offset` is on stable storage, or the error
    /// of a failed sync.
    pub fn spawn(
        max_delay_ms: u64,
        max_bytes: u64,
        mut on_durable: impl FnMut(u64, std::io::Result<u64>) + Send + 'static,
    ) -> Syncer {
        let (tx, rx) = mpsc::channel::<SyncRequest>();
        let thread = std::thread::Builder::new()
            .name("zmesh-log-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut bytes = first.bytes;
                    // Latest (file, offset) per log; usually one entry.
                    let mut targets: Vec<(u64, Arc<dyn LogFile>, u64)> =
                        vec![(first.tag, first.file, first.offset)];
                    let deadline = Instant::now() + Duration::from_millis(max_delay_ms);
                    // Gather what else arrives before the delay ends or the
                    // bytes fill up; with no delay, what has already arrived.
                    let mut at_once = first.at_once;
                    while bytes < max_bytes {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let next = if at_once || left.is_zero() {
                            rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
                        } else {
                            rx.recv_timeout(left)
                        };
                        let Ok(r) = next else { break };
                        bytes += r.bytes;
                        at_once |= r.at_once;
                        match targets.iter_mut().find(|t| t.0 == r.tag) {
                            Some(t) => {
                                t.1 = r.file;
                                t.2 = t.2.max(r.offset);
                            }
                            None => targets.push((r.tag, r.file, r.offset)),
                        }
                    }
                    // Earlier segments were synced when they were sealed, so
                    // syncing the newest file covers every offset before `offset`.
                    for (tag, file, offset) in targets {
                        on_durable(tag, file.sync_data().map(|()| offset));
                    }
                }
            })
            .expect("spawning the sync thread");
        Syncer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Ask for a sync covering everything before `offset` in `file` of log
    /// `tag`; `bytes` is how much was written since the previous request.
    /// `at_once` skips the gathering delay (a record that must be on disk
    /// as soon as it can be: `always`); requests already queued still ride
    /// along.
    pub fn request(
        &self,
        tag: u64,
        file: Arc<dyn LogFile>,
        offset: u64,
        bytes: u64,
        at_once: bool,
    ) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(SyncRequest {
                tag,
                file,
                offset,
                bytes,
                at_once,
            });
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its last sync.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
