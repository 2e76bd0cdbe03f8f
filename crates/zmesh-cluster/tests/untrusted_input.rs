//! What a peer or a disk may hand a node: the fuzz target's invariants on
//! seeded random and mutated frames, garbage on a live node's cluster
//! endpoint, and a damaged catalog snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::raft::{VoteRequest, VoteResponse};
use openraft::type_config::alias::VoteOf;
use zmesh::{Message, Socket, SocketOptions, SocketType};
use zmesh_cluster::{
    Answer, CatalogError, ClusterNode, Command, NodeConfig, Outcome, Reply, Request, Rpc,
    StartError, Timing, Types,
};
use zmesh_testkit::net::{bounded, free_endpoint};

use zmesh_testkit::rng::SeededRng;

fn vote_request(group: u32) -> Request {
    vote_request_to("test", 1, group)
}

fn vote_request_to(cluster: &str, node: u64, group: u32) -> Request {
    let vote = VoteOf::<Types>::new(3, 2);
    Request::new(
        cluster,
        node,
        7,
        group,
        Rpc::Vote(VoteRequest::new(vote, None)),
    )
}

fn seeds() -> Vec<Vec<u8>> {
    let vote = VoteOf::<Types>::new(3, 2);
    vec![
        vote_request(0).encode().unwrap(),
        Request::new("test", 1, 1, 0, Rpc::PreVote(VoteRequest::new(vote, None)))
            .encode()
            .unwrap(),
        Reply::new(4, Answer::Vote(VoteResponse::new(vote, None, false)))
            .encode()
            .unwrap(),
        Reply::new(
            5,
            Answer::Refused {
                reason: "no group 9 on this node".into(),
            },
        )
        .encode()
        .unwrap(),
    ]
}

/// Whatever decodes encodes to bytes that decode and encode to themselves.
fn check(frame: &[u8]) {
    if let Ok(request) = Request::decode(frame) {
        let once = request.encode().expect("a decoded request encodes");
        let twice = Request::decode(&once)
            .expect("re-decodes")
            .encode()
            .unwrap();
        assert_eq!(once, twice);
    }
    if let Ok(reply) = Reply::decode(frame) {
        let once = reply.encode().expect("a decoded reply encodes");
        let twice = Reply::decode(&once).expect("re-decodes").encode().unwrap();
        assert_eq!(once, twice);
    }
}

#[test]
fn frames_never_panic_and_what_decodes_round_trips() {
    let seeds = seeds();
    let mut rng = SeededRng::new(0x5eed_c1a5_7e12_0001);
    for round in 0..20_000usize {
        let frame: Vec<u8> = if round % 2 == 0 {
            let n = (rng.next_u64() % 96) as usize;
            (0..n).map(|_| rng.next_u64() as u8).collect()
        } else {
            let mut s = seeds[round % seeds.len()].clone();
            for _ in 0..(rng.next_u64() % 4) {
                let i = (rng.next_u64() as usize) % (s.len() + 1);
                match rng.next_u64() % 3 {
                    0 if i < s.len() => s[i] ^= 1 << (rng.next_u64() % 8),
                    1 => s.insert(i, rng.next_u64() as u8),
                    _ => s.truncate(i),
                }
            }
            s
        };
        check(&frame);
    }
}

fn single_node(endpoint: &str, dir: std::path::PathBuf) -> NodeConfig {
    NodeConfig {
        cluster_name: "test".into(),
        node_id: 1,
        members: BTreeMap::from([(1, endpoint.to_owned())]),
        dir,
        timing: Timing::default(),
        shards: 1,
        shard_snapshot_every_entries: zmesh_cluster::SHARD_SNAPSHOT_EVERY_ENTRIES,
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zmesh-cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn garbage_on_the_cluster_endpoint_is_counted_and_the_node_goes_on() {
    bounded(Duration::from_secs(30), async {
        let dir = temp_dir("garbage");
        let node = ClusterNode::start(single_node(&free_endpoint(), dir.clone()))
            .await
            .expect("the node starts");
        let peer = Socket::new(SocketType::Dealer, SocketOptions::default()).unwrap();
        peer.connect(node.endpoint()).await.unwrap();

        let garbage: Vec<Message> = vec![
            Message::single(&b"\xc1"[..]),
            Message::single(&b"not messagepack at all"[..]),
            Message::single(vote_request(0).encode().unwrap()[..5].to_vec()),
        ];
        let sent = garbage.len() as u64;
        for m in garbage {
            peer.send(m).await.unwrap();
        }
        // A well-formed request for a group the node does not have is
        // refused with an answer; the server reads in order, so the garbage
        // before it has been counted when the answer comes.
        peer.send(Message::single(vote_request(9).encode().unwrap()))
            .await
            .unwrap();
        let answer = peer.recv().await.unwrap();
        let reply = Reply::decode(answer.frame_slice(0).unwrap()).expect("a reply");
        assert_eq!(reply.id(), 7);
        assert!(
            matches!(reply.answer(), Answer::Refused { reason } if reason.contains("no group 9")),
            "a refusal names the group"
        );
        assert_eq!(node.undecodable_frames(), sent);
        // A request for another cluster, or another node, is refused too.
        for request in [
            vote_request_to("other", 1, 0),
            vote_request_to("test", 2, 0),
        ] {
            peer.send(Message::single(request.encode().unwrap()))
                .await
                .unwrap();
            let answer = peer.recv().await.unwrap();
            let reply = Reply::decode(answer.frame_slice(0).unwrap()).expect("a reply");
            assert!(
                matches!(reply.answer(), Answer::Refused { reason } if reason.contains("not node")),
                "a refusal says who this is"
            );
        }

        // The node still takes proposals, once it leads.
        node.watch_leader()
            .wait_for(|l| *l == Some(1))
            .await
            .expect("leader watch");
        assert_eq!(
            node.propose(Command::DeclareQueue {
                name: "q".into(),
                options: vec![],
                exact: true,
            })
            .await
            .map(|a| a.outcome),
            Ok(Outcome::Created { options: vec![] })
        );
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn a_damaged_catalog_snapshot_is_refused_with_its_path() {
    let dir = temp_dir("damaged");
    std::fs::create_dir_all(dir.join("metadata")).unwrap();
    std::fs::write(dir.join("metadata/catalog.snapshot"), b"\x92\x01").unwrap();
    let refused = ClusterNode::start(single_node(&free_endpoint(), dir.clone())).await;
    match refused {
        Err(StartError::Catalog(CatalogError::Damaged { path, .. })) => {
            assert!(path.ends_with("metadata/catalog.snapshot"))
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a damaged snapshot was accepted"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
