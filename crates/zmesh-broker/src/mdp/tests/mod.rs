//! The broker's protocol rules, one deterministic test each.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn f(parts: &[&[u8]]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
}

fn id(s: &str) -> Bytes {
    Bytes::from(s.to_owned())
}

fn ready(b: &mut Broker, now: Instant, w: &str, service: &str) -> Vec<Action> {
    b.handle(
        now,
        &id(w),
        &f(&[b"", b"MDPW01", b"\x01", service.as_bytes()]),
    )
}

fn request(b: &mut Broker, now: Instant, c: &str, service: &str, body: &str) -> Vec<Action> {
    b.handle(
        now,
        &id(c),
        &f(&[b"", b"MDPC01", service.as_bytes(), body.as_bytes()]),
    )
}

/// The (worker, handle) of the REQUEST in `actions`.
fn dispatched(actions: &[Action]) -> (Bytes, Bytes) {
    actions
        .iter()
        .find_map(|Action::Send { to, frames }| {
            (frames.get(2).map(|c| c.as_ref()) == Some(&[0x02][..]))
                .then(|| (to.clone(), frames[3].clone()))
        })
        .expect("a REQUEST was dispatched")
}

fn reply(b: &mut Broker, now: Instant, w: &str, handle: &Bytes, body: &str) -> Vec<Action> {
    b.handle(
        now,
        &id(w),
        &[
            Bytes::new(),
            Bytes::from_static(b"MDPW01"),
            Bytes::from_static(b"\x03"),
            handle.clone(),
            Bytes::new(),
            Bytes::from(body.to_owned()),
        ],
    )
}

fn sent_to<'a>(actions: &'a [Action], to: &str) -> Vec<&'a Vec<Bytes>> {
    actions
        .iter()
        .filter_map(|Action::Send { to: t, frames }| (t == to.as_bytes()).then_some(frames))
        .collect()
}

#[test]
fn request_waits_for_a_worker_then_the_reply_reaches_the_client() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    assert!(request(&mut b, t0, "c1", "echo", "hi").is_empty());
    assert_eq!(b.queued("echo"), 1);
    let a = ready(&mut b, t0, "w1", "echo");
    let (w, h) = dispatched(&a);
    assert_eq!(w, "w1");
    let a = reply(&mut b, t0, "w1", &h, "hi back");
    assert_eq!(
        sent_to(&a, "c1"),
        vec![&f(&[b"", b"MDPC01", b"echo", b"hi back"])]
    );
    assert_eq!(b.requests_held(), 0);
}

#[test]
fn workers_are_served_least_recently_used() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    ready(&mut b, t0, "w1", "s");
    ready(&mut b, t0, "w2", "s");
    let (first, h1) = dispatched(&request(&mut b, t0, "c", "s", "1"));
    assert_eq!(first, "w1");
    reply(&mut b, t0, "w1", &h1, "r");
    // w2 has been idle longer than w1 now.
    let (second, _) = dispatched(&request(&mut b, t0, "c", "s", "2"));
    assert_eq!(second, "w2");
}

#[test]
fn dead_worker_request_goes_to_another_worker_when_idempotent() {
    let t0 = Instant::now();
    let mut cfg = BrokerConfig {
        // A busy 7/MDP worker is expired by the busy limit, not heartbeats.
        worker_busy_max: Duration::from_secs(5),
        ..Default::default()
    };
    cfg.policies.insert(
        "s".into(),
        ServicePolicy {
            idempotent: true,
            ..Default::default()
        },
    );
    let mut b = Broker::new(cfg);
    ready(&mut b, t0, "w1", "s");
    let (_, h) = dispatched(&request(&mut b, t0, "c", "s", "job"));
    ready(&mut b, t0 + Duration::from_secs(6), "w2", "s");
    // w1 said nothing for 3 x 2.5 s, busy past 5 s: expired, its request handed to w2.
    let a = b.tick(t0 + Duration::from_millis(7600));
    assert!(
        sent_to(&a, "w1").iter().any(|fr| fr[2].as_ref() == [0x05]),
        "DISCONNECT to the dead worker"
    );
    let (w, h2) = dispatched(&a);
    assert_eq!(w, "w2");
    assert_eq!(b.stats().redispatched, 1);
    // The dead worker's late reply is ignored; w2's reaches the client once.
    assert!(
        reply(&mut b, t0 + Duration::from_secs(8), "w1", &h, "late")
            .iter()
            .all(|Action::Send { to, .. }| to != "c")
    );
    let a = reply(&mut b, t0 + Duration::from_secs(8), "w2", &h2, "done");
    assert_eq!(sent_to(&a, "c").len(), 1);
    assert!(
        reply(&mut b, t0 + Duration::from_secs(8), "w2", &h2, "again").is_empty(),
        "no second answer"
    );
}

