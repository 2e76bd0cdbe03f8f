//! Three `zmesh broker` processes on loopback as a cluster: their
//! settings, who they say leads, and waits on what they hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Child;
use zmesh_client::queue::{Consumer, QueueClient, QueueClientConfig, QueueError};
use zmesh_testkit::net::free_endpoint;

use super::{LogLines, broker_listening};

pub struct Node {
    pub id: u64,
    pub client: String,
    pub dir: PathBuf,
    pub process: Option<(Child, LogLines)>,
    /// The leader of each group (0: the catalog) the node last named.
    pub named: BTreeMap<u32, u64>,
}

/// Three nodes' settings (not started), and the `--peers` they share.
pub fn three_nodes(root: &std::path::Path) -> (Vec<Node>, String) {
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

pub fn args(node: &Node, peers: &str) -> Vec<String> {
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
pub async fn three_started(root: &std::path::Path) -> (Vec<Node>, String, u64) {
    let (mut nodes, peers) = three_nodes(root);
    for node in nodes.iter_mut() {
        start(node, &peers).await;
    }
    let leader = agreed_leader_of(&mut nodes, 0, &[1, 2, 3]).await;
    (nodes, peers, leader)
}

pub async fn start(node: &mut Node, peers: &str) {
    start_with(node, peers, &[]).await
}

/// Starts `node` with `extra` arguments besides its settings.
pub async fn start_with(node: &mut Node, peers: &str, extra: &[&str]) {
    let args = args(node, peers);
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    node.process = Some(broker_listening(&args).await);
}

/// Notes the leader a line of `node`'s stderr names, if it names one.
pub fn note_leader(node: &mut Node, line: &str) {
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
pub fn note_said(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        while let Some(line) = node.process.as_mut().and_then(|(_, l)| l.try_next_line()) {
            note_leader(node, &line);
        }
    }
}

/// Waits until every running node last named the same leader of `group`,
/// one of `candidates`, and returns it: an election that changes its mind
/// on the way (two candidates, one after the other) is followed to its end.
pub async fn agreed_leader_of(nodes: &mut [Node], group: u32, candidates: &[u64]) -> u64 {
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
            _ => panic!(
                "node {} exited; its last lines: {:#?}",
                nodes[at].id,
                nodes[at].process.as_ref().map(|(_, l)| l.recent())
            ),
        }
    }
}

/// Waits until `node` answers a PURGE of `queue` with a 421 naming
/// `endpoint`, as any ZeroMQ client sees it (the serving node advertises
/// its endpoint an instant after it starts: until then the 421 names none).
pub async fn until_redirected(node: &Node, queue: &str, endpoint: &str) {
    let raw = zmesh::Socket::new(zmesh::SocketType::Dealer, Default::default()).unwrap();
    raw.connect(&node.client).await.unwrap();
    loop {
        raw.send(zmesh::Message::from_frames([
            bytes::Bytes::new(),
            bytes::Bytes::from_static(b"ZMQU01"),
            bytes::Bytes::from_static(b"PURGE"),
            bytes::Bytes::from_static(b"7"),
            bytes::Bytes::from(queue.to_owned()),
        ]))
        .await
        .unwrap();
        let reply = raw.recv().await.unwrap().frames();
        let text: Vec<String> = reply
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        assert_eq!(text[2..5], ["ERROR", "7", "421"], "{text:?}");
        match text.get(6) {
            Some(named) => {
                assert_eq!(named, endpoint, "{text:?}");
                return;
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Every node's client endpoint, starting with `nodes[first]`'s.
pub fn endpoints_from(nodes: &[Node], first: usize) -> Vec<String> {
    (0..nodes.len())
        .map(|i| nodes[(first + i) % nodes.len()].client.clone())
        .collect()
}

/// A client that knows every node, starting with `nodes[first]`.
pub async fn client_of(nodes: &[Node], first: usize) -> QueueClient {
    QueueClient::connect_any(&endpoints_from(nodes, first), QueueClientConfig::default())
        .await
        .expect("connect")
}

pub async fn client(node: &Node) -> QueueClient {
    QueueClient::connect(&node.client, QueueClientConfig::default())
        .await
        .expect("connect")
}

/// Waits until `node` has `queue` (or has not, with `present` false), asking
/// with STATS, which changes nothing: what a node gets without being asked
/// comes from following the catalog. Each look is a round trip to the
/// broker; the test's bound ends a wait that never ends.
pub async fn until_queue(node: &Node, queue: &str, present: bool) {
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
/// being stored), asking with STATS.
pub async fn until_empty(node: &Node, queue: &str) {
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

/// Consumes `queue` with `client`, of the node leading its shard. A new
/// leader serves once it has applied what the last one left (an instant
/// after it says it leads): until then it refuses (421), and this asks
/// again.
pub async fn consume_served(client: &QueueClient, queue: &str, prefetch: u32) -> Consumer {
    loop {
        match client.consume(queue, prefetch).await {
            Ok(consumer) => return consumer,
            Err(QueueError::Refused {
                code: 421 | 503, ..
            }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("consume {queue}: {e}"),
        }
    }
}

/// The ids a consumer of `queue` on `node` is handed until it has all of
/// `want` (each acked, or rejected when `reject` picks it).
pub async fn consumed(
    node: &Node,
    queue: &str,
    want: &BTreeSet<String>,
    reject: fn(&str) -> bool,
) -> BTreeSet<String> {
    let client = client(node).await;
    let mut consumer = consume_served(&client, queue, 64).await;
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        let d = consumer.next().await.expect("a delivery");
        let id = String::from_utf8(d.msg_id.to_vec()).expect("UTF-8 id");
        if reject(&id) {
            consumer.nack(d.tag, false).await.expect("reject");
        } else {
            consumer.ack(d.tag).await.expect("ack");
        }
        seen.insert(id);
    }
    seen
}

/// Declares `queue` on the first node and waits until every node has it;
/// returns its shard and the shard's leader, as every node names it.
pub async fn declared_everywhere(nodes: &mut [Node], queue: &str) -> (u32, u64) {
    client(&nodes[0])
        .await
        .declare(queue, None)
        .await
        .expect("declared");
    for node in nodes.iter() {
        until_queue(node, queue, true).await;
    }
    let shard = zmesh_cluster::shard_of(queue, zmesh_cluster::SHARDS_DEFAULT);
    let leader = agreed_leader_of(nodes, shard, &[1, 2, 3]).await;
    (shard, leader)
}
