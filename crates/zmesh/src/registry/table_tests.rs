//! Deterministic tests of the registry state machine: events in, states out.

use std::time::Duration;

use super::*;

const EP: &str = "tcp://127.0.0.1:5555";

fn t(msgs_in: u64, msgs_out: u64) -> Traffic {
    Traffic {
        msgs_in,
        bytes_in: msgs_in * 10,
        msgs_out,
        bytes_out: msgs_out * 10,
    }
}

fn ready(endpoint: &str, id: u64) -> LinkEvent {
    LinkEvent::HandshakeSucceeded {
        endpoint: endpoint.into(),
        connection_id: id,
        remote: Some("127.0.0.1:5555".into()),
        identity: Some(Bytes::from_static(b"w1")),
        zmtp_version: (3, 1),
        mechanism: Some("NULL".into()),
        user: None,
    }
}

fn dialed_cycle(table: &mut SocketTable, id: u64, now: u64) -> Vec<StateChange> {
    let mut all = table.apply(
        now,
        LinkEvent::Connected {
            endpoint: EP.into(),
            remote: None,
            connection_id: id,
        },
        &t(0, 0),
    );
    all.extend(table.apply(now + 1, ready(EP, id), &t(0, 0)));
    all
}

fn states(changes: &[StateChange]) -> Vec<PeerState> {
    changes.iter().map(|c| c.to).collect()
}

#[test]
fn dialed_peer_goes_connecting_handshaking_active() {
    let mut table = SocketTable::default();
    let c = table.apply(
        0,
        LinkEvent::Dialing {
            endpoint: EP.into(),
        },
        &t(0, 0),
    );
    assert_eq!(states(&c), [PeerState::Connecting]);
    assert_eq!(c[0].from, None);
    let c = dialed_cycle(&mut table, 1, 10);
    assert_eq!(states(&c), [PeerState::Handshaking, PeerState::Active]);
    let s = &table.snapshot(&t(0, 0))[0];
    assert_eq!(s.identity.as_deref(), Some("w1"));
    assert_eq!(s.zmtp_version.as_deref(), Some("3.1"));
    assert_eq!(s.reconnects, 0);
}

#[test]
fn reconnect_counts_and_backoff_is_recorded() {
    let mut table = SocketTable::default();
    table.apply(
        0,
        LinkEvent::Dialing {
            endpoint: EP.into(),
        },
        &t(0, 0),
    );
    dialed_cycle(&mut table, 1, 1);
    let c = table.apply(
        5,
        LinkEvent::Disconnected {
            endpoint: EP.into(),
            connection_id: 1,
            reason: CloseReason::PeerClosed,
        },
        &t(0, 0),
    );
    assert_eq!(states(&c), [PeerState::Closed]);
    let c = table.apply(
        6,
        LinkEvent::RetryScheduled {
            endpoint: EP.into(),
            retry_in: Duration::from_millis(200),
            attempt: 2,
        },
        &t(0, 0),
    );
    assert_eq!(states(&c), [PeerState::BackingOff]);
    assert_eq!(c[0].reason.as_deref(), Some("retry #2 in 200 ms"));
    let s = &table.snapshot(&t(0, 0))[0];
    assert_eq!((s.attempt, s.retry_in_ms), (2, Some(200)));
    dialed_cycle(&mut table, 2, 10);
    let s = &table.snapshot(&t(0, 0))[0];
    assert_eq!(
        (s.state, s.reconnects, s.attempt, s.retry_in_ms),
        (PeerState::Active, 1, 0, None)
    );
}

#[test]
fn stale_disconnect_of_a_replaced_connection_is_ignored() {
    let mut table = SocketTable::default();
    table.apply(
        0,
        LinkEvent::Dialing {
            endpoint: EP.into(),
        },
        &t(0, 0),
    );
    dialed_cycle(&mut table, 1, 1);
    dialed_cycle(&mut table, 2, 2);
    let c = table.apply(
        3,
        LinkEvent::Disconnected {
            endpoint: EP.into(),
            connection_id: 1,
            reason: CloseReason::LocalClose,
        },
        &t(0, 0),
    );
    assert!(c.is_empty());
    assert_eq!(table.snapshot(&t(0, 0))[0].state, PeerState::Active);
}

#[test]
fn heartbeat_timeouts_are_counted_with_the_reason() {
    let mut table = SocketTable::default();
    table.apply(
        0,
        LinkEvent::Dialing {
            endpoint: EP.into(),
        },
        &t(0, 0),
    );
    dialed_cycle(&mut table, 1, 1);
    let c = table.apply(
        9,
        LinkEvent::Disconnected {
            endpoint: EP.into(),
            connection_id: 1,
            reason: CloseReason::HeartbeatTimeout,
        },
        &t(0, 0),
    );
    assert_eq!(c[0].reason.as_deref(), Some("heartbeat timeout"));
    let s = &table.snapshot(&t(0, 0))[0];
    assert_eq!(s.heartbeat_timeouts, 1);
    assert_eq!(s.last_error.as_deref(), Some("heartbeat timeout"));
}

#[test]
fn inbound_handshake_failure_closes_the_right_peer() {
    let mut table = SocketTable::default();
    for (id, port) in [(1, 1000), (2, 2000)] {
        table.apply(
            0,
            LinkEvent::Accepted {
                endpoint: EP.into(),
                remote: Some(format!("10.0.0.1:{port}")),
                connection_id: id,
            },
            &t(0, 0),
        );
    }
    let c = table.apply(
        1,
        LinkEvent::HandshakeFailed {
            endpoint: EP.into(),
            remote: Some("10.0.0.1:2000".into()),
            reason: "bad greeting".into(),
        },
        &t(0, 0),
    );
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].peer, PeerKey::Accepted(2));
    assert_eq!(
        c[0].reason.as_deref(),
        Some("handshake failed: bad greeting")
    );
    assert_eq!(table.count_in(PeerState::Handshaking), 1);
}

