//! The broker under load: ZMDPW1 credit, drain, bounded tables, batches,
//! bursts, congestion and busy workers.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn zmdpw1_ready(b: &mut Broker, now: Instant, w: &str, credit: u32) -> Vec<Action> {
    let credit = credit.to_be_bytes();
    b.handle(now, &id(w), &f(&[b"ZMDPW1", b"\x01", b"s", &credit]))
}

/// The handles of every ZMDPW1 REQUEST in `actions`, batched or not.
fn zmdpw1_requests(actions: &[Action]) -> Vec<Bytes> {
    coalesce(actions.to_vec())
        .iter()
        .flat_map(
            |Action::Send { frames, .. }| match mdp::batch::is_batch(frames) {
                true => mdp::batch::split(frames).unwrap(),
                false => vec![frames.clone()],
            },
        )
        .filter(|m| m[0] == "ZMDPW1" && m[1].as_ref() == [0x02])
        .map(|m| m[2].clone())
        .collect()
}

fn zmesh_request(id_: u64) -> Vec<Bytes> {
    let rid = id_.to_be_bytes();
    f(&[b"ZMDPC1", b"\x01", &rid, b"s", b"body"])
}

#[test]
fn a_zmdpw1_worker_holds_up_to_its_credit() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    zmdpw1_ready(&mut b, t0, "w", 3);
    let batch = mdp::batch::join(&(1..=4).map(zmesh_request).collect::<Vec<_>>());
    let a = b.handle(t0, &id("c"), &batch);
    let handles = zmdpw1_requests(&a);
    assert_eq!(
        handles.len(),
        3,
        "three slots, three requests; the fourth waits"
    );
    assert_eq!(b.queued("s"), 1);
    assert_eq!(coalesce(a).len(), 1, "the three go out as one BATCH");
    // A batch of two final replies frees two slots: the waiting one goes out,
    // and both answers reach the client as one BATCH.
    let finals: Vec<Vec<Bytes>> = handles[..2]
        .iter()
        .map(|h| {
            let mut m = f(&[b"ZMDPW1", b"\x04"]);
            m.extend([h.clone(), Bytes::new(), Bytes::from_static(b"ok")]);
            m
        })
        .collect();
    let a = coalesce(b.handle(t0, &id("w"), &mdp::batch::join(&finals)));
    assert_eq!(zmdpw1_requests(&a).len(), 1);
    let to_client = sent_to(&a, "c");
    assert_eq!(to_client.len(), 1);
    assert_eq!(mdp::batch::split(to_client[0]).unwrap().len(), 2);
    assert_eq!(b.requests_held(), 2);
}

#[test]
fn a_dead_zmdpw1_worker_releases_every_request_it_held() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    zmdpw1_ready(&mut b, t0, "w", 4);
    for i in 0..3 {
        b.handle(t0, &id("c"), &zmesh_request(i));
    }
    // Not idempotent: each of the three gets its own 503, none is lost.
    let a = b.handle(t0, &id("w"), &f(&[b"ZMDPW1", b"\x06"]));
    let errors: Vec<_> = sent_to(&a, "c")
        .into_iter()
        .filter(|m| m[1].as_ref() == [mdp::cmd::Z_ERROR] && m[4] == "503")
        .collect();
    assert_eq!(errors.len(), 3);
    assert_eq!(b.requests_held(), 0);
    assert_eq!(
        b.services()[0].idle,
        0,
        "no slot of the gone worker is left"
    );
}

#[test]
fn drain_stops_dispatch_and_is_confirmed_after_the_last_request() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    zmdpw1_ready(&mut b, t0, "w", 2);
    let h = zmdpw1_requests(&b.handle(t0, &id("c"), &zmesh_request(1)));
    let a = b.handle(t0, &id("w"), &f(&[b"ZMDPW1", b"\x07"]));
    assert_eq!(sent_to(&a, "w"), vec![&f(&[b"ZMDPW1", b"\x07"])]);
    // New work waits for another worker; the held request is still answered.
    assert!(zmdpw1_requests(&b.handle(t0, &id("c"), &zmesh_request(2))).is_empty());
    let mut fin = f(&[b"ZMDPW1", b"\x04"]);
    fin.extend([h[0].clone(), Bytes::new()]);
    let a = b.handle(t0, &id("w"), &fin);
    assert_eq!(sent_to(&a, "c").len(), 1);
    assert!(
        zmdpw1_requests(&a).is_empty(),
        "no slot comes back while draining"
    );
    assert_eq!(b.queued("s"), 1);
}

