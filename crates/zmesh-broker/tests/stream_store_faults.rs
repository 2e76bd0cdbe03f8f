//! The real stream store (one log per stream, the durable writer, group
//! commit, replay) on a disk that fails: windows of publishes to streams of
//! every durability, a disk that fills and frees up at any byte, failed
//! fsyncs and cuts, process kills and power cuts that tear unsynced bytes,
//! each followed by a reopen. Every sequence answered STORED must, at the end,
//! hold its own message; no sequence is answered STORED for two messages.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{numbered_body, stream_frames, text};
use proptest::prelude::*;
use zmesh::clock::ManualClock;
use zmesh_broker::stream::{StreamStore, StreamStoreConfig};
use zmesh_log::LogConfig;
use zmesh_log::faulty::{ENOSPC, Faults, Op};

/// The streams, by durability.
const STREAMS: [&str; 3] = ["always", "group", "os"];

#[derive(Clone, Debug)]
enum Step {
    /// Publish `count` messages to one stream in one batch.
    Publish {
        stream: usize,
        count: usize,
    },
    LimitSpace(u64),
    FreeSpace,
    FailSync,
    FailCut,
    Kill,
    PowerCut(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..3, 1usize..10).prop_map(|(stream, count)| Step::Publish { stream, count }),
        1 => (0u64..6000).prop_map(Step::LimitSpace),
        1 => Just(Step::FreeSpace),
        1 => Just(Step::FailSync),
        1 => Just(Step::FailCut),
        1 => Just(Step::Kill),
        1 => any::<u64>().prop_map(Step::PowerCut),
    ]
}

struct Harness {
    config: StreamStoreConfig,
    faults: Faults,
    store: Option<StreamStore>,
    rt: tokio::runtime::Runtime,
    /// Publish corr (the message id) → stream, until answered.
    unanswered: BTreeMap<u64, usize>,
    /// (stream, seq) → the message STORED there that must be kept.
    must_keep: BTreeMap<(usize, u64), u64>,
    /// MSGs received by the reader: (stream, seq) → body.
    read: BTreeMap<(usize, u64), String>,
}

impl Harness {
    fn store(&mut self) -> &mut StreamStore {
        self.store.as_mut().expect("open")
    }

    fn send(&mut self, from: &str, parts: &[&str]) -> Result<(), TestCaseError> {
        let sends = self
            .store()
            .handle(&Bytes::from(from.to_owned()), &stream_frames(parts));
        self.take(sends)
    }

