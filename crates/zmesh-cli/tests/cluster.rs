//! Three `zmesh broker` processes on loopback form a cluster: a queue
//! declared on one is declared on all, with the options agreed, and the
//! catalog goes on when the node leading it is SIGKILLed and comes back;
//! every confirmed publish survives the SIGKILL of its shard's leader.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LogLines, broker_listening, temp_dir};
use tokio::process::Child;
use zmesh_broker::queue::QueueOptions;
use zmesh_client::queue::{QueueClient, QueueClientConfig, QueueError};
use zmesh_testkit::net::{bounded, free_endpoint};

struct Node {
    id: u64,
    client: String,
    dir: PathBuf,
    process: Option<(Child, LogLines)>,
    /// The leader of each group (0: the catalog) the node last named.
    named: BTreeMap<u32, u64>,
}

/// Three nodes' settings (not started), and the `--peers` they share.
fn three_nodes(root: &std::path::Path) -> (Vec<Node>, String) {
    let cluster_endpoints: Vec<String> = (0..3).map(|_| free_endpoint()).collect();
    let peers = cluster_endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{}={ep}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let nodes = (1..=3)
        .map(|id| Node {
            id,
            client: free_endpoint(),
            dir: root.join(format!("node-{id}")),
            process: None,
            named: BTreeMap::new(),
        })
        .collect();
    (nodes, peers)
}