#[test]
fn closed_inbound_peers_are_bounded() {
    let mut table = SocketTable::new(3);
    for id in 0..10 {
        table.apply(
            0,
            LinkEvent::Accepted {
                endpoint: EP.into(),
                remote: None,
                connection_id: id,
            },
            &t(0, 0),
        );
        table.apply(0, ready(EP, id), &t(0, 0));
        table.apply(
            0,
            LinkEvent::Disconnected {
                endpoint: EP.into(),
                connection_id: id,
                reason: CloseReason::PeerClosed,
            },
            &t(0, 0),
        );
    }
    let snap = table.snapshot(&t(0, 0));
    assert_eq!(snap.len(), 3);
    assert_eq!(
        snap.iter()
            .map(|p| p.connection_id.unwrap())
            .collect::<Vec<_>>(),
        [7, 8, 9]
    );
}

#[test]
fn traffic_is_exact_for_a_sole_peer_and_frozen_once_shared() {
    let mut table = SocketTable::default();
    table.apply(
        0,
        LinkEvent::Accepted {
            endpoint: EP.into(),
            remote: None,
            connection_id: 1,
        },
        &t(5, 5),
    );
    table.apply(0, ready(EP, 1), &t(5, 5));
    // Sole active peer: everything since it became active is its own.
    let s = table.snapshot(&t(8, 6));
    assert_eq!(
        (
            s[0].traffic.msgs_in,
            s[0].traffic.msgs_out,
            s[0].traffic_exact
        ),
        (3, 1, true)
    );
    // A second peer joins: the first freezes, neither is exact any more.
    table.apply(
        1,
        LinkEvent::Accepted {
            endpoint: EP.into(),
            remote: None,
            connection_id: 2,
        },
        &t(10, 6),
    );
    table.apply(1, ready(EP, 2), &t(10, 6));
    let s = table.snapshot(&t(50, 50));
    assert_eq!((s[0].traffic.msgs_in, s[0].traffic_exact), (5, false));
    assert_eq!((s[1].traffic.msgs_in, s[1].traffic_exact), (0, false));
}

#[test]
fn socket_close_closes_everything_and_resync_drops_vanished_links() {
    let mut table = SocketTable::default();
    table.apply(
        0,
        LinkEvent::Dialing {
            endpoint: EP.into(),
        },
        &t(0, 0),
    );
    dialed_cycle(&mut table, 1, 1);
    table.apply(
        0,
        LinkEvent::Accepted {
            endpoint: EP.into(),
            remote: None,
            connection_id: 7,
        },
        &t(0, 0),
    );
    table.apply(0, ready(EP, 7), &t(0, 0));
    // Events lagged; the engine says only connection 1 is alive.
    let c = table.resync(5, &[(1, EP.into(), true)], "lagged", &t(0, 0));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].peer, PeerKey::Accepted(7));
    let c = table.apply(6, LinkEvent::SocketClosed, &t(0, 0));
    assert_eq!(states(&c), [PeerState::Closed]);
    assert_eq!(table.count_in(PeerState::Closed), 2);
}

#[test]
fn gave_up_records_the_refusal() {
    let mut table = SocketTable::default();
    table.apply(
        0,
        LinkEvent::Dialing {
            endpoint: EP.into(),
        },
        &t(0, 0),
    );
    let c = table.apply(
        1,
        LinkEvent::GaveUp {
            endpoint: EP.into(),
            reason: CloseReason::Refused("bad key".into()),
        },
        &t(0, 0),
    );
    assert_eq!(states(&c), [PeerState::Closed]);
    assert_eq!(
        table.snapshot(&t(0, 0))[0].last_error.as_deref(),
        Some("handshake refused: bad key")
    );
}

#[test]
fn refusal_reason_is_attached_to_the_matching_handshake_failure() {
    let mut table = SocketTable::default();
    for (id, port) in [(1, 1000), (2, 2000)] {
        let ev = LinkEvent::Accepted {
            endpoint: EP.into(),
            remote: Some(format!("10.0.0.1:{port}")),
            connection_id: id,
        };
        table.apply(0, ev, &t(0, 0));
    }
    // The policy sees only the IP; the engine's failure names ip:port.
    table.refuse(Some("10.0.0.1"), "client key X is not allowed");
    let ev = LinkEvent::HandshakeFailed {
        endpoint: EP.into(),
        remote: Some("10.0.0.1:2000".into()),
        reason: "CURVE authentication failed with status 400".into(),
    };
    let c = table.apply(1, ev, &t(0, 0));
    assert_eq!(c[0].peer, PeerKey::Accepted(2));
    assert_eq!(
        c[0].reason.as_deref(),
        Some("authentication refused: client key X is not allowed")
    );
    assert_eq!(table.count_in(PeerState::Handshaking), 1);
}

#[test]
fn a_handshake_that_ends_unseen_is_found_by_the_tick() {
    let mut table = SocketTable::default();
    let ev = LinkEvent::Accepted {
        endpoint: EP.into(),
        remote: None,
        connection_id: 3,
    };
    table.apply(1_000, ev, &t(0, 0));
    assert!(!table.tick(1_500, 6_000), "not stale yet");
    assert!(table.tick(8_000, 6_000), "stale: ask the engine");
    let c = table.resync(8_000, &[], "peer hung up during the handshake", &t(0, 0));
    assert_eq!(states(&c), [PeerState::Closed]);
    assert!(!table.tick(9_000, 6_000));
}
