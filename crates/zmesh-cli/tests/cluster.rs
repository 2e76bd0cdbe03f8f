//! Three `zmesh broker` processes on loopback form a cluster: a queue
//! declared on one is declared on all, with the options agreed, and the
//! catalog goes on when the node leading it is SIGKILLed and comes back;
//! what the leader of a queue's shard dead-letters reaches every node.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{
    Node, agreed_leader_of, client, consumed, endpoints_from, start, three_started, until_empty,
    until_queue, until_redirected,
};
use common::{python_stdout, temp_dir, zmesh_stdout};
use zmesh_broker::queue::QueueOptions;
use zmesh_client::queue::QueueError;
use zmesh_testkit::net::bounded;

fn options(max_length: u64) -> QueueOptions {
    QueueOptions {
        max_length,
        ..QueueOptions::default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_shard_leader_dead_letters_reaches_every_node() {
    bounded(Duration::from_secs(60), async {
        let root = temp_dir("dead-letters");
        let (mut nodes, _, _) = three_started(&root).await;
        client(&nodes[0])
            .await
            .declare("work", None)
            .await
            .expect("declared");
        for node in &nodes {
            until_queue(node, "work.dlq", true).await;
        }
        let publisher = client(&nodes[0]).await;
        let ids: BTreeSet<String> = (0..20).map(|i| format!("w-{i}")).collect();
        for id in &ids {
            publisher
                .publish_with_id("work", id.clone(), id.clone())
                .await
                .expect("confirmed");
        }

        // The leader of work's shard rejects the even ids: their copies go
        // to work.dlq (another shard, perhaps), the originals are settled.
        let even = |id: &str| id.trim_start_matches("w-").parse::<u32>().unwrap() % 2 == 0;
        let rejected: BTreeSet<String> = ids.iter().filter(|id| even(id)).cloned().collect();
        let all = [1, 2, 3];
        let shard = zmesh_cluster::shard_of("work", zmesh_cluster::SHARDS_DEFAULT);
        let leader = agreed_leader_of(&mut nodes, shard, &all).await;
        let seen = consumed(&nodes[(leader - 1) as usize], "work", &ids, even).await;
        assert_eq!(seen, ids);

        // The dead-letter queue's leader has exactly the rejected ids: the
        // CLI, given a node that does not lead its shard first, is
        // redirected there, consumes them and acks them there.
        let dlq_shard = zmesh_cluster::shard_of("work.dlq", zmesh_cluster::SHARDS_DEFAULT);
        let dlq_leader = agreed_leader_of(&mut nodes, dlq_shard, &all).await;
        let other = nodes.iter().position(|n| n.id != dlq_leader).unwrap();
        let brokers = endpoints_from(&nodes, other).join(",");
        let count = rejected.len().to_string();
        let printed = zmesh_stdout(&[
            "queue", "consume", "work.dlq", "--count", &count, "--broker", &brokers,
        ])
        .await;
        let dead: BTreeSet<String> = printed.lines().map(str::to_owned).collect();
        assert_eq!(dead, rejected, "dead letters");

        // Every node applied both leaders' decisions: nothing is left.
        for node in &nodes {
            until_empty(node, "work").await;
            until_empty(node, "work.dlq").await;
        }
        let _ = std::fs::remove_dir_all(&root);
    })
    .await;
}

/// A pyzmq consumer written from the protocol page, given a node that does
/// not serve the queue first, follows the redirect and takes every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pyzmq_consumer_follows_the_redirect_to_the_serving_node() {
    bounded(Duration::from_secs(60), async {
        let root = temp_dir("pyzmq");
        let (mut nodes, _, _) = three_started(&root).await;
        client(&nodes[0])
            .await
            .declare("py", None)
            .await
            .expect("declared");
        let publisher = client(&nodes[0]).await;
        let ids: BTreeSet<String> = (0..20).map(|i| format!("py-{i}")).collect();
        for id in &ids {
            publisher
                .publish_with_id("py", id.clone(), id.clone())
                .await
                .expect("confirmed");
        }
        let shard = zmesh_cluster::shard_of("py", zmesh_cluster::SHARDS_DEFAULT);
        let leader = agreed_leader_of(&mut nodes, shard, &[1, 2, 3]).await;
        let other = nodes.iter().position(|n| n.id != leader).unwrap();
        until_redirected(&nodes[other], "py", &nodes[(leader - 1) as usize].client).await;
        let endpoints = endpoints_from(&nodes, other).join(",");
        let stdout = python_stdout("cluster_consumer.py", &[&endpoints, "py", "20"]).await;
        let redirect = format!("redirected to {}", nodes[(leader - 1) as usize].client);
        assert!(stdout.lines().any(|l| l == redirect), "{stdout}");
        let consumed: BTreeSet<String> = stdout
            .lines()
            .filter(|l| l.starts_with("py-"))
            .map(str::to_owned)
            .collect();
        assert_eq!(consumed, ids);
        assert!(stdout.contains("consumed 20"), "{stdout}");
        for node in &nodes {
            until_empty(node, "py").await;
        }
        let _ = std::fs::remove_dir_all(&root);
    })
    .await;
}
