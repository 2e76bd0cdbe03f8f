//! The real queue store (journal, writer, group commit, compaction, replay)
//! on a disk that fails: random publishes to queues of every durability,
//! consumers and acks, a disk that fills and frees up at any byte, failed
//! fsyncs and cuts, process kills and power cuts that tear unsynced bytes,
//! each followed by a reopen. At the end every queue is drained from a
//! reopened store and the sets of message ids are compared: every confirmed
//! message the policy promises to keep and that was not acked is delivered,
//! with its own body, and nothing is delivered that was never published.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use common::{numbered_body, queue_frames, text};
use proptest::prelude::*;
use zmesh::clock::ManualClock;
use zmesh_broker::queue::{QueueCoreConfig, QueueStore, QueueStoreConfig};
use zmesh_log::LogConfig;
use zmesh_log::faulty::{ENOSPC, Faults, Op};

/// The queues, by durability.
const QUEUES: [&str; 3] = ["always", "group", "os"];

#[derive(Clone, Debug)]
enum Step {
    /// Publish `count` messages to queue `queue` in one batch.
    Publish {
        queue: usize,
        count: usize,
    },
    /// A consumer takes up to `prefetch` messages of a queue.
    Consume {
        queue: usize,
        prefetch: u8,
    },
    /// Ack the `i`th held delivery.
    Ack(usize),
    LimitSpace(u64),
    FreeSpace,
    FailSync,
    FailCut,
    /// SIGKILL: everything written stays.
    Kill,
    /// Power cut: unsynced bytes are torn.
    PowerCut(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..3, 1usize..8).prop_map(|(queue, count)| Step::Publish { queue, count }),
        2 => (0usize..3, 1u8..6).prop_map(|(queue, prefetch)| Step::Consume { queue, prefetch }),
        4 => any::<usize>().prop_map(Step::Ack),
        1 => (0u64..6000).prop_map(Step::LimitSpace),
        1 => Just(Step::FreeSpace),
        1 => Just(Step::FailSync),
        1 => Just(Step::FailCut),
        1 => Just(Step::Kill),
        1 => any::<u64>().prop_map(Step::PowerCut),
    ]
}

/// The store as the broker's loop drives it, on a runtime for its group commits.
struct Harness {
    config: QueueStoreConfig,
    faults: Faults,
    store: Option<QueueStore>,
    rt: tokio::runtime::Runtime,
    next_id: u64,
    /// Publish corr → (id, queue) until answered.
    unanswered: BTreeMap<String, (u64, usize)>,
    published: BTreeMap<u64, usize>,
    /// Confirmed ids the store must keep (not acked, not lost to a power cut
    /// their policy does not survive).
    must_keep: BTreeSet<u64>,
    /// Deliveries held by the one consumer: (queue name, tag, id).
    held: Vec<(String, String, u64)>,
    consumers: u32,
}

impl Harness {
    fn store(&mut self) -> &mut QueueStore {
        self.store.as_mut().expect("open")
    }

    fn open(&mut self) {
        let (store, _) = QueueStore::open(self.config.clone()).expect("reopen the queues");
        self.store = Some(store);
        self.held.clear();
    }

    fn send(&mut self, from: &str, parts: &[&str]) -> Result<(), TestCaseError> {
        let sends = self
            .store()
            .handle(&Bytes::from(from.to_owned()), &queue_frames(parts));
        self.take(sends)
    }

