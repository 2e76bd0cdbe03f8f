//! Three nodes in one process, each with its own files and its own cluster
//! endpoint on loopback: they form a cluster, agree on a catalog, replace a
//! stopped leader, and a restarted node catches up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use zmesh_cluster::{
    ClusterNode, Command, Committed, GroupId, NodeConfig, NodeId, Outcome, ShardUpdate, Timing,
};
use zmesh_testkit::net::{bounded, free_endpoint};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zmesh-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(id: NodeId, members: &BTreeMap<NodeId, String>, root: &std::path::Path) -> NodeConfig {
    NodeConfig {
        cluster_name: "test".into(),
        node_id: id,
        members: members.clone(),
        dir: root.join(format!("node-{id}")),
        timing: Timing::default(),
        shards: 2,
        shard_snapshot_every_entries: zmesh_cluster::SHARD_SNAPSHOT_EVERY_ENTRIES,
    }
}

/// Three nodes started at once, each with its files under `root`: the
/// members, and the nodes by id.
async fn three_started(
    root: &std::path::Path,
) -> (BTreeMap<NodeId, String>, BTreeMap<NodeId, ClusterNode>) {
    let members: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, free_endpoint())).collect();
    let (a, b, c) = tokio::join!(
        ClusterNode::start(config(1, &members, root)),
        ClusterNode::start(config(2, &members, root)),
        ClusterNode::start(config(3, &members, root)),
    );
    let nodes = [a, b, c]
        .into_iter()
        .map(|n| {
            let n = n.expect("the node starts");
            (n.node_id(), n)
        })
        .collect();
    (members, nodes)
}

/// Waits until every node in `nodes` names the same leader, and returns it.
async fn agreed_leader(nodes: &[&ClusterNode]) -> NodeId {
    let mut watches: Vec<_> = nodes.iter().map(|n| n.watch_leader()).collect();
    loop {
        let named: std::collections::BTreeSet<Option<NodeId>> =
            watches.iter_mut().map(|w| *w.borrow_and_update()).collect();
        if let [Some(leader)] = named.into_iter().collect::<Vec<_>>()[..]
            && nodes.iter().any(|n| n.node_id() == leader)
        {
            return leader;
        }
        // Not agreed yet (an election may change its mind on the way):
        // wait for any node's view to change.
        let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
        let (changed, _, _) = futures::future::select_all(changes).await;
        changed.expect("leader watch");
    }
}

async fn wait_for_queue(node: &ClusterNode, name: &str) {
    node.catalog()
        .wait_for(|c| c.queues.contains_key(name))
        .await
        .expect("catalog watch");
}

