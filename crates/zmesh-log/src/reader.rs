//! Reads on a thread of their own: a slow disk holds up the reads, not the
//! loop that asks for them.
//!
//! ```text
//!  owner: view = log.view(from, n) ─run(job)─►  reader thread:
//!                                               job(cursor): view.read_at(cursor, …)
//!  owner: the job's result ◄──(its channel)──┘  (jobs run in the order asked)
//! ```

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::ReadCursor;

/// A read to run: it reads through a [`crate::LogView`] it owns and sends
/// its result wherever its owner listens.
type Job = Box<dyn FnOnce(&mut ReadCursor) + Send>;

/// A thread that runs reads one after another, in the order asked for.
///
/// One cursor serves every job, so reads of ascending offsets (a queue's
/// line) go on from where the last one stopped. The channel to it is
/// unbounded: the owner bounds what it asks for (a queue reads only the
/// bodies of messages its consumers' prefetch windows hold; a stream, one
/// fetch per subscription at a time).
///
/// ```
/// # fn main() -> Result<(), zmesh_log::LogError> {
/// let dir = std::env::temp_dir().join(format!("zmesh-reader-doc-{}", std::process::id()));
/// let (mut log, _) = zmesh_log::Log::open(&dir, Default::default())?;
/// log.append(b"body")?;
/// log.flush()?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// let reader = zmesh_log::ReadThread::spawn("doc-read");
/// let view = log.view(0, 1);
/// reader.run(move |cursor| { let _ = tx.send(view.read_at(cursor, 0)); });
/// assert_eq!(&rx.recv().unwrap()?.unwrap().payload[..], b"body");
/// # drop(log); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct ReadThread {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl ReadThread {
    /// Start the thread, named `name`.
    pub fn spawn(name: &str) -> ReadThread {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut cursor = ReadCursor::default();
                while let Ok(job) = rx.recv() {
                    job(&mut cursor);
                }
            })
            .expect("spawning a read thread");
        ReadThread {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Run `job` after those asked for before it.
    pub fn run(&self, job: impl FnOnce(&mut ReadCursor) + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }

    /// After the jobs asked for so far, forget where the cursor is: it may
    /// hold a removed segment open (and its disk space).
    pub fn forget_place(&self) {
        self.run(|cursor| *cursor = ReadCursor::default());
    }
}

impl Drop for ReadThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the jobs already asked for.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
