//! Deliveries whose bodies are read back from the journal off the broker's
//! loop, sent to each consumer in the order the core decided them.
//!
//! A message whose body is kept on disk is delivered in two halves: the core
//! decides the DELIVER (head frames and the journal offset of the body), a
//! [`ReadThread`] reads the body through a view of its segment, and the DELIVER goes out when it is back.
//! Meanwhile the loop routes everything else. Order per consumer holds: a
//! send to a consumer that still waits for a body waits behind it, whether
//! it needs a read itself or not.
//!
//! ```text
//!  core: Send{to, frames, body_at} ──► waiting[to] ──(body read)──► sends
//!                                          │ plan ─► read thread ─┘
//! ```
//!
//! A read that fails (or finds no body) sends nothing: the message goes back
//! in line (`QueueCore::delivery_failed`), as before. A DELIVER whose message
//! was released, redelivered or settled while its body was read is dropped
//! (`QueueCore::is_current_delivery`): it would be a second delivery. The journal keeps every
//! segment from the oldest read in flight on ([`BodyReads::oldest_offset`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use zmesh_log::{Log, LogError, ReadThread, Record};

use super::store::Sends;

/// A read's result, as the read thread reports it.
pub(super) type ReadDone = (u64, Result<Option<Record>, LogError>);

/// One send to a consumer, in the order decided.
struct Waiting {
    frames: Vec<Bytes>,
    /// The read its body waits for (its sequence number); `None`: ready.
    reading: Option<u64>,
}

/// A read in flight: who the body is for and where it is.
struct InFlight {
    to: Bytes,
    offset: u64,
}

/// What a finished read leads to.
pub(super) struct ReadOutcome {
    /// Sends now in order (the body's DELIVER, then what waited behind it).
    pub sends: Sends,
    /// A DELIVER that could not be made: (consumer, journal offset) and why.
    pub failed: Option<(Bytes, u64, String)>,
}

pub(super) struct BodyReads {
    /// Started at the first read: a store whose bodies stay in memory runs no thread.
    thread: Option<ReadThread>,
    done_tx: tokio::sync::mpsc::UnboundedSender<ReadDone>,
    next_seq: u64,
    /// Sends held back per consumer; a key only while its queue is not empty.
    waiting: HashMap<Bytes, VecDeque<Waiting>>,
    /// Reads in flight by sequence number (they finish in this order).
    in_flight: BTreeMap<u64, InFlight>,
    /// Journal offsets read in flight, counted: segments from the lowest on stay.
    offsets: BTreeMap<u64, u32>,
}

impl BodyReads {
    pub fn new(done_tx: tokio::sync::mpsc::UnboundedSender<ReadDone>) -> BodyReads {
        BodyReads {
            thread: None,
            done_tx,
            next_seq: 0,
            waiting: HashMap::new(),
            in_flight: BTreeMap::new(),
            offsets: BTreeMap::new(),
        }
    }

    /// Segments were removed: the read thread's cursor lets go of theirs.
    pub fn segments_removed(&self) {
        if let Some(thread) = &self.thread {
            thread.forget_place();
        }
    }

    /// Nothing is being read.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The lowest journal offset a read in flight needs.
    pub fn oldest_offset(&self) -> Option<u64> {
        self.offsets.keys().next().copied()
    }

    /// Send `frames` to `to`, after the body at `body_at` is read and pushed
    /// when it has one, and after what `to` already waits for. An error is
    /// a body that cannot even be asked for (not in the journal).
    pub fn send(
        &mut self,
        log: &Log,
        to: Bytes,
        frames: Vec<Bytes>,
        body_at: Option<u64>,
        sends: &mut Sends,
    ) -> Result<(), String> {
        let Some(offset) = body_at else {
            if self.waiting.is_empty() {
                // Nothing is being read (most of the time): no lookup.
                sends.push((to, frames));
                return Ok(());
            }
            match self.waiting.get_mut(&to) {
                Some(line) => line.push_back(Waiting {
                    frames,
                    reading: None,
                }),
                None => sends.push((to, frames)),
            }
            return Ok(());
        };
        if offset < log.first_offset() || offset >= log.written_offset() {
            return Err(format!("journal record {offset} is missing"));
        }
        let view = log.view(offset, 1);
        let seq = self.next_seq;
        self.next_seq += 1;
        let done_tx = self.done_tx.clone();
        self.thread
            .get_or_insert_with(|| ReadThread::spawn("zmesh-queue-read"))
            .run(move |cursor| {
                let _ = done_tx.send((seq, view.read_at(cursor, offset)));
            });
        *self.offsets.entry(offset).or_default() += 1;
        self.in_flight.insert(
            seq,
            InFlight {
                to: to.clone(),
                offset,
            },
        );
        self.waiting.entry(to).or_default().push_back(Waiting {
            frames,
            reading: Some(seq),
        });
        Ok(())
    }

    /// A read finished: its DELIVER and what waited behind it go out, in
    /// order. `current` says whether a DELIVER (to, head frames) is still its
    /// message's delivery to that consumer; one that is not is dropped.
    pub fn done(
        &mut self,
        (seq, result): ReadDone,
        current: impl Fn(&Bytes, &[Bytes]) -> bool,
    ) -> ReadOutcome {
        let mut outcome = ReadOutcome {
            sends: Vec::new(),
            failed: None,
        };
        let Some(InFlight { to, offset }) = self.in_flight.remove(&seq) else {
            return outcome;
        };
        match self.offsets.get_mut(&offset) {
            Some(1) => {
                self.offsets.remove(&offset);
            }
            Some(n) => *n -= 1,
            None => debug_assert!(false, "a read in flight counts its offset"),
        }
        let line = self
            .waiting
            .get_mut(&to)
            .expect("a read in flight holds its consumer's line");
        let i = line
            .iter()
            .position(|w| w.reading == Some(seq))
            .expect("a read in flight is in its consumer's line");
        let body = super::journal::body_read_back(offset, result);
        match body {
            _ if !current(&to, &line[i].frames) => {
                // Released, redelivered or settled while it was read: the
                // message is back in line or elsewhere; nothing to send.
                line.remove(i);
            }
            Ok(body) => {
                line[i].frames.push(body);
                line[i].reading = None;
            }
            Err(reason) => {
                // Not sent: the caller puts it back in line.
                line.remove(i);
                outcome.failed = Some((to.clone(), offset, reason));
            }
        }
        while line.front().is_some_and(|w| w.reading.is_none()) {
            let w = line.pop_front().expect("front exists");
            outcome.sends.push((to.clone(), w.frames));
        }
        if line.is_empty() {
            self.waiting.remove(&to);
        }
        outcome
    }
}