    fn settle(&mut self) -> Result<(), TestCaseError> {
        let sends = self.store().end_batch();
        self.take(sends)?;
        while !self.store().idle() {
            let store = self.store.as_mut().expect("open");
            let done = self
                .rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), store.disk_done()).await
                })
                .expect("records wait for a sync or a read nobody asked for");
            let sends = self.store().on_disk_done(done);
            self.take(sends)?;
            let sends = self.store().end_batch();
            self.take(sends)?;
        }
        Ok(())
    }

    fn take(&mut self, sends: Vec<(Bytes, Vec<Bytes>)>) -> Result<(), TestCaseError> {
        for (to, f) in sends {
            match &f[2][..] {
                b"STORED" => {
                    let id: u64 = text(&f[3]).parse().expect("numbered corr");
                    let seq: u64 = text(&f[4]).parse().expect("a seq");
                    let stream = self.unanswered.remove(&id).ok_or_else(|| {
                        TestCaseError::fail(format!("STORED {id} answers nothing waiting"))
                    })?;
                    if let Some(other) = self.must_keep.insert((stream, seq), id) {
                        return Err(TestCaseError::fail(format!(
                            "{} seq {seq} STORED for both {other} and {id}",
                            STREAMS[stream]
                        )));
                    }
                }
                b"ERROR" if to == "p" => {
                    let id: u64 = text(&f[3]).parse().expect("numbered corr");
                    prop_assert!(
                        self.unanswered.remove(&id).is_some(),
                        "ERROR {} answers nothing waiting",
                        id
                    );
                }
                b"MSG" => {
                    let stream = STREAMS
                        .iter()
                        .position(|s| *s == text(&f[3]))
                        .expect("a subscription named after its stream");
                    let seq: u64 = text(&f[4]).parse().expect("a seq");
                    self.read.insert((stream, seq), text(&f[f.len() - 1]));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn crash(&mut self, power_cut: Option<u64>) {
        self.faults.halt();
        drop(self.store.take());
        self.unanswered.clear();
        self.faults.restart(power_cut).expect("restart the disk");
        if power_cut.is_some() {
            // `os` promises nothing against a power cut: its sequences may
            // be given out again.
            self.must_keep
                .retain(|(stream, _), _| STREAMS[*stream] != "os");
        }
        let (store, _) = StreamStore::open(self.config.clone()).expect("reopen the streams");
        self.store = Some(store);
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "zmesh-stream-faults-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let faults = Faults::default();
    let config = StreamStoreConfig {
        data_dir: dir.clone(),
        log: LogConfig {
            segment_bytes_max: 4096,
            index_interval_bytes: 256,
            write_buffer_bytes: 1024,
            files: faults.files(),
            ..LogConfig::default()
        },
        clock: std::sync::Arc::new(ManualClock::new()),
        ..StreamStoreConfig::default()
    };
    let (store, _) = StreamStore::open(config.clone()).expect("open the streams");
    let mut h = Harness {
        config,
        faults,
        store: Some(store),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap(),
        unanswered: BTreeMap::new(),
        must_keep: BTreeMap::new(),
        read: BTreeMap::new(),
    };
    for s in STREAMS {
        h.send(
            "admin",
            &["CREATE", "c", s, &format!(r#"{{"durability": "{s}"}}"#)],
        )?;
        h.settle()?;
    }
    let mut next_id = 0u64;
    for step in steps {
        match step {
            Step::Publish { stream, count } => {
                for _ in 0..count {
                    let id = next_id;
                    next_id += 1;
                    h.unanswered.insert(id, stream);
                    let subject = format!("{}.x", STREAMS[stream]);
                    h.send(
                        "p",
                        &[
                            "PUBLISH",
                            &id.to_string(),
                            STREAMS[stream],
                            &subject,
                            &numbered_body(id),
                        ],
                    )?;
                }
                h.settle()?;
            }
            Step::LimitSpace(bytes) => h.faults.limit_space(Some(bytes), ENOSPC),
            Step::FreeSpace => h.faults.limit_space(None, ENOSPC),
            Step::FailSync => h.faults.fail_next(Op::Sync, 1),
            Step::FailCut => h.faults.fail_next(Op::SetLen, 1),
            Step::Kill => h.crash(None),
            Step::PowerCut(seed) => h.crash(Some(seed)),
        }
    }
    h.faults.limit_space(None, ENOSPC);
    h.faults.fail_next(Op::Sync, 0);
    h.faults.fail_next(Op::SetLen, 0);
    h.settle()?;
    prop_assert!(
        h.unanswered.is_empty(),
        "publishes never answered: {:?}",
        h.unanswered
    );
    h.crash(None);

    // Read every stream from its first message.
    for s in STREAMS {
        h.send("reader", &["SUBSCRIBE", "r", s, s, ">", "first", "100000"])?;
    }
    h.settle()?;
    for ((stream, seq), id) in &h.must_keep {
        let found = h.read.get(&(*stream, *seq)).cloned();
        prop_assert_eq!(
            found,
            Some(numbered_body(*id)),
            "{} seq {} STORED for {}",
            STREAMS[*stream],
            seq,
            id
        );
    }
    drop(h.store.take());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn stored_sequences_hold_their_messages_through_a_failing_disk_kills_and_power_cuts(
        steps in prop::collection::vec(step(), 1..80),
    ) {
        run(steps)?;
    }
}
