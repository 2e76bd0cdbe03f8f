//! JSON files (catalogs, durable positions) saved off the broker's loop.
//!
//! Saving a file atomically costs two fsyncs; on a slow disk that is
//! a stall for every product the loop serves. [`Saves`] serializes on the
//! loop (cheap, and the value is the one of that moment) and writes on a
//! thread of its own, one file at a time, in the order asked.
//!
//! - **One save per file in flight**, and at most one waiting behind it: a
//!   newer value of the same file replaces the waiting one (the file only
//!   ever needs its latest value), so a disk slower than the saves asked
//!   for costs no memory.
//! - **A catalog holds the store's sends** ([`Saves::pass`]): a reply or
//!   confirm decided after a declaration may depend on it (a publish to a
//!   queue just declared), so what the store sends waits until every
//!   catalog save asked for before it was decided is done, and no longer
//!   (each catalog save has a generation; sends wait for the newest one of
//!   their moment, so a stream of declarations does not hold everything
//!   until it stops). Durable positions hold nothing: one saved late only
//!   means a redelivery after a crash.
//! - A failed save is logged; the file keeps its previous value.
//! - A deleted stream's directory goes after the catalog without the stream
//!   is saved ([`Saves::remove_dir_when_saved`]), on the same thread.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::Sends;

/// A save finished: which file, and how it went.
#[derive(Debug)]
pub struct SaveDone {
    path: PathBuf,
    result: std::io::Result<()>,
}

/// One file's saves: the one in flight, and the newest value waiting.
struct FileSaves {
    /// The catalog generations the save in flight makes durable.
    in_flight: Vec<u64>,
    /// The newest value waiting, and the generations it makes durable (its
    /// own and those of the values it replaced).
    waiting: Option<(Vec<u8>, Vec<u64>)>,
}

/// Work for the save thread.
enum Job {
    /// A file and its new content.
    Save(PathBuf, Vec<u8>),
    /// A directory to remove (a deleted stream's log), once the catalog
    /// without it is saved.
    RemoveDir(PathBuf),
}

/// Saves JSON files on a thread of its own; see the module docs.
pub struct Saves {
    thread: Option<(mpsc::Sender<Job>, JoinHandle<()>)>,
    done_tx: tokio::sync::mpsc::UnboundedSender<SaveDone>,
    /// Files with a save in flight.
    busy: HashMap<PathBuf, FileSaves>,
    /// Generations given to catalog saves so far.
    asked: u64,
    /// Catalog generations not yet on disk.
    outstanding: BTreeSet<u64>,
    /// The store's sends decided while a catalog save was in flight, in
    /// order, each batch with the generation it waits for (bounded by
    /// publish windows, prefetch and credit: nothing is confirmed or
    /// delivered meanwhile).
    held: VecDeque<(u64, Sends)>,
    /// Directories to remove once the catalog generation with them gone
    /// is saved: (generation, directory).
    removals: Vec<(u64, PathBuf)>,
}

impl Saves {
    /// Saves whose completions are sent to `done_tx`, to come back through
    /// [`Saves::done`].
    pub fn new(done_tx: tokio::sync::mpsc::UnboundedSender<SaveDone>) -> Saves {
        Saves {
            thread: None,
            done_tx,
            busy: HashMap::new(),
            asked: 0,
            outstanding: BTreeSet::new(),
            held: VecDeque::new(),
            removals: Vec::new(),
        }
    }

    /// Save `value` to `path` (write, fsync, rename, fsync the directory);
    /// with `holds_sends`, the store holds its sends until it is done.
    pub fn save(&mut self, path: PathBuf, value: &impl serde::Serialize, holds_sends: bool) {
        let bytes = serde_json::to_vec_pretty(value).expect("serializes");
        let mut generations = Vec::new();
        if holds_sends {
            self.asked += 1;
            self.outstanding.insert(self.asked);
            generations.push(self.asked);
        }
        if let Some(file) = self.busy.get_mut(&path) {
            // The value waiting is never written: this one makes its
            // generations durable too.
            if let Some((_, replaced)) = file.waiting.take() {
                generations.extend(replaced);
            }
            file.waiting = Some((bytes, generations));
            return;
        }
        self.busy.insert(
            path.clone(),
            FileSaves {
                in_flight: generations,
                waiting: None,
            },
        );
        self.start(path, bytes);
    }

