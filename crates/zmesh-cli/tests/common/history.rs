//! A run against a cluster read as Jepsen's total queue: what publishers
//! tried and had confirmed, what consumers were handed, and the verdict by
//! sets of ids.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zmesh_client::queue::{QueueClient, QueueError};

/// What a publisher under test did: every id it tried, and those confirmed.
#[derive(Default)]
pub struct Published {
    pub tried: BTreeSet<String>,
    pub confirmed: BTreeSet<String>,
}

/// Publishes `m-0`, `m-1`, ... to `queue` one after the other until `stop`,
/// each until confirmed (a refusal while the cluster elects a leader is
/// tried again with the same id); `confirmed` counts them as they come.
pub fn publish_until_stopped(
    client: QueueClient,
    queue: &'static str,
    published: Arc<Mutex<Published>>,
    confirmed: tokio::sync::watch::Sender<usize>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0.. {
            let id = format!("m-{i}");
            published.lock().unwrap().tried.insert(id.clone());
            loop {
                if *stop.borrow() {
                    return;
                }
                match client.publish_with_id(queue, id.clone(), id.clone()).await {
                    Ok(_) => break,
                    Err(QueueError::Refused { code, reason }) if code >= 500 => {
                        // Not stored, or its fate unknown: the same id again
                        // (a copy is a duplicate, counted, never a loss).
                        eprintln!("{id}: {code} {reason}; again");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("{id}: {e}"),
                }
            }
            published.lock().unwrap().confirmed.insert(id);
            confirmed.send_modify(|n| *n += 1);
        }
    })
}

/// What consumers under test were handed: how often each id came.
#[derive(Default)]
pub struct Delivered {
    pub times: BTreeMap<String, u32>,
    /// Ids a delivery said were delivered before.
    pub marked_again: BTreeSet<String>,
}

/// Consumes `queue` with `client` until aborted, noting every delivery in
/// `delivered` and telling `count`; acks each, except the first delivery
/// of an id `hold` picks, which stays delivered and unacked (it comes
/// again after a failover, and is acked then).
pub fn consume_into(
    client: QueueClient,
    queue: &'static str,
    hold: impl Fn(&str) -> bool + Send + 'static,
    delivered: Arc<Mutex<Delivered>>,
    count: tokio::sync::watch::Sender<usize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut consumer = super::cluster::consume_served(&client, queue, 256).await;
        while let Some(d) = consumer.next().await {
            let id = String::from_utf8(d.msg_id.to_vec()).expect("UTF-8 id");
            {
                let mut delivered = delivered.lock().unwrap();
                *delivered.times.entry(id.clone()).or_default() += 1;
                if d.deliveries > 1 {
                    delivered.marked_again.insert(id.clone());
                }
            }
            count.send_modify(|n| *n += 1);
            let first_time = delivered.lock().unwrap().times[&id] == 1;
            if !(hold(&id) && first_time) {
                consumer.ack(d.tag).await.expect("ack");
            }
        }
    })
}

/// A run read as Jepsen's total queue, by sets of ids: `lost` (confirmed,
/// never delivered), `unexpected` (delivered, never published),
/// `recovered` (delivered though their publish was never confirmed) and
/// `duplicated` (delivered more than once).
pub struct Verdict {
    pub lost: BTreeSet<String>,
    pub unexpected: BTreeSet<String>,
    pub recovered: BTreeSet<String>,
    pub duplicated: BTreeSet<String>,
}

pub fn verdict(published: &Published, delivered: &Delivered) -> Verdict {
    let seen: BTreeSet<String> = delivered.times.keys().cloned().collect();
    Verdict {
        lost: published.confirmed.difference(&seen).cloned().collect(),
        unexpected: seen.difference(&published.tried).cloned().collect(),
        recovered: seen
            .iter()
            .filter(|id| !published.confirmed.contains(*id))
            .cloned()
            .collect(),
        duplicated: delivered
            .times
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id.clone())
            .collect(),
    }
}