#[test]
fn dead_worker_request_fails_to_the_client_when_not_idempotent() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    ready(&mut b, t0, "w1", "pay");
    dispatched(&request(&mut b, t0, "c", "pay", "100"));
    let a = b.handle(t0, &id("w1"), &f(&[b"", b"MDPW01", b"\x05"]));
    let to_client = sent_to(&a, "c");
    assert_eq!(to_client[0][3], "503");
    assert!(String::from_utf8_lossy(&to_client[0][4]).contains("not idempotent"));
}

#[test]
fn a_request_without_a_worker_times_out_with_an_error() {
    let t0 = Instant::now();
    let cfg = BrokerConfig {
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let mut b = Broker::new(cfg);
    b.handle(
        t0,
        &id("c"),
        &f(&[b"ZMDPC1", b"\x01", b"rid-0001", b"nobody", b"x"]),
    );
    assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(2)));
    assert!(b.tick(t0 + Duration::from_secs(1)).is_empty());
    let a = b.tick(t0 + Duration::from_secs(2));
    assert_eq!(
        sent_to(&a, "c")[0][..5],
        f(&[b"ZMDPC1", b"\x04", b"rid-0001", b"nobody", b"503"])[..]
    );
    assert_eq!(b.requests_held(), 0);
}

#[test]
fn mmi_service_discovery() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    ready(&mut b, t0, "w", "echo");
    let ask = |b: &mut Broker, svc: &str, arg: &str| {
        let a = b.handle(
            t0,
            &id("c"),
            &f(&[b"", b"MDPC01", svc.as_bytes(), arg.as_bytes()]),
        );
        String::from_utf8(sent_to(&a, "c")[0][3].to_vec()).unwrap()
    };
    assert_eq!(ask(&mut b, "mmi.service", "echo"), "200");
    assert_eq!(ask(&mut b, "mmi.service", "nothing"), "404");
    assert_eq!(ask(&mut b, "mmi.unknown", ""), "501");
}

#[test]
fn weighted_routes_split_traffic_in_proportion() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    b.set_routes("orders", parse_routes("orders@v1:90,orders@v2:10").unwrap())
        .unwrap();
    for i in 0..10_000 {
        request(&mut b, t0, &format!("c{i}"), "orders", "x");
    }
    let (v1, v2) = (b.queued("orders@v1"), b.queued("orders@v2"));
    assert_eq!(v1 + v2, 10_000);
    // 3 sigma of a binomial(10000, 0.1) is 90.
    assert!((910..=1090).contains(&v2), "v2 got {v2}");
}

#[test]
fn rate_limit_refuses_with_429() {
    let t0 = Instant::now();
    let mut cfg = BrokerConfig::default();
    cfg.policies.insert(
        "s".into(),
        ServicePolicy {
            rate_limit_per_s: Some(5),
            ..Default::default()
        },
    );
    let mut b = Broker::new(cfg);
    let refused = (0..10)
        .filter(|i| !request(&mut b, t0, &format!("c{i}"), "s", "x").is_empty())
        .count();
    assert_eq!(refused, 5);
    // A second later the bucket has refilled.
    assert!(request(&mut b, t0 + Duration::from_secs(1), "late", "s", "x").is_empty());
}

#[test]
fn protocol_violations_disconnect_the_worker() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    assert!(
        !ready(&mut b, t0, "w", "mmi.service").is_empty(),
        "reserved name refused"
    );
    ready(&mut b, t0, "w", "s");
    let a = ready(&mut b, t0, "w", "s");
    assert_eq!(
        a[0],
        Action::Send {
            to: id("w"),
            frames: f(&[b"", b"MDPW01", b"\x05"])
        }
    );
    assert_eq!(b.workers_registered(), 0);
    // A heartbeat from a worker the broker does not know (it restarted): DISCONNECT.
    let a = b.handle(t0, &id("ghost"), &f(&[b"", b"MDPW01", b"\x04"]));
    assert_eq!(a.len(), 1);
    assert_eq!(b.handle(t0, &id("x"), &f(&[b"garbage"])), vec![]);
    assert_eq!(b.stats().malformed, 1);
}