    fn start(&mut self, path: PathBuf, bytes: Vec<u8>) {
        self.send(Job::Save(path, bytes));
    }

    fn send(&mut self, job: Job) {
        let (tx, _) = self.thread.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let done_tx = self.done_tx.clone();
            let thread = std::thread::Builder::new()
                .name("zmesh-save".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        match job {
                            Job::Save(path, bytes) => {
                                let result = zmesh_log::write_atomically(&path, &bytes);
                                let _ = done_tx.send(SaveDone { path, result });
                            }
                            Job::RemoveDir(dir) => remove_dir(&dir),
                        }
                    }
                })
                .expect("spawning the save thread");
            (tx, thread)
        });
        let _ = tx.send(job);
    }

    /// Remove `dir` (a deleted stream's log) once every catalog save asked
    /// for so far is done: a crash before that finds the stream and its log
    /// both there, never the stream without its log.
    pub fn remove_dir_when_saved(&mut self, dir: PathBuf) {
        if self.holding() {
            self.removals.push((self.asked, dir));
        } else {
            self.send(Job::RemoveDir(dir));
        }
    }

    /// A save finished: the next value of its file, if one waits, goes.
    pub fn done(&mut self, done: SaveDone) {
        if let Err(e) = &done.result {
            tracing::error!(error = %e, path = %done.path.display(), "saving failed; the file keeps its previous value");
        }
        let Some(file) = self.busy.get_mut(&done.path) else {
            debug_assert!(false, "a save in flight is tracked");
            return;
        };
        // Done, well or not (a failure is logged above): what waited on
        // these generations goes.
        for generation in file.in_flight.drain(..) {
            self.outstanding.remove(&generation);
        }
        match file.waiting.take() {
            Some((bytes, generations)) => {
                file.in_flight = generations;
                self.start(done.path, bytes);
            }
            None => {
                self.busy.remove(&done.path);
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.removals)
            .into_iter()
            .partition(|(generation, _)| self.durable(*generation));
        self.removals = later;
        for (_, dir) in due {
            self.send(Job::RemoveDir(dir));
        }
    }

    /// Every catalog save up to `generation` is done.
    fn durable(&self, generation: u64) -> bool {
        self.outstanding.first().is_none_or(|&g| g > generation)
    }

    /// A catalog save asked for so far is in flight or waiting: sends
    /// decided now are held.
    pub fn holding(&self) -> bool {
        !self.durable(self.asked)
    }

    /// What of the store's sends goes out now: those held whose catalog
    /// saves are done, in order, then `sends`, unless a catalog save asked
    /// for before them is still in flight (a reply may depend on it).
    pub fn pass(&mut self, sends: Sends) -> Sends {
        let mut out = Vec::new();
        while let Some(&(generation, _)) = self.held.front() {
            if !self.durable(generation) {
                break;
            }
            out.extend(self.held.pop_front().expect("front exists").1);
        }
        if self.held.is_empty() && !self.holding() {
            if out.is_empty() {
                return sends;
            }
            out.extend(sends);
        } else if !sends.is_empty() {
            self.held.push_back((self.asked, sends));
        }
        out
    }

    /// No save in flight, and no send held.
    pub fn idle(&self) -> bool {
        self.busy.is_empty() && self.held.is_empty() && self.removals.is_empty()
    }
}

