//! A cluster under load loses no confirmed message when the leader of the
//! queue's shard is SIGKILLed: the publisher and the consumer, which know
//! every node, move by themselves, and what the old leader delivered and
//! did not see acked comes again. A node
//! that was down while the others purged their logs gets the queues from a
//! snapshot.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{
    Node, agreed_leader_of, client, client_of, consumed, declared_everywhere, note_leader,
    note_said, start, start_with, three_nodes, three_started, until_empty, until_queue,
    until_redirected,
};
use common::history::{Delivered, Published, consume_into, publish_until_stopped, verdict};
use common::temp_dir;
use zmesh_client::queue::QueueError;
use zmesh_testkit::net::bounded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_publishes_survive_the_shard_leader_s_sigkill() {
    // The bound also ends a wait for a confirmed message that never comes:
    // the history below says which.
    let published = Arc::new(Mutex::new(Published::default()));
    let delivered = Arc::new(Mutex::new(Delivered::default()));
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        leader_kill_under_load(published.clone(), delivered.clone()),
    )
    .await;
    if outcome.is_err() {
        let (p, d) = (published.lock().unwrap(), delivered.lock().unwrap());
        let v = verdict(&p, &d);
        panic!(
            "the test exceeded its time limit with {} tried, {} confirmed, {} delivered; lost so far: {:?}",
            p.tried.len(),
            p.confirmed.len(),
            d.times.len(),
            v.lost
        );
    }
}

/// Every tenth id stays unacked by the consumer that first gets it.
fn every_tenth(id: &str) -> bool {
    id.ends_with('0')
}

async fn leader_kill_under_load(
    published: Arc<Mutex<Published>>,
    delivered: Arc<Mutex<Delivered>>,
) {
    const QUEUE: &str = "jobs";
    const BEFORE: usize = 100;
    const AFTER: usize = 100;
    let root = temp_dir("leader-kill");
    let (mut nodes, peers, _) = three_started(&root).await;
    let (shard, shard_leader) = declared_everywhere(&mut nodes, QUEUE).await;

    // Only the shard's leader serves the queue's consumers and PURGE: a
    // follower names it (421 and its endpoint, once the leader has
    // advertised it), as any ZeroMQ client sees it.
    let follower = nodes.iter().position(|n| n.id != shard_leader).unwrap();
    let leader_at = (shard_leader - 1) as usize;
    until_redirected(&nodes[follower], QUEUE, &nodes[leader_at].client).await;
    // A client that knows only the follower follows it there.
    assert_eq!(
        client(&nodes[follower]).await.purge(QUEUE).await.unwrap(),
        0
    );

    // The consumer knows every node: it starts at a follower and is
    // redirected to the shard's leader; it keeps every tenth id unacked
    // the first time it gets it. The publisher is given the shard's leader
    // alone, and learns the other nodes from it (NODES). Neither is told
    // of the kill: each moves by itself.
    // (Ids are held only until the kill: one held after it would come
    // again only after its ack timeout.)
    let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
    let holding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let consumer = consume_into(
        client_of(&nodes, follower).await,
        QUEUE,
        {
            let holding = holding.clone();
            move |id| holding.load(std::sync::atomic::Ordering::Relaxed) && every_tenth(id)
        },
        delivered.clone(),
        count_tx,
    );
    let (confirmed_tx, mut confirmed) = tokio::sync::watch::channel(0usize);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let publisher = publish_until_stopped(
        client(&nodes[leader_at]).await,
        QUEUE,
        published.clone(),
        confirmed_tx,
        stop,
    );
    confirmed.wait_for(|n| *n >= BEFORE).await.unwrap();
    count.wait_for(|n| *n >= BEFORE / 2).await.unwrap();

    // The shard's leader now, as a follower last named it (an election on
    // a busy machine may have moved it): it dies.
    note_said(&mut nodes);
    let victim = nodes[follower].named[&shard];
    // What it holds now comes again from the new leader, and is acked.
    holding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (mut dead, _) = nodes[(victim - 1) as usize].process.take().unwrap();
    dead.start_kill().unwrap();
    dead.wait().await.unwrap();
    let killed = std::time::Instant::now();
    let (at_kill, delivered_at_kill) = (*confirmed.borrow(), *count.borrow());

    // The publisher's next confirm, and the consumer's next delivery, come
    // from the survivors.
    let (publisher_moved, consumer_moved) = tokio::join!(
        async {
            confirmed.wait_for(|n| *n > at_kill).await.unwrap();
            killed.elapsed()
        },
        async {
            count.wait_for(|n| *n > delivered_at_kill).await.unwrap();
            killed.elapsed()
        }
    );
    confirmed.wait_for(|n| *n >= at_kill + AFTER).await.unwrap();
    stop_tx.send(true).unwrap();
    publisher.await.unwrap();
    let survivors: Vec<u64> = nodes
        .iter()
        .filter(|n| n.process.is_some())
        .map(|n| n.id)
        .collect();
    let serving = agreed_leader_of(&mut nodes, shard, &survivors).await;

    // Every confirmed id comes, and nothing that was never published.
    let want = published.lock().unwrap().confirmed.clone();
    count
        .wait_for(|_| {
            let d = delivered.lock().unwrap();
            want.iter().all(|id| d.times.contains_key(id))
        })
        .await
        .unwrap();
    // The consumer acks what else is there (the ids it held, copies of
    // publishes whose fate was unknown), then every node's copy of the
    // queue is empty: the leader's acks are applied everywhere.
    until_empty(&nodes[(serving - 1) as usize], QUEUE).await;
    consumer.abort();
    for node in nodes.iter().filter(|n| n.process.is_some()) {
        until_empty(node, QUEUE).await;
    }
    {
        let (p, d) = (published.lock().unwrap(), delivered.lock().unwrap());
        let v = verdict(&p, &d);
        assert!(v.lost.is_empty(), "lost: {:?}", v.lost);
        assert!(
            v.unexpected.is_empty(),
            "never published: {:?}",
            v.unexpected
        );
        eprintln!(
            "{} tried, {} confirmed ({} before the kill of node {victim}, {} shard {shard}); \
             {} delivered, {} recovered, {} duplicated ({} marked redelivered); \
             node {serving} served after; the publisher confirmed again after {publisher_moved:?}, \
             the consumer was delivered to again after {consumer_moved:?}",
            p.tried.len(),
            p.confirmed.len(),
            at_kill,
            if victim == shard_leader {
                "which led"
            } else {
                "which led it after an election"
            },
            d.times.len(),
            v.recovered.len(),
            v.duplicated.len(),
            d.marked_again.len(),
        );
    }

    // The killed node comes back, applies the shard's log again, acks
    // included, and holds nothing either.
    let back = (victim - 1) as usize;
    start(&mut nodes[back], &peers).await;
    until_queue(&nodes[back], QUEUE, true).await;
    until_empty(&nodes[back], QUEUE).await;
    let _ = std::fs::remove_dir_all(&root);
}