#[test]
fn partial_replies_reach_v2_clients_only_final_reaches_v1() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    b.handle(t0, &id("w"), &f(&[b"MDPW02", b"\x01", b"stream"]));
    let a = b.handle(t0, &id("c2"), &f(&[b"MDPC02", b"\x01", b"stream", b"go"]));
    let (_, h) = dispatched_v2(&a);
    let part = b.handle(
        t0,
        &id("w"),
        &[
            Bytes::from_static(b"MDPW02"),
            Bytes::from_static(b"\x03"),
            h.clone(),
            Bytes::new(),
            Bytes::from("p1"),
        ],
    );
    assert_eq!(sent_to(&part, "c2")[0][..2], f(&[b"MDPC02", b"\x02"])[..]);
    let fin = b.handle(
        t0,
        &id("w"),
        &[
            Bytes::from_static(b"MDPW02"),
            Bytes::from_static(b"\x04"),
            h,
            Bytes::new(),
            Bytes::from("end"),
        ],
    );
    assert_eq!(sent_to(&fin, "c2")[0][..2], f(&[b"MDPC02", b"\x03"])[..]);
    // A v0.1 client asking the same v0.2 worker sees only the final reply.
    request(&mut b, t0, "c1", "stream", "go");
    let h = b.requests.keys().next().copied().unwrap();
    let hb = Bytes::copy_from_slice(&h.to_be_bytes());
    let part = b.handle(
        t0,
        &id("w"),
        &[
            Bytes::from_static(b"MDPW02"),
            Bytes::from_static(b"\x03"),
            hb,
            Bytes::new(),
            Bytes::from("p1"),
        ],
    );
    assert!(sent_to(&part, "c1").is_empty());
}

fn dispatched_v2(actions: &[Action]) -> (Bytes, Bytes) {
    actions
        .iter()
        .find_map(|Action::Send { to, frames }| {
            (frames[0].as_ref() == b"MDPW02").then(|| (to.clone(), frames[2].clone()))
        })
        .expect("a v0.2 REQUEST")
}

#[test]
fn heartbeats_go_out_on_schedule() {
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig::default());
    ready(&mut b, t0, "w", "s");
    assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(2500)));
    let a = b.tick(t0 + Duration::from_millis(2500));
    assert_eq!(
        a,
        vec![Action::Send {
            to: id("w"),
            frames: f(&[b"", b"MDPW01", b"\x04"])
        }]
    );
    b.handle(
        t0 + Duration::from_secs(5),
        &id("w"),
        &f(&[b"", b"MDPW01", b"\x04"]),
    );
    assert_eq!(
        b.tick(t0 + Duration::from_millis(8000)).len(),
        1,
        "alive: only a heartbeat"
    );
    assert_eq!(b.workers_registered(), 1);
}

#[test]
fn random_frames_never_break_the_broker_bounds() {
    // The fuzz target's invariant on every CI run: seeded random frames from two peers.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let words: [&[u8]; 17] = [
        b"",
        b"MDPC01",
        b"MDPW01",
        b"MDPC02",
        b"MDPW02",
        b"ZMDPC1",
        b"\x01",
        b"\x02",
        b"\x03",
        b"svc",
        b"ZMDPW1",
        b"\x10",
        b"\0\0\0\x02",
        b"\0\0\0\x04",
        b"\x07",
        // Packed BATCH items: a DRAIN and a FINAL for handle 1; a request for "svc".
        b"\0\0\0\x01\0\0\0\x01\x07\0\0\0\x03\0\0\0\x01\x04\0\0\0\x08\0\0\0\0\0\0\0\x01\0\0\0\0",
        b"\0\0\0\x03\0\0\0\x01\x01\0\0\0\x08abcdefgh\0\0\0\x03svc",
    ];
    let t0 = Instant::now();
    let mut b = Broker::new(BrokerConfig {
        queue_max: 4,
        requests_max: 8,
        ..Default::default()
    });
    for round in 0..20_000u64 {
        let n = (next() % 9) as usize;
        let frames: Vec<Bytes> = (0..n)
            .map(|_| Bytes::from_static(words[(next() % 17) as usize]))
            .collect();
        let peer = Bytes::from(vec![(next() % 3) as u8]);
        let out = b.handle(t0 + Duration::from_millis(round), &peer, &frames);
        // Whatever goes out batched splits back into exactly what was sent.
        let sent: usize = coalesce(out.clone())
            .iter()
            .map(
                |Action::Send { frames, .. }| match mdp::batch::is_batch(frames) {
                    true => mdp::batch::split(frames).expect("our batches parse").len(),
                    false => 1,
                },
            )
            .sum();
        assert_eq!(sent, out.len());
        if round % 100 == 0 {
            b.tick(t0 + Duration::from_millis(round * 10));
        }
        assert!(b.requests_held() <= 8);
    }
}

mod load;
mod simulation;
