//! Catalogs are saved off the loop, and nothing that may depend on one goes
//! out before it is saved: the OK of a DECLARE and the CONFIRM of a publish
//! to the queue just declared wait for the save, in order.

mod common;

use std::time::Duration;

use common::{queue_frames, temp_dir, text};
use zmesh::clock::ManualClock;
use zmesh_broker::queue::{QueueStore, QueueStoreConfig};

#[tokio::test]
async fn replies_after_a_declaration_wait_for_its_catalog_save() {
    let dir = temp_dir("catalog-saves");
    let config = QueueStoreConfig {
        data_dir: dir.clone(),
        clock: ManualClock::new().shared(),
        ..QueueStoreConfig::default()
    };
    let (mut store, _) = QueueStore::open(config.clone()).expect("open the queues");
    let peer = |p: &str| bytes::Bytes::from(p.to_owned());
    let mut sent = store.handle(
        &peer("admin"),
        &queue_frames(&["DECLARE", "d", "jobs", r#"{"durability": "os"}"#]),
    );
    sent.extend(store.handle(
        &peer("p"),
        &queue_frames(&["PUBLISH", "c0", "jobs", "m0", "x"]),
    ));
    sent.extend(store.end_batch());
    assert!(
        sent.is_empty(),
        "nothing goes out before the catalog is saved: {sent:?}"
    );
    assert!(!store.idle());
    while !store.idle() {
        let d = tokio::time::timeout(Duration::from_secs(20), store.disk_done())
            .await
            .expect("the save finishes");
        sent.extend(store.on_disk_done(d));
    }
    let replies: Vec<(String, String)> =
        sent.iter().map(|(to, f)| (text(to), text(&f[2]))).collect();
    assert_eq!(
        replies,
        [
            ("admin".into(), "OK".into()),
            ("p".into(), "CONFIRM".into())
        ]
    );
    drop(store);
    // The declaration is on disk: a reopen knows the queue.
    let (store, report) = QueueStore::open(config).expect("reopen");
    assert_eq!(report.messages, 1);
    assert!(store.core().stats().iter().any(|s| s.name == "jobs"));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cluster's agreed declarations and deletions take the same path as a
/// client's, and what the core refuses comes back as the reason.
#[tokio::test]
async fn agreed_catalog_changes_apply_as_a_client_s_would() {
    let dir = temp_dir("catalog-agreed");
    let config = QueueStoreConfig {
        data_dir: dir.clone(),
        clock: ManualClock::new().shared(),
        ..QueueStoreConfig::default()
    };
    let (mut store, _) = QueueStore::open(config).expect("open the queues");
    let names = |store: &QueueStore| -> Vec<String> {
        let mut n: Vec<String> = store.core().stats().into_iter().map(|s| s.name).collect();
        n.sort();
        n
    };
    let options = br#"{"max_length":5}"#;
    assert_eq!(store.apply_agreed("jobs", Some(options)).0, Ok(()));
    assert_eq!(names(&store), ["jobs", "jobs.dlq"]);
    // Again: the same declaration is no change.
    assert_eq!(store.apply_agreed("jobs", Some(options)).0, Ok(()));
    let (refused, _) = store.apply_agreed("jobs", Some(br#"{"max_length":6}"#));
    assert!(
        refused.as_ref().is_err_and(|r| r.contains("other options")),
        "{refused:?}"
    );
    assert_eq!(store.apply_agreed("jobs", None).0, Ok(()));
    assert_eq!(names(&store), ["jobs.dlq"]);
    let (refused, _) = store.apply_agreed("jobs", None);
    assert!(
        refused.as_ref().is_err_and(|r| r.contains("no queue")),
        "{refused:?}"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