fn declare(name: &str, options: &[u8]) -> Command {
    Command::DeclareQueue {
        name: name.into(),
        options: options.to_vec(),
        exact: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_the_catalog_and_replace_a_stopped_leader() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    bounded(Duration::from_secs(60), async {
        let root = temp_dir("three");
        let (members, mut nodes) = three_started(&root).await;

        // Each node advertises where clients reach it, before any leader
        // is elected: each proposes until the catalog holds it.
        let client_endpoint = |id: NodeId| format!("tcp://127.0.0.1:{}", 7000 + id);
        let endpoints: Vec<(&ClusterNode, String)> = nodes
            .values()
            .map(|n| (n, client_endpoint(n.node_id())))
            .collect();
        let advertised: Vec<_> = endpoints.iter().map(|(n, e)| n.advertise(e)).collect();
        for done in futures::future::join_all(advertised).await {
            done.expect("advertised");
        }
        let all_advertised: BTreeMap<NodeId, String> =
            (1..=3).map(|id| (id, client_endpoint(id))).collect();
        for node in nodes.values() {
            node.catalog()
                .wait_for(|c| *c.client_endpoints == all_advertised)
                .await
                .expect("catalog watch");
        }

        let leader = agreed_leader(&nodes.values().collect::<Vec<_>>()).await;
        let follower = nodes.keys().copied().find(|id| *id != leader).unwrap();

        // A follower forwards proposals to the leader; they apply the same
        // on every node.
        let agreed = || b"{}".to_vec();
        assert_eq!(
            nodes[&follower]
                .propose(declare("orders", b"{}"))
                .await
                .map(|a| a.outcome),
            Ok(Outcome::Created { options: agreed() })
        );
        assert_eq!(
            nodes[&leader]
                .propose(declare("orders", b"{}"))
                .await
                .map(|a| a.outcome),
            Ok(Outcome::AlreadyDeclared { options: agreed() })
        );
        assert_eq!(
            nodes[&follower]
                .propose(declare("orders", br#"{"ttl":1}"#))
                .await
                .map(|a| a.outcome),
            Ok(Outcome::Conflict)
        );
        // Without `exact`, other options are no conflict.
        let passive = Command::DeclareQueue {
            name: "orders".into(),
            options: br#"{"ttl":1}"#.to_vec(),
            exact: false,
        };
        assert_eq!(
            nodes[&follower].propose(passive).await.map(|a| a.outcome),
            Ok(Outcome::AlreadyDeclared { options: agreed() })
        );
        for node in nodes.values() {
            wait_for_queue(node, "orders").await;
        }

        // The leader stops; the other two elect one of themselves.
        nodes.remove(&leader).unwrap().shutdown().await;
        let new_leader = agreed_leader(&nodes.values().collect::<Vec<_>>()).await;
        assert_ne!(new_leader, leader);
        assert_eq!(
            nodes[&new_leader]
                .propose(declare("payments", b"{}"))
                .await
                .map(|a| a.outcome),
            Ok(Outcome::Created {
                options: b"{}".to_vec()
            })
        );
        assert_eq!(
            nodes[&new_leader]
                .propose(Command::DeleteQueue {
                    name: "orders".into()
                })
                .await
                .map(|a| a.outcome),
            Ok(Outcome::Deleted)
        );

        // The old leader comes back from its files and catches up.
        let back = ClusterNode::start(config(leader, &members, &root))
            .await
            .expect("the node restarts");
        back.catalog()
            .wait_for(|c| c.queues.contains_key("payments") && !c.queues.contains_key("orders"))
            .await
            .expect("catalog watch");
        // It kept its advertised endpoint; a new one replaces it everywhere.
        assert_eq!(
            back.catalog().borrow().client_endpoints.get(&leader),
            Some(&client_endpoint(leader))
        );
        back.advertise("tcp://127.0.0.1:7100")
            .await
            .expect("advertised again");
        nodes.insert(leader, back);
        for node in nodes.values() {
            wait_for_queue(node, "payments").await;
            node.catalog()
                .wait_for(|c| {
                    c.client_endpoints.get(&leader).map(String::as_str)
                        == Some("tcp://127.0.0.1:7100")
                })
                .await
                .expect("catalog watch");
        }
        let catalogs: Vec<Vec<String>> = nodes
            .values()
            .map(|n| n.catalog().borrow().queues.keys().cloned().collect())
            .collect();
        assert!(
            catalogs.iter().all(|c| c == &["payments".to_string()]),
            "the nodes disagree: {catalogs:?}"
        );

        for (_, node) in nodes {
            node.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&root);
    })
    .await;
}

/// Everything a node's shards committed, as it arrives.
fn collect_committed(node: &ClusterNode) -> watch::Receiver<Vec<Committed>> {
    application(node).0
}

/// The restores an application had: group and index.
type Restores = watch::Receiver<Vec<(GroupId, u64)>>;

/// A model of the broker: its state is every batch committed, in order. It
/// answers snapshot requests with a shard's batches so far, and a restore
/// replaces them. Returns what it holds, and the restores it had (group and
/// index).
fn application(node: &ClusterNode) -> (watch::Receiver<Vec<Committed>>, Restores) {
    let mut updates = node.take_committed().expect("taken once");
    assert!(node.take_committed().is_none(), "only once");
    let (tx, rx) = watch::channel(Vec::new());
    let (restored_tx, restored_rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            match update {
                ShardUpdate::Committed(c) => tx.send_modify(|all| all.push(c)),
                ShardUpdate::SnapshotWanted { group, reply } => {
                    let state: Vec<(u64, Vec<u8>)> = tx
                        .borrow()
                        .iter()
                        .filter(|c| c.group == group && c.leader_from_here.is_none())
                        .map(|c| (c.index, c.payload.to_vec()))
                        .collect();
                    let _ = reply.send(Bytes::from(rmp_serde::to_vec(&state).unwrap()));
                }
                ShardUpdate::Restore {
                    group,
                    index,
                    state,
                } => {
                    let state: Vec<(u64, Vec<u8>)> = rmp_serde::from_slice(&state).unwrap();
                    assert!(state.iter().all(|(i, _)| *i <= index), "{index}");
                    tx.send_modify(|all| {
                        all.retain(|c| c.group != group);
                        all.extend(state.into_iter().map(|(index, payload)| Committed {
                            group,
                            index,
                            payload: Bytes::from(payload),
                            leader_from_here: None,
                        }));
                    });
                    restored_tx.send_modify(|r| r.push((group, index)));
                }
            }
        }
    });
    (rx, restored_rx)
}

/// Waits until `node`'s shard `group` knows of a leader among `among`.
async fn shard_leader(node: &ClusterNode, group: GroupId, among: &[NodeId]) -> NodeId {
    node.watch_leader_of(group)
        .wait_for(|l| l.is_some_and(|l| among.contains(&l)))
        .await
        .expect("leader watch")
        .expect("a leader")
}

fn batch(text: &str) -> Command {
    Command::Batch {
        payload: Bytes::from(text.to_owned()),
    }
}

/// The payloads of `group`, in the order committed.
fn payloads(committed: &[Committed], group: GroupId) -> Vec<Bytes> {
    committed
        .iter()
        .filter(|c| c.group == group && c.leader_from_here.is_none())
        .map(|c| c.payload.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_commit_the_same_batches_in_the_same_order_on_every_node() {
    bounded(Duration::from_secs(60), async {
        let root = temp_dir("shards");
        let (members, mut nodes) = three_started(&root).await;
        let mut seen: BTreeMap<NodeId, watch::Receiver<Vec<Committed>>> = nodes
            .iter()
            .map(|(id, n)| (*id, collect_committed(n)))
            .collect();
        let ids: Vec<NodeId> = nodes.keys().copied().collect();

        // Batches to both shards, proposed on every node (a follower forwards).
        let mut expected: BTreeMap<GroupId, Vec<Bytes>> = BTreeMap::new();
        for round in 0..4 {
            for (id, node) in &nodes {
                for group in [1, 2] {
                    let text = format!("{group}/{id}/{round}");
                    let applied = node.propose_in(group, batch(&text)).await.expect("applied");
                    assert_eq!(applied.outcome, Outcome::Batched);
                    expected.entry(group).or_default().push(Bytes::from(text));
                }
            }
        }
        // A catalog command in a shard changes nothing there.
        assert_eq!(
            nodes[&1]
                .propose_in(1, declare("orders", b"{}"))
                .await
                .map(|a| a.outcome),
            Ok(Outcome::WrongGroup)
        );
        let everything = |group: GroupId, expected: &BTreeMap<GroupId, Vec<Bytes>>| {
            let want = expected[&group].clone();
            move |c: &Vec<Committed>| payloads(c, group) == want
        };
        for rx in seen.values_mut() {
            for group in [1, 2] {
                rx.wait_for(everything(group, &expected))
                    .await
                    .expect("committed");
            }
        }
        // The same indexes on every node, too (shards interleave as they
        // apply, differently on each node; each shard's order is its log's).
        let indexes: Vec<Vec<(GroupId, Vec<u64>)>> = seen
            .values()
            .map(|rx| {
                let committed = rx.borrow();
                [1, 2]
                    .into_iter()
                    .map(|g| {
                        let of_group = committed.iter().filter(|c| c.group == g);
                        (g, of_group.map(|c| c.index).collect())
                    })
                    .collect()
            })
            .collect();
        assert!(indexes.windows(2).all(|w| w[0] == w[1]), "{indexes:?}");

        // Shard 1's leader stops; the others go on with it.
        let leader = shard_leader(&nodes[&1], 1, &ids).await;
        nodes.remove(&leader).unwrap().shutdown().await;
        seen.remove(&leader);
        let rest: Vec<NodeId> = nodes.keys().copied().collect();
        for (id, node) in &nodes {
            let text = format!("1/{id}/after");
            let applied = loop {
                // Until the survivors elect a new leader, a proposal may be
                // refused, or its fate unknown (and applied after all): the
                // check below wants each text at least once.
                match node.propose_in(1, batch(&text)).await {
                    Ok(a) => break a,
                    Err(e) => {
                        tracing::debug!("retrying: {e}");
                        shard_leader(node, 1, &rest).await;
                    }
                }
            };
            assert_eq!(applied.outcome, Outcome::Batched);
            expected.entry(1).or_default().push(Bytes::from(text));
        }
        for rx in seen.values_mut() {
            rx.wait_for(|c| {
                let got = payloads(c, 1);
                expected[&1].iter().all(|p| got.contains(p))
            })
            .await
            .expect("committed");
        }

        // The stopped node comes back and applies its shards again from the start.
        let back = ClusterNode::start(config(leader, &members, &root))
            .await
            .expect("the node restarts");
        let mut back_seen = collect_committed(&back);
        let survivor = seen.values().next().unwrap().borrow().clone();
        back_seen
            .wait_for(|c| {
                payloads(c, 1) == payloads(&survivor, 1) && payloads(c, 2) == payloads(&survivor, 2)
            })
            .await
            .expect("committed");
        nodes.insert(leader, back);

        for (_, node) in nodes {
            node.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&root);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_purged_log_catches_up_from_a_snapshot() {
    bounded(Duration::from_secs(60), async {
        let root = temp_dir("snapshots");
        const EVERY: u64 = 20;
        let members: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, free_endpoint())).collect();
        let config = |id| NodeConfig {
            shard_snapshot_every_entries: EVERY,
            ..config(id, &members, &root)
        };
        let (a, b, c) = tokio::join!(
            ClusterNode::start(config(1)),
            ClusterNode::start(config(2)),
            ClusterNode::start(config(3)),
        );
        let mut nodes: BTreeMap<NodeId, ClusterNode> = [a, b, c]
            .into_iter()
            .map(|n| {
                let n = n.expect("the node starts");
                (n.node_id(), n)
            })
            .collect();
        let mut seen: BTreeMap<NodeId, _> = nodes
            .iter()
            .map(|(id, n)| (*id, collect_committed(n)))
            .collect();

        // Node 3 stops; the others commit far past a snapshot (and the
        // purge that follows it) without it.
        nodes.remove(&3).unwrap().shutdown().await;
        seen.remove(&3);
        let rest = [1, 2];
        let mut expected = Vec::new();
        for i in 0..(5 * EVERY) {
            let text = format!("1/{i}");
            loop {
                match nodes[&1].propose_in(1, batch(&text)).await {
                    Ok(a) => {
                        assert_eq!(a.outcome, Outcome::Batched);
                        break;
                    }
                    // A leader may be elected meanwhile: asked again, a
                    // batch may be committed twice.
                    Err(_) => {
                        shard_leader(&nodes[&1], 1, &rest).await;
                    }
                }
            }
            expected.push(Bytes::from(text));
        }
        let committed = seen
            .get_mut(&1)
            .unwrap()
            .wait_for(|c| {
                let got = payloads(c, 1);
                expected.iter().all(|p| got.contains(p))
            })
            .await
            .expect("committed")
            .clone();
        let survivor = payloads(&committed, 1);
        for rx in seen.values_mut() {
            rx.wait_for(|c| payloads(c, 1) == survivor)
                .await
                .expect("committed");
        }

        // Node 3 comes back behind the purged log: the leader sends it a
        // snapshot, which its application gets before the entries after it.
        let back = ClusterNode::start(config(3)).await.expect("restarts");
        let (mut back_seen, mut restored) = application(&back);
        back_seen
            .wait_for(|c| payloads(c, 1) == survivor)
            .await
            .expect("caught up");
        let first = restored
            .wait_for(|r| r.iter().any(|(g, _)| *g == 1))
            .await
            .expect("restored")
            .clone();
        assert!(
            first.iter().any(|(g, i)| *g == 1 && *i >= EVERY),
            "{first:?}"
        );
        nodes.insert(3, back);

        // Every node restarted starts from its own snapshot and catches up.
        for id in [1, 2, 3] {
            nodes.remove(&id).unwrap().shutdown().await;
        }
        let (a, b, c) = tokio::join!(
            ClusterNode::start(config(1)),
            ClusterNode::start(config(2)),
            ClusterNode::start(config(3)),
        );
        for node in [a, b, c] {
            let node = node.expect("restarts");
            let (mut again, mut restored) = application(&node);
            again
                .wait_for(|c| payloads(c, 1) == survivor)
                .await
                .expect("caught up");
            assert!(restored.borrow_and_update().iter().any(|(g, _)| *g == 1));
            nodes.insert(node.node_id(), node);
        }
        for (_, node) in nodes {
            node.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&root);
    })
    .await;
}