#[test]
fn made_up_service_names_are_bounded_then_forgotten() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut b = Broker::new(BrokerConfig {
        services_max: 3,
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    ready(&mut b, t0, "w", "real");
    for (ms, name) in [(0, "x1"), (500, "x2")] {
        let t = t0 + Duration::from_millis(ms);
        assert!(
            request(&mut b, t, "c", name, "?").is_empty(),
            "waits for a worker"
        );
    }
    // Full, and every service in use (a worker, requests waiting): refused.
    let a = request(&mut b, t0, "c", "x3", "?");
    assert_eq!(sent_to(&a, "c")[0][3], "503");
    assert!(String::from_utf8_lossy(&sent_to(&a, "c")[0][4]).contains("limit"));
    assert_eq!(b.services().len(), 3);
    // Once x1 and x2 time out they are unused: a new name takes the place of
    // the one idle longest, and "real" (with its worker) stays.
    b.tick(at(2));
    assert!(request(&mut b, at(3), "c", "x3", "?").is_empty());
    let names: Vec<String> = b.services().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["real", "x2", "x3"]);
    // A minute unused and they are forgotten anyway.
    let later = at(5) + SERVICE_IDLE_EXPIRY;
    b.handle(later, &id("w"), &f(&[b"", b"MDPW01", b"\x04"])); // the worker lives on
    b.tick(later);
    let names: Vec<String> = b.services().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["real"]);
}

#[test]
fn total_credit_is_bounded() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig {
        slots_max: 10,
        ..Default::default()
    });
    zmdpw1_ready(&mut b, t0, "w1", 8);
    zmdpw1_ready(&mut b, t0, "w2", 8); // gets the 2 slots left
    let a = zmdpw1_ready(&mut b, t0, "w3", 8); // none left: refused
    assert_eq!(sent_to(&a, "w3"), vec![&f(&[b"ZMDPW1", b"\x06"])]);
    assert_eq!(b.workers_registered(), 2);
    assert_eq!(b.services()[0].idle, 10);
    b.handle(t0, &id("w1"), &f(&[b"ZMDPW1", b"\x06"]));
    assert_eq!(b.services()[0].idle, 2);
    zmdpw1_ready(&mut b, t0, "w3", 8);
    assert_eq!(b.services()[0].idle, 10, "w1's slots went to w3");
}

#[test]
fn a_bad_request_in_a_batch_costs_only_itself() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    zmdpw1_ready(&mut b, t0, "w", 4);
    let bad = f(&[b"ZMDPC1", b"\x01", b"badbadba", b"no such name"]);
    let batch = mdp::batch::join(&[zmesh_request(1), bad, zmesh_request(2)]);
    let a = b.handle(t0, &id("c"), &batch);
    assert_eq!(
        zmdpw1_requests(&a).len(),
        2,
        "the good two go to the worker"
    );
    let to_client = sent_to(&a, "c");
    assert_eq!(to_client.len(), 1);
    assert_eq!(to_client[0][1].as_ref(), [mdp::cmd::Z_ERROR]);
    assert_eq!(to_client[0][2], "badbadba", "answered by its own id");
    assert_eq!(to_client[0][4], "400");
    // From a worker, the valid replies of a batch are taken before the
    // invalid item gets it disconnected.
    let h = zmdpw1_requests(&a);
    let mut fin = f(&[b"ZMDPW1", b"\x04"]);
    fin.extend([h[0].clone(), Bytes::new()]);
    let a = b.handle(
        t0,
        &id("w"),
        &mdp::batch::join(&[fin, f(&[b"ZMDPW1", b"\x09"])]),
    );
    assert_eq!(
        sent_to(&a, "c").len(),
        2,
        "the FINAL, then a 503 for the other request"
    );
    assert_eq!(sent_to(&a, "w"), vec![&f(&[b"ZMDPW1", b"\x06"])]);
    assert_eq!(b.workers_registered(), 0);
}

