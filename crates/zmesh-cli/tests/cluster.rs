//! Three `zmesh broker` processes on loopback form a cluster: a queue
//! declared on one is declared on all, with the options agreed, and the
//! catalog goes on when the node leading it is SIGKILLed and comes back.

mod common;

use std::path::PathBuf;
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

async fn start(node: &mut Node, peers: &str) {
    let args = args(node, peers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node.process = Some(broker_listening(&args).await);
}

/// Reads a node's stderr until it names a leader among `candidates`.
async fn leader_named(node: &mut Node, candidates: &[u64]) -> u64 {
    let (_, lines) = node.process.as_mut().expect("running");
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(id) = line
            .strip_prefix("zmesh: cluster t: node ")
            .and_then(|rest| rest.strip_suffix(" leads"))
            .and_then(|id| id.parse().ok())
            && candidates.contains(&id)
        {
            return id;
        }
    }
    panic!("node {} exited without naming a leader", node.id);
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
        let cluster_endpoints: Vec<String> = (0..3).map(|_| free_endpoint()).collect();
        let peers = cluster_endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{}={ep}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<Node> = (1..=3)
            .map(|id| Node {
                id,
                client: free_endpoint(),
                dir: root.join(format!("node-{id}")),
                process: None,
            })
            .collect();
        for node in nodes.iter_mut() {
            start(node, &peers).await;
        }
        // Every node knows the leader before a request goes to any of them.
        let leader = leader_named(&mut nodes[0], &[1, 2, 3]).await;
        for node in nodes.iter_mut().skip(1) {
            assert_eq!(leader_named(node, &[1, 2, 3]).await, leader);
        }

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
        let new_leader = leader_named(&mut nodes[(alive[0] - 1) as usize], &alive).await;
        assert_eq!(
            leader_named(&mut nodes[(alive[1] - 1) as usize], &alive).await,
            new_leader
        );
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
        assert_eq!(
            leader_named(&mut nodes[(leader - 1) as usize], &alive).await,
            new_leader
        );
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
