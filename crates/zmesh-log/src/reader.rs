//! Reads on a thread of their own: a slow disk holds up the reads, not the
//! loop that plans them.
//!
//! ```text
//!  owner: log.plan_read(offset) ─read(tag, plan)─►  reader thread:
//!                                                   plan.run(cursor)
//!  owner: on_read(tag, record) ◄──────────────────┘ (in the order asked)
//! ```

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{ReadCursor, Record, RecordRead, Result};

/// A thread that runs planned reads one after another, in the order they
/// were asked for, and reports each result with its tag.
///
/// One cursor serves every read, so reads of ascending offsets (a queue's
/// line) go on from where the last one stopped. The channel to it is
/// unbounded: the owner bounds what it asks for (a queue reads only the
/// bodies of messages its consumers' prefetch windows hold).
///
/// ```
/// # fn main() -> Result<(), zmesh_log::LogError> {
/// let dir = std::env::temp_dir().join(format!("zmesh-reader-doc-{}", std::process::id()));
/// let (mut log, _) = zmesh_log::Log::open(&dir, Default::default())?;
/// log.append(b"body")?;
/// log.flush()?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// let reader = zmesh_log::ReadThread::spawn("doc-read", move |tag, r| { let _ = tx.send((tag, r)); });
/// reader.read("a", log.plan_read(0).unwrap());
/// let (tag, record) = rx.recv().unwrap();
/// assert_eq!((tag, &record?.unwrap().payload[..]), ("a", &b"body"[..]));
/// # drop(log); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct ReadThread<T> {
    tx: Option<mpsc::Sender<(T, RecordRead)>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> ReadThread<T> {
    /// Start the thread, named `name`; `on_read` hears each read's result
    /// on it: the record, `None` when it is not in the log, or the error.
    pub fn spawn(
        name: &str,
        mut on_read: impl FnMut(T, Result<Option<Record>>) + Send + 'static,
    ) -> ReadThread<T> {
        let (tx, rx) = mpsc::channel::<(T, RecordRead)>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut cursor = ReadCursor::default();
                while let Ok((tag, read)) = rx.recv() {
                    on_read(tag, read.run(&mut cursor));
                }
            })
            .expect("spawning a read thread");
        ReadThread {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Run `read` after those asked for before it; its result comes with `tag`.
    pub fn read(&self, tag: T, read: RecordRead) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((tag, read));
        }
    }
}

impl<T> Drop for ReadThread<T> {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the reads already asked for.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