fn args(node: &Node, peers: &str) -> Vec<String> {
    [
        "--bind",
        &node.client,
        "--data-dir",
        &node.dir.display().to_string(),
        "--cluster",
        "t",
        "--node-id",
        &node.id.to_string(),
        "--peers",
        peers,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Three nodes started, once every one knows the catalog's leader (so a
/// request may go to any): their settings, `--peers`, and the leader.
async fn three_started(root: &std::path::Path) -> (Vec<Node>, String, u64) {
    let (mut nodes, peers) = three_nodes(root);
    for node in nodes.iter_mut() {
        start(node, &peers).await;
    }
    let leader = agreed_leader_of(&mut nodes, 0, &[1, 2, 3]).await;
    (nodes, peers, leader)
}

async fn start(node: &mut Node, peers: &str) {
    let args = args(node, peers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node.process = Some(broker_listening(&args).await);
}

/// Notes the leader a line of `node`'s stderr names, if it names one.
fn note_leader(node: &mut Node, line: &str) {
    let Some(rest) = line.strip_prefix("zmesh: cluster t: node ") else {
        return;
    };
    let (id, group) = match rest.split_once(" leads") {
        Some((id, "")) => (id, 0),
        Some((id, shard)) => match shard.strip_prefix(" shard ").map(str::parse) {
            Some(Ok(g)) => (id, g),
            _ => return,
        },
        None => return,
    };
    if let Ok(id) = id.parse() {
        node.named.insert(group, id);
    }
}

/// Notes what the running nodes have said so far, without waiting.
fn note_said(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        while let Some(line) = node.process.as_mut().and_then(|(_, l)| l.try_next_line()) {
            note_leader(node, &line);
        }
    }
}

/// Waits until every running node last named the same leader of `group`,
/// one of `candidates`, and returns it: an election that changes its mind
/// on the way (two candidates, one after the other) is followed to its end.
async fn agreed_leader_of(nodes: &mut [Node], group: u32, candidates: &[u64]) -> u64 {
    loop {
        note_said(nodes);
        let named: BTreeSet<Option<u64>> = nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.named.get(&group).copied())
            .collect();
        if let [Some(leader)] = named.iter().copied().collect::<Vec<_>>()[..]
            && candidates.contains(&leader)
        {
            return leader;
        }
        // Disagreeing: wait for any node to say more.
        let (said, at) = {
            let waits = nodes
                .iter_mut()
                .enumerate()
                .filter_map(|(at, n)| n.process.as_mut().map(|(_, lines)| (at, lines)))
                .map(|(at, lines)| Box::pin(async move { (lines.next_line().await, at) }));
            futures::future::select_all(waits).await.0
        };
        match said {
            Ok(Some(line)) => note_leader(&mut nodes[at], &line),
            _ => panic!("node {} exited", nodes[at].id),
        }
    }
}

async fn client(node: &Node) -> QueueClient {
    QueueClient::connect(&node.client, QueueClientConfig::default())
        .await
        .expect("connect")
}

fn options(max_length: u64) -> QueueOptions {
    QueueOptions {
        max_length,
        ..QueueOptions::default()
    }
}

/// Waits until `node` has `queue` (or has not, with `present` false), asking
/// with STATS, which changes nothing: what a node gets without being asked
/// comes from following the catalog. Each look is a round trip to the
/// broker; the test's bound ends a wait that never ends.
async fn until_queue(node: &Node, queue: &str, present: bool) {
    let client = client(node).await;
    loop {
        match client.stats(Some(queue)).await {
            Ok(_) if present => return,
            Err(QueueError::Refused { code: 404, .. }) if !present => return,
            Ok(_) | Err(QueueError::Refused { code: 404, .. }) => {}
            Err(e) => panic!("node {}: STATS {queue}: {e}", node.id),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `node` holds no message of `queue` (none ready, unacked or
/// being stored), asking with STATS; returns what it held when last asked
/// before that, for the report.
async fn until_empty(node: &Node, queue: &str) {
    let client = client(node).await;
    loop {
        let stats = client.stats(Some(queue)).await.expect("STATS");
        let held: u64 = ["ready", "unacked", "storing"]
            .iter()
            .map(|k| stats[0][k].as_u64().expect("a count"))
            .sum();
        if held == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The queue's options as `node` has them, asking with none (any will do).
async fn options_on(node: &Node, queue: &str) -> QueueOptions {
    client(node)
        .await
        .declare(queue, None)
        .await
        .expect("the queue is declared")
        .options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_agree_on_queues_across_the_leader_s_sigkill() {
    bounded(Duration::from_secs(90), async {
        let root = temp_dir("three");
        let (mut nodes, peers, leader) = three_started(&root).await;

        // Declared through a node that does not lead: forwarded, agreed, and
        // the same on every node.
        let follower = nodes.iter().position(|n| n.id != leader).unwrap();
        let spec = client(&nodes[follower])
            .await
            .declare("orders", Some(&options(5)))
            .await
            .expect("declared");
        assert_eq!(spec.options.max_length, 5);
        for node in &nodes {
            until_queue(node, "orders", true).await;
            assert_eq!(options_on(node, "orders").await.max_length, 5);
        }
        // Deleted through one node, gone from all.
        client(&nodes[0])
            .await
            .declare("old", None)
            .await
            .expect("declared");
        for node in &nodes {
            until_queue(node, "old", true).await;
        }
        assert_eq!(client(&nodes[2]).await.delete("old").await.unwrap(), 0);
        for node in &nodes {
            until_queue(node, "old", false).await;
        }
        // Other options conflict, whichever node is asked.
        for node in &nodes {
            let refused = client(node)
                .await
                .declare("orders", Some(&options(6)))
                .await;
            assert!(
                matches!(refused, Err(QueueError::Refused { code: 409, .. })),
                "node {}: {refused:?}",
                node.id
            );
        }

        // The leader dies; the other two agree on a new one and go on.
        let (mut dead, _) = nodes[(leader - 1) as usize].process.take().unwrap();
        dead.start_kill().unwrap();
        dead.wait().await.unwrap();
        let alive: Vec<u64> = nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| *id != leader)
            .collect();
        agreed_leader_of(&mut nodes, 0, &alive).await;
        let spec = client(&nodes[(alive[1] - 1) as usize])
            .await
            .declare("payments", Some(&options(7)))
            .await
            .expect("declared after the failover");
        assert_eq!(spec.options.max_length, 7);
        until_queue(&nodes[(alive[0] - 1) as usize], "payments", true).await;
        assert_eq!(
            options_on(&nodes[(alive[0] - 1) as usize], "payments")
                .await
                .max_length,
            7
        );

        // The dead node comes back from its files and has both.
        start(&mut nodes[(leader - 1) as usize], &peers).await;
        agreed_leader_of(&mut nodes, 0, &alive).await;
        for queue in ["orders", "payments"] {
            until_queue(&nodes[(leader - 1) as usize], queue, true).await;
            let expected = if queue == "orders" { 5 } else { 7 };
            assert_eq!(
                options_on(&nodes[(leader - 1) as usize], queue)
                    .await
                    .max_length,
                expected
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    })
    .await;
}

/// What a publisher under test did: every id it tried, and those confirmed.
#[derive(Default)]
struct Published {
    tried: BTreeSet<String>,
    confirmed: BTreeSet<String>,
}

/// Publishes `m-0`, `m-1`, ... to `queue` one after the other until `stop`,
/// each until confirmed (a refusal while the cluster elects a leader is
/// tried again with the same id); `confirmed` counts them as they come.
fn publish_until_stopped(
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
struct Delivered {
    times: BTreeMap<String, u32>,
    /// Ids a delivery said were delivered before.
    marked_again: BTreeSet<String>,
}

/// Consumes `queue` with `client` (of the node serving it) until aborted,
/// noting every delivery in `delivered` and telling `count`; acks each,
/// except those whose id `hold` picks, which stay delivered and unacked.
fn consume_into(
    client: QueueClient,
    queue: &'static str,
    hold: fn(&str) -> bool,
    delivered: Arc<Mutex<Delivered>>,
    count: tokio::sync::watch::Sender<usize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A new leader serves once it has applied what the last one left
        // (an instant after it says it leads): until then it refuses.
        let mut consumer = loop {
            match client.consume(queue, 256).await {
                Ok(consumer) => break consumer,
                Err(QueueError::Refused { code: 503, .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("consume: {e}"),
            }
        };
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
            if !hold(&id) {
                consumer.ack(d.tag).await.expect("ack");
            }
        }
    })
}

/// A run read as Jepsen's total queue, by sets of ids: `lost` (confirmed,
/// never delivered), `unexpected` (delivered, never published),
/// `recovered` (delivered though their publish was never confirmed) and
/// `duplicated` (delivered more than once).
struct Verdict {
    lost: BTreeSet<String>,
    unexpected: BTreeSet<String>,
    recovered: BTreeSet<String>,
    duplicated: BTreeSet<String>,
}

fn verdict(published: &Published, delivered: &Delivered) -> Verdict {
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
    client(&nodes[0])
        .await
        .declare(QUEUE, None)
        .await
        .expect("declared");
    for node in &nodes {
        until_queue(node, QUEUE, true).await;
    }
    let shard = zmesh_cluster::shard_of(QUEUE, zmesh_cluster::SHARDS_DEFAULT);
    let shard_leader = agreed_leader_of(&mut nodes, shard, &[1, 2, 3]).await;

    // Only the shard's leader serves the queue's consumers.
    let follower = nodes.iter().position(|n| n.id != shard_leader).unwrap();
    match client(&nodes[follower]).await.consume(QUEUE, 1).await {
        Err(QueueError::Refused { code: 503, .. }) => {}
        other => panic!("a follower's CONSUME: {:?}", other.map(|_| ())),
    }

    // The consumer talks to the shard's leader and keeps every tenth id
    // unacked; the publisher talks to a node that does not lead the shard:
    // it forwards each batch, and stays up through the kill.
    let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
    let first_consumer = consume_into(
        client(&nodes[(shard_leader - 1) as usize]).await,
        QUEUE,
        every_tenth,
        delivered.clone(),
        count_tx.clone(),
    );
    let publisher_node = follower;
    let (confirmed_tx, mut confirmed) = tokio::sync::watch::channel(0usize);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let publisher = publish_until_stopped(
        client(&nodes[publisher_node]).await,
        QUEUE,
        published.clone(),
        confirmed_tx,
        stop,
    );
    confirmed.wait_for(|n| *n >= BEFORE).await.unwrap();
    count.wait_for(|n| *n >= BEFORE / 2).await.unwrap();

    // The shard's leader now, as the publisher's node last named it. Should
    // leadership have moved to the publisher's node (an election on a busy
    // machine), the other node dies instead: no confirmed id may be lost
    // either way, and the test says which it was.
    note_said(&mut nodes);
    let now_leading = nodes[publisher_node].named[&shard];
    let victim = if now_leading == nodes[publisher_node].id {
        let other = nodes
            .iter()
            .find(|n| n.id != now_leading && n.id != shard_leader)
            .unwrap()
            .id;
        eprintln!("the publisher's node leads the shard now: node {other} dies instead");
        other
    } else {
        now_leading
    };
    let (mut dead, _) = nodes[(victim - 1) as usize].process.take().unwrap();
    dead.start_kill().unwrap();
    dead.wait().await.unwrap();
    let at_kill = *confirmed.borrow();

    // The consumer moves to the shard's leader (the same one, when it
    // survived), and what it held unacked comes again there.
    first_consumer.abort();
    let _ = first_consumer.await;
    let survivors: Vec<u64> = nodes
        .iter()
        .filter(|n| n.process.is_some())
        .map(|n| n.id)
        .collect();
    let serving = agreed_leader_of(&mut nodes, shard, &survivors).await;
    let consumer = consume_into(
        client(&nodes[(serving - 1) as usize]).await,
        QUEUE,
        |_| false,
        delivered.clone(),
        count_tx,
    );
    confirmed.wait_for(|n| *n >= at_kill + AFTER).await.unwrap();
    stop_tx.send(true).unwrap();
    publisher.await.unwrap();

    // Every confirmed id comes, and nothing that was never published.
    let want = published.lock().unwrap().confirmed.clone();
    count
        .wait_for(|_| {
            let d = delivered.lock().unwrap();
            want.iter().all(|id| d.times.contains_key(id))
        })
        .await
        .unwrap();
    // The consumer acks what else is there (copies of publishes whose fate
    // was unknown), then every node's copy of the queue is empty: the
    // leader's acks are applied everywhere.
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
             node {serving} served after",
            p.tried.len(),
            p.confirmed.len(),
            at_kill,
            if victim == now_leading {
                "which led"
            } else {
                "which did not lead"
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
