//! The outbox against a stand-in ROUTER: order, congestion, overflow and counts.

use std::cell::RefCell;

use super::*;

/// A ROUTER stand-in: per-peer room in messages; an unknown peer is unroutable.
#[derive(Default)]
struct Peers {
    room: RefCell<HashMap<Bytes, usize>>,
    got: RefCell<Vec<(Bytes, Bytes)>>,
}

impl Peers {
    fn with(peers: &[(&'static str, usize)]) -> Self {
        let p = Peers::default();
        for (name, room) in peers {
            p.room
                .borrow_mut()
                .insert(Bytes::from_static(name.as_bytes()), *room);
        }
        p
    }
    fn make_room(&self, peer: &'static str, n: usize) {
        *self.room.borrow_mut().get_mut(peer.as_bytes()).unwrap() += n;
    }
    fn got(&self, peer: &str) -> Vec<Bytes> {
        self.got
            .borrow()
            .iter()
            .filter(|(p, _)| p == peer.as_bytes())
            .map(|(_, b)| b.clone())
            .collect()
    }
}

impl PeerSink for Peers {
    fn try_send(&self, msg: Message) -> Result<(), TrySendError> {
        let peer = peer_of(&msg);
        let mut room = self.room.borrow_mut();
        match room.get_mut(&peer) {
            None => Err(TrySendError::Failed(Error::Unroutable)),
            Some(0) => Err(TrySendError::Full(msg)),
            Some(n) => {
                *n -= 1;
                self.got.borrow_mut().push((peer, msg.frame(1).unwrap()));
                Ok(())
            }
        }
    }
}

fn msg(peer: &str, body: &str) -> Message {
    Message::from_frames([peer.to_owned(), body.to_owned()])
}

#[test]
fn a_full_peer_waits_in_order_while_others_go_on() {
    let t0 = Instant::now();
    let peers = Peers::with(&[("slow", 1), ("fast", 100)]);
    let mut out = Outbox::default();
    for i in 0..5 {
        out.send(&peers, t0, Product::Mdp, msg("slow", &i.to_string()))
            .unwrap();
        out.send(&peers, t0, Product::Mdp, msg("fast", &i.to_string()))
            .unwrap();
    }
    assert_eq!(
        peers.got("fast").len(),
        5,
        "a full peer holds up no one else"
    );
    assert_eq!(peers.got("slow"), ["0"]);
    let s = out.stats();
    assert_eq!((s.waiting_messages, s.blocked_peers), (4, 1));
    assert_eq!(out.retry_at(), Some(t0 + RETRY_MIN));

    // Nothing taken: the retry backs off.
    out.retry(&peers, t0).unwrap();
    assert_eq!(out.retry_at(), Some(t0 + RETRY_MIN * 2));
    peers.make_room("slow", 2);
    out.retry(&peers, t0).unwrap();
    assert_eq!(peers.got("slow"), ["0", "1", "2"]);
    assert_eq!(
        out.retry_at(),
        Some(t0 + RETRY_MIN),
        "progress resets the backoff"
    );
    // A message sent meanwhile goes behind the waiting ones, not ahead.
    peers.make_room("slow", 1);
    out.send(&peers, t0, Product::Mdp, msg("slow", "late"))
        .unwrap();
    assert_eq!(peers.got("slow"), ["0", "1", "2"]);
    peers.make_room("slow", 10);
    out.retry(&peers, t0).unwrap();
    assert_eq!(peers.got("slow"), ["0", "1", "2", "3", "4", "late"]);
    assert!(out.is_empty());
    assert_eq!(out.retry_at(), None);
    assert_eq!(out.stats().waited_total, 5);
}

fn sized(peer: &str, n: usize) -> Message {
    Message::from_frames([Bytes::from(peer.to_owned()), Bytes::from(vec![0u8; n])])
}

#[test]
fn a_peer_past_its_soft_bound_is_congested_until_it_drains_below_half() {
    let t0 = Instant::now();
    let limits = OutboxLimits {
        peer_soft_bytes: 1000,
        peer_hard_bytes: 10_000,
        total_bytes: 100_000,
    };
    let peers = Peers::with(&[("slow", 0)]);
    let mut out = Outbox::new(limits);
    for _ in 0..4 {
        out.send(&peers, t0, Product::Queue, sized("slow", 300))
            .unwrap();
    }
    // 4 x 304 bytes (routing frame included): past 1,000 at the fourth;
    // relieved at 304 waiting, not at 608.
    assert_eq!(out.take_events(), [OutboxEvent::Congested("slow".into())]);
    assert_eq!(out.stats().congested_peers, 1);
    peers.make_room("slow", 1);
    out.retry(&peers, t0).unwrap();
    assert_eq!(out.take_events(), [], "still above half the soft bound");
    peers.make_room("slow", 2);
    out.retry(&peers, t0).unwrap();
    assert_eq!(out.take_events(), [OutboxEvent::Relieved("slow".into())]);
    assert_eq!(out.stats().congested_peers, 0);
}

#[test]
fn a_peer_past_its_hard_bound_overflows_and_what_waited_is_counted() {
    let t0 = Instant::now();
    let limits = OutboxLimits {
        peer_soft_bytes: 1000,
        peer_hard_bytes: 2000,
        total_bytes: 100_000,
    };
    let peers = Peers::with(&[("slow", 0)]);
    let mut out = Outbox::new(limits);
    for _ in 0..7 {
        out.send(&peers, t0, Product::Stream, sized("slow", 300))
            .unwrap();
    }
    assert_eq!(
        out.take_events(),
        [
            OutboxEvent::Congested("slow".into()),
            OutboxEvent::Overflowed("slow".into()),
        ],
        "not relieved: no new work for a peer about to be disconnected"
    );
    assert_eq!(out.dropped(Product::Stream, DropReason::Overflow), 7);
    assert!(out.is_empty());
    assert_eq!(out.retry_at(), None);
    let s = out.stats();
    assert_eq!((s.waiting_bytes, s.overflowed_peers_total), (0, 1));
    assert_eq!(s.congested_peers, 1);
    // Until its connection closes, what is sent to it is dropped and counted.
    peers.make_room("slow", 10);
    out.send(&peers, t0, Product::Stream, sized("slow", 1))
        .unwrap();
    assert!(peers.got("slow").is_empty());
    assert_eq!(out.dropped(Product::Stream, DropReason::Overflow), 8);
    out.peer_gone(&"slow".into());
    assert_eq!(out.stats().congested_peers, 0);
    out.send(&peers, t0, Product::Stream, sized("slow", 1))
        .unwrap();
    assert_eq!(peers.got("slow").len(), 1, "a new connection starts afresh");
}

#[test]
fn past_the_broker_wide_bound_the_biggest_peer_overflows() {
    let t0 = Instant::now();
    let limits = OutboxLimits {
        peer_soft_bytes: 10_000,
        peer_hard_bytes: 10_000,
        total_bytes: 1000,
    };
    let peers = Peers::with(&[("a", 0), ("b", 0)]);
    let mut out = Outbox::new(limits);
    out.send(&peers, t0, Product::Mdp, sized("a", 700)).unwrap();
    out.send(&peers, t0, Product::Mdp, sized("b", 300)).unwrap();
    out.send(&peers, t0, Product::Mdp, sized("b", 300)).unwrap();
    assert_eq!(
        out.take_events(),
        [
            OutboxEvent::Congested("a".into()),
            OutboxEvent::Overflowed("a".into())
        ]
    );
    assert_eq!(out.stats().blocked_peers, 1);
    assert_eq!(out.dropped(Product::Mdp, DropReason::Overflow), 1);
}

#[test]
fn a_closed_peer_s_waiting_messages_are_dropped_not_sent_to_its_successor() {
    let t0 = Instant::now();
    let peers = Peers::with(&[("w", 0)]);
    let mut out = Outbox::new(OutboxLimits {
        peer_soft_bytes: 10,
        peer_hard_bytes: 10_000,
        total_bytes: 100_000,
    });
    out.send(&peers, t0, Product::Mdp, msg("w", "old request"))
        .unwrap();
    out.send(&peers, t0, Product::Mdp, msg("w", "old request 2"))
        .unwrap();
    assert_eq!(out.take_events(), [OutboxEvent::Congested("w".into())]);
    out.peer_gone(&"w".into());
    assert_eq!(out.dropped(Product::Mdp, DropReason::Unroutable), 2);
    let s = out.stats();
    assert_eq!(
        (s.waiting_messages, s.blocked_peers, s.congested_peers),
        (0, 0, 0)
    );
    // The same routing id on a new connection gets only what is new.
    peers.make_room("w", 5);
    out.send(&peers, t0, Product::Mdp, msg("w", "new")).unwrap();
    assert_eq!(peers.got("w"), ["new"]);
}

#[test]
fn undeliverable_messages_are_counted_by_product_and_reason() {
    let t0 = Instant::now();
    let peers = Peers::with(&[("slow", 0)]);
    let mut out = Outbox::default();
    out.send(&peers, t0, Product::Queue, msg("gone", "x"))
        .unwrap();
    out.send(&peers, t0, Product::Stream, msg("slow", "y"))
        .unwrap();
    out.send(&peers, t0, Product::Stream, msg("slow", "z"))
        .unwrap();
    assert_eq!(out.dropped(Product::Queue, DropReason::Unroutable), 1);
    // The peer goes away while its messages wait.
    peers.room.borrow_mut().remove(&b"slow"[..]);
    out.retry(&peers, t0).unwrap();
    assert_eq!(out.dropped(Product::Stream, DropReason::Unroutable), 2);
    assert!(out.is_empty());

    let peers = Peers::with(&[("slow", 0)]);
    out.send(&peers, t0, Product::Mdp, msg("slow", "w"))
        .unwrap();
    out.abandon();
    assert_eq!(out.dropped(Product::Mdp, DropReason::Shutdown), 1);
    let s = out.stats();
    assert_eq!(s.dropped.len(), 12);
    assert_eq!(s.dropped.iter().map(|d| d.messages).sum::<u64>(), 4);
    assert_eq!((s.waiting_messages, s.waiting_bytes), (0, 0));
}