#[test]
fn a_burst_spreads_over_a_pool_of_zmdpw1_workers() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    zmdpw1_ready(&mut b, t0, "w1", 8);
    zmdpw1_ready(&mut b, t0, "w2", 8);
    let batch = mdp::batch::join(&(1..=6).map(zmesh_request).collect::<Vec<_>>());
    let a = b.handle(t0, &id("c"), &batch);
    let per_worker = |w: &str| {
        sent_to(&a, w)
            .iter()
            .filter(|m| m[1].as_ref() == [0x02])
            .count()
    };
    assert_eq!(
        (per_worker("w1"), per_worker("w2")),
        (3, 3),
        "least busy first"
    );
    assert_eq!(b.services()[0].idle, 10);
}

#[test]
fn a_congested_worker_gets_no_requests_until_relieved() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    assert!(b.set_congested(t0, &id("w1"), true).is_empty());
    // Registered while congested: not offered.
    ready(&mut b, t0, "w1", "echo");
    assert!(request(&mut b, t0, "c1", "echo", "one").is_empty());
    assert_eq!(dispatched(&ready(&mut b, t0, "w2", "echo")).0, "w2");
    // "two" waits: w1 is congested, w2 busy.
    assert!(request(&mut b, t0, "c1", "echo", "two").is_empty());
    assert_eq!(b.queued("echo"), 1);
    let a = b.set_congested(t0, &id("w1"), false);
    assert_eq!(dispatched(&a).0, "w1", "relieved, it takes what waits");
    assert_eq!(b.queued("echo"), 0);
    // Congested again while idle: the next request waits rather than go to it.
    b.set_congested(t0, &id("w1"), true);
    let a = reply(&mut b, t0, "w1", &dispatched(&a).1, "done");
    assert!(a.iter().all(|Action::Send { to, .. }| to != "w1"));
    assert!(request(&mut b, t0, "c1", "echo", "three").is_empty());
    assert_eq!(b.queued("echo"), 1);
}

#[test]
fn a_busy_mdp_worker_is_not_expired_for_silence_until_the_busy_limit() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig {
        worker_busy_max: Duration::from_secs(60),
        ..Default::default()
    });
    ready(&mut b, t0, "w1", "s");
    let (_, h) = dispatched(&request(&mut b, t0, "c", "s", "long job"));
    // Far past 3 x 2.5 s of silence, as a reference worker does while it works.
    let a = b.tick(t0 + Duration::from_secs(30));
    assert!(
        a.iter()
            .all(|Action::Send { frames, .. }| frames[2].as_ref() != [0x05]),
        "no DISCONNECT"
    );
    assert_eq!(b.workers_registered(), 1);
    assert_eq!(
        b.next_deadline().map(|d| d > t0 + Duration::from_secs(30)),
        Some(true)
    );
    let a = reply(&mut b, t0 + Duration::from_secs(30), "w1", &h, "done");
    assert_eq!(sent_to(&a, "c").len(), 1, "the long job is answered");
    // Idle again: heartbeat silence counts as before.
    b.tick(t0 + Duration::from_secs(38));
    assert_eq!(b.workers_registered(), 0);
    assert_eq!(b.stats().workers_expired, 1);

    // The busy limit still ends a worker that never answers.
    ready(&mut b, t0 + Duration::from_secs(40), "w2", "s");
    dispatched(&request(
        &mut b,
        t0 + Duration::from_secs(40),
        "c",
        "s",
        "stuck",
    ));
    b.tick(t0 + Duration::from_secs(99));
    assert_eq!(b.workers_registered(), 1);
    b.tick(t0 + Duration::from_secs(101));
    assert_eq!(b.workers_registered(), 0);
}

#[test]
fn a_closed_connection_removes_its_worker_at_once() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    ready(&mut b, t0, "w1", "s");
    dispatched(&request(&mut b, t0, "c", "s", "job"));
    let a = b.connection_closed(t0, &id("w1"));
    assert_eq!(b.workers_registered(), 0);
    assert_eq!(b.stats().workers_disconnected, 1);
    // Not idempotent: the client hears why.
    assert_eq!(sent_to(&a, "c").len(), 1);
}