/// A node's whole process: stopped with SIGSTOP or resumed with SIGCONT.
fn signal(process: &tokio::process::Child, signal: &str) {
    let pid = process.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits until `node` holds `ready` messages of `queue` ready, asking with
/// STATS.
async fn until_ready(node: &Node, queue: &str, ready: u64) {
    let client = client(node).await;
    loop {
        match client.stats(Some(queue)).await {
            Ok(stats) if stats[0]["ready"].as_u64() == Some(ready) => return,
            // Not there yet, or not even the queue (the catalog comes first).
            Ok(_) | Err(QueueError::Refused { code: 404, .. }) => {}
            Err(e) => panic!("node {}: STATS {queue}: {e}", node.id),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `node` says it restored `shard`'s queues from a snapshot,
/// noting the leaders it names on the way.
async fn until_restored(node: &mut Node, shard: u32) {
    let wanted = format!("group={shard}");
    loop {
        let line = match node.process.as_mut() {
            Some((_, lines)) => lines.next_line().await.expect("stderr"),
            None => panic!("node {} is not running", node.id),
        };
        let Some(line) = line else {
            panic!("node {} exited", node.id)
        };
        eprintln!("F: {line}");
        note_leader(node, &line);
        if line.contains("restoring the shard's queues from a snapshot") && line.contains(&wanted) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_behind_purged_logs_catch_up_and_serve_exactly_the_ids_not_acked() {
    bounded(Duration::from_secs(120), async {
        const QUEUE: &str = "jobs";
        // Shards snapshot and purge their logs every few entries.
        const SNAPSHOTS: [&str; 2] = ["--cluster-snapshot-entries", "8"];
        let root = temp_dir("snapshots");
        let (mut nodes, peers) = three_nodes(&root);
        for node in nodes.iter_mut() {
            start_with(node, &peers, &SNAPSHOTS).await;
        }
        let (shard, leader) = declared_everywhere(&mut nodes, QUEUE).await;
        let at = |id: u64| (id - 1) as usize;
        let behind = nodes.iter().find(|n| n.id != leader).unwrap().id;
        let other = nodes
            .iter()
            .find(|n| n.id != leader && n.id != behind)
            .unwrap()
            .id;

        // One node is down while the queue takes 60 publishes, one by one
        // (an entry each), and the first 30 are consumed and acked: the
        // others snapshot and purge their logs many times over.
        let (mut down, _) = nodes[at(behind)].process.take().unwrap();
        down.start_kill().unwrap();
        down.wait().await.unwrap();
        let publisher = client(&nodes[at(leader)]).await;
        let ids = |range: std::ops::Range<u32>| -> BTreeSet<String> {
            range.map(|i| format!("s-{i:02}")).collect()
        };
        for id in ids(0..30) {
            publisher
                .publish_with_id(QUEUE, id.clone(), id.clone())
                .await
                .expect("confirmed");
        }
        let acked = consumed(&nodes[at(leader)], QUEUE, &ids(0..30), |_| false).await;
        assert_eq!(acked, ids(0..30));
        let kept = ids(30..60);
        for id in &kept {
            publisher
                .publish_with_id(QUEUE, id.clone(), id.clone())
                .await
                .expect("confirmed");
        }

        // It comes back and catches up: from the leader's log, or from its
        // snapshot when the leader purged the log past where this node was
        // (openraft postpones a purge while a replication reads the log:
        // either may happen).
        eprintln!("node {behind} comes back");
        start_with(&mut nodes[at(behind)], &peers, &SNAPSHOTS).await;
        until_ready(&nodes[at(behind)], QUEUE, kept.len() as u64).await;

        // SIGKILLed again, it starts from its own snapshot (it took some
        // while catching up) and the log after it.
        let (mut again, _) = nodes[at(behind)].process.take().unwrap();
        again.start_kill().unwrap();
        again.wait().await.unwrap();
        let own = nodes[at(behind)]
            .dir
            .join(format!("cluster/shard-{shard}/shard.snapshot"));
        assert!(own.exists(), "{own:?}");
        start_with(&mut nodes[at(behind)], &peers, &SNAPSHOTS).await;
        until_ready(&nodes[at(behind)], QUEUE, kept.len() as u64).await;

        // Only it can lead now: the third node is frozen, and the leader is
        // SIGKILLed and comes back with nothing (its files deleted), so its
        // vote goes to the node with the log. That node sends it the
        // shard's snapshot (its own log is purged: it snapshots every few
        // entries too).
        let (frozen, frozen_lines) = nodes[at(other)].process.take().unwrap();
        signal(&frozen, "-STOP");
        let (mut killed, _) = nodes[at(leader)].process.take().unwrap();
        killed.start_kill().unwrap();
        killed.wait().await.unwrap();
        std::fs::remove_dir_all(&nodes[at(leader)].dir).unwrap();
        eprintln!("node {leader} comes back with nothing");
        let restores = "warn,openraft=error,zmesh_broker::cluster::replicate=info";
        let rebuilt: Vec<&str> = SNAPSHOTS.into_iter().chain(["--log", restores]).collect();
        start_with(&mut nodes[at(leader)], &peers, &rebuilt).await;
        until_restored(&mut nodes[at(leader)], shard).await;
        until_ready(&nodes[at(leader)], QUEUE, kept.len() as u64).await;
        let running = [leader, behind];
        assert_eq!(agreed_leader_of(&mut nodes, shard, &running).await, behind);

        // What the node that was behind serves is exactly the ids not acked.
        let served = consumed(&nodes[at(behind)], QUEUE, &kept, |_| false).await;
        assert_eq!(served, kept);

        eprintln!("node {behind} served the ids not acked");
        // The frozen node resumes; every node's copy ends empty, the one
        // rebuilt from nothing included.
        signal(&frozen, "-CONT");
        nodes[at(other)].process = Some((frozen, frozen_lines));
        for node in &nodes {
            until_empty(node, QUEUE).await;
        }
        let _ = std::fs::remove_dir_all(&root);
    })
    .await;
}