    /// End the batch and deliver group commits until nothing waits for one.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        let sends = self.store().end_batch();
        self.take(sends)?;
        while !self.store().idle() {
            let store = self.store.as_mut().expect("open");
            let result = self
                .rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), store.disk_done()).await
                })
                .expect("records wait for a sync nobody asked for");
            let sends = self.store().on_disk_done(result);
            self.take(sends)?;
            let sends = self.store().end_batch();
            self.take(sends)?;
        }
        Ok(())
    }

    fn take(&mut self, sends: Vec<(Bytes, Vec<Bytes>)>) -> Result<(), TestCaseError> {
        for (to, f) in sends {
            match &f[2][..] {
                b"CONFIRM" => {
                    let corr = text(&f[3]);
                    let (id, _) = self.unanswered.remove(&corr).ok_or_else(|| {
                        TestCaseError::fail(format!("CONFIRM {corr} answers nothing waiting"))
                    })?;
                    self.must_keep.insert(id);
                }
                b"ERROR" if to == "p" => {
                    let corr = text(&f[3]);
                    prop_assert!(
                        self.unanswered.remove(&corr).is_some(),
                        "ERROR {} answers nothing waiting",
                        corr
                    );
                }
                b"DELIVER" => {
                    let queue = text(&f[3]);
                    let id: u64 = text(&f[6]).parse().expect("numbered msg id");
                    prop_assert_eq!(
                        text(&f[7]),
                        numbered_body(id),
                        "the body stored with id {}",
                        id
                    );
                    prop_assert!(self.published.contains_key(&id), "{} never published", id);
                    self.held.push((queue, text(&f[4]), id));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn crash(&mut self, power_cut: Option<u64>) -> Result<(), TestCaseError> {
        self.faults.halt();
        drop(self.store.take());
        // Publishes in flight lose their connection: no answer will come.
        self.unanswered.clear();
        self.faults.restart(power_cut).expect("restart the disk");
        if power_cut.is_some() {
            // `os` promises nothing against a power cut.
            let published = &self.published;
            self.must_keep.retain(|id| QUEUES[published[id]] != "os");
        }
        self.open();
        Ok(())
    }
}

fn run(steps: Vec<Step>, memory_bytes: u64) -> Result<(), TestCaseError> {
    let dir = std::env::temp_dir().join(format!(
        "zmesh-queue-faults-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let faults = Faults::default();
    let config = QueueStoreConfig {
        data_dir: dir.clone(),
        log: LogConfig {
            segment_bytes_max: 4096,
            index_interval_bytes: 256,
            write_buffer_bytes: 1024,
            files: faults.files(),
            ..LogConfig::default()
        },
        core: QueueCoreConfig {
            bytes_max: memory_bytes,
            ..QueueCoreConfig::default()
        },
        clock: std::sync::Arc::new(ManualClock::new()),
        ..QueueStoreConfig::default()
    };
    let mut h = Harness {
        config,
        faults,
        store: None,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap(),
        next_id: 0,
        unanswered: BTreeMap::new(),
        published: BTreeMap::new(),
        must_keep: BTreeSet::new(),
        held: Vec::new(),
        consumers: 0,
    };
    h.open();
    for q in QUEUES {
        h.send(
            "admin",
            &["DECLARE", "d", q, &format!(r#"{{"durability": "{q}"}}"#)],
        )?;
        h.settle()?;
    }
    for step in steps {
        match step {
            Step::Publish { queue, count } => {
                for _ in 0..count {
                    let id = h.next_id;
                    h.next_id += 1;
                    let corr = id.to_string();
                    h.unanswered.insert(corr.clone(), (id, queue));
                    h.published.insert(id, queue);
                    h.send(
                        "p",
                        &["PUBLISH", &corr, QUEUES[queue], &corr, &numbered_body(id)],
                    )?;
                }
                h.settle()?;
            }
            Step::Consume { queue, prefetch } => {
                h.consumers += 1;
                let corr = format!("c{}", h.consumers);
                h.send(
                    "c",
                    &["CONSUME", &corr, QUEUES[queue], &prefetch.to_string()],
                )?;
                h.settle()?;
            }
            Step::Ack(i) => {
                if !h.held.is_empty() {
                    let (queue, tag, id) = h.held.remove(i % h.held.len());
                    h.send("c", &["ACK", &queue, &tag])?;
                    h.settle()?;
                    // Acked: the store may forget it (an ack is not fsynced,
                    // so it may also come back).
                    h.must_keep.remove(&id);
                }
            }
            Step::LimitSpace(bytes) => h.faults.limit_space(Some(bytes), ENOSPC),
            Step::FreeSpace => h.faults.limit_space(None, ENOSPC),
            Step::FailSync => h.faults.fail_next(Op::Sync, 1),
            Step::FailCut => h.faults.fail_next(Op::SetLen, 1),
            Step::Kill => h.crash(None)?,
            Step::PowerCut(seed) => h.crash(Some(seed))?,
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
    h.crash(None)?;

    // Drain every queue (and its dead letters) from the reopened store.
    let mut recovered = BTreeSet::new();
    let names: Vec<String> = h
        .store()
        .core()
        .stats()
        .into_iter()
        .map(|s| s.name)
        .collect();
    for name in &names {
        h.send("drain", &["CONSUME", "all", name, "1000"])?;
    }
    loop {
        h.settle()?;
        let held = std::mem::take(&mut h.held);
        if held.is_empty() {
            break;
        }
        for (queue, tag, id) in held {
            prop_assert!(recovered.insert(id), "{} delivered twice", id);
            h.send("drain", &["ACK", &queue, &tag])?;
        }
    }
    let missing: Vec<u64> = h.must_keep.difference(&recovered).copied().collect();
    prop_assert!(missing.is_empty(), "confirmed and lost: {:?}", missing);
    drop(h.store.take());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn confirmed_messages_survive_a_failing_disk_kills_and_power_cuts(
        steps in prop::collection::vec(step(), 1..80),
        // Bodies kept in memory, or read back from the journal.
        memory_bytes in prop_oneof![Just(u64::MAX), Just(0u64)],
    ) {
        run(steps, memory_bytes)?;
    }
}