impl Drop for Saves {
    fn drop(&mut self) {
        // The saves already asked for finish before the store is gone; the
        // waiting ones are written here (a shutdown keeps the latest values).
        if let Some((tx, thread)) = self.thread.take() {
            drop(tx);
            let _ = thread.join();
        }
        for (path, file) in self.busy.drain() {
            if let Some((bytes, _)) = file.waiting
                && let Err(e) = zmesh_log::write_atomically(&path, &bytes)
            {
                tracing::error!(error = %e, path = %path.display(), "saving failed at shutdown");
            }
        }
        // The catalogs are as saved as they will be: their removals go too.
        for (_, dir) in self.removals.drain(..) {
            remove_dir(&dir);
        }
    }
}

fn remove_dir(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(error = %e, dir = %dir.display(), "removing a deleted log failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zmesh-saves-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Saves of one file in a row: one in flight, the newest waiting (the
    /// ones between are never written), and the file ends with the newest.
    /// Only a catalog save holds the sends.
    #[test]
    fn a_file_saved_again_while_in_flight_keeps_only_the_newest_waiting() {
        let d = dir("coalesce");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut saves = Saves::new(tx);
        let (catalog, positions) = (d.join("catalog.json"), d.join("positions.json"));
        saves.save(positions.clone(), &1, false);
        assert!(!saves.holding(), "positions hold nothing");
        for v in 0..5 {
            saves.save(catalog.clone(), &v, true);
        }
        assert!(saves.holding());
        let mut done = 0;
        while !saves.idle() {
            saves.done(rx.blocking_recv().expect("a save finishes"));
            done += 1;
        }
        assert_eq!(done, 3, "positions, the first catalog, the newest catalog");
        assert!(!saves.holding());
        assert_eq!(std::fs::read_to_string(&catalog).unwrap(), "4");
        assert_eq!(std::fs::read_to_string(&positions).unwrap(), "1");
        // A value still waiting at the end is written when the saves go.
        saves.save(catalog.clone(), &5, true);
        saves.save(catalog.clone(), &6, true);
        drop(saves);
        assert_eq!(std::fs::read_to_string(&catalog).unwrap(), "6");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A deleted log's directory goes only once the catalog without it is
    /// saved.
    #[test]
    fn a_directory_is_removed_after_the_catalog_save_before_it() {
        let d = dir("remove");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut saves = Saves::new(tx);
        let log_dir = d.join("7");
        std::fs::create_dir_all(&log_dir).unwrap();
        saves.save(d.join("catalog.json"), &1, true);
        saves.remove_dir_when_saved(log_dir.clone());
        assert!(!saves.idle());
        let first = rx.blocking_recv().unwrap();
        assert!(log_dir.exists(), "not before the catalog save is handled");
        saves.done(first);
        // A later save runs after the removal on the same thread.
        saves.save(d.join("positions.json"), &1, false);
        saves.done(rx.blocking_recv().unwrap());
        assert!(!log_dir.exists());
        assert!(saves.idle());
        drop(saves);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Sends wait for the catalog saves asked for before them, not for
    /// later ones: a stream of declarations does not hold everything.
    #[test]
    fn sends_wait_for_the_saves_before_them_only() {
        let d = dir("generations");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut saves = Saves::new(tx);
        let catalog = d.join("catalog.json");
        let send = |name: &str| (bytes::Bytes::from(name.to_owned()), Vec::new());
        assert_eq!(saves.pass(vec![send("free")]), vec![send("free")]);
        saves.save(catalog.clone(), &1, true);
        assert!(saves.pass(vec![send("after 1")]).is_empty());
        saves.save(catalog.clone(), &2, true);
        assert!(saves.pass(vec![send("after 2")]).is_empty());
        saves.done(rx.blocking_recv().unwrap());
        assert_eq!(saves.pass(Vec::new()), vec![send("after 1")]);
        assert!(saves.pass(vec![send("still after 2")]).is_empty());
        saves.done(rx.blocking_recv().unwrap());
        assert_eq!(
            saves.pass(Vec::new()),
            vec![send("after 2"), send("still after 2")]
        );
        assert!(saves.idle());
        drop(saves);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
