//! The snapshot as Prometheus metrics. Names follow Prometheus conventions
//! (`zmesh_` prefix, base units, `_total` counters); label values come from
//! the broker's own names and are capped at `LABELS_MAX` per family so
//! cardinality stays bounded.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Snapshot;

/// Label values per family at most.
const LABELS_MAX: usize = 1000;

type Labels = Vec<(String, String)>;

struct Families {
    registry: Registry,
}

impl Families {
    fn counter(&mut self, name: &str, help: &str, values: Vec<(Labels, u64)>) {
        let f = Family::<Labels, Counter>::default();
        for (l, v) in values.into_iter().take(LABELS_MAX) {
            f.get_or_create(&l).inc_by(v);
        }
        self.registry.register(name, help, f);
    }

    /// A gauge of unsigned values (saturating at `i64::MAX`).
    fn gauge_u64(&mut self, name: &str, help: &str, values: Vec<(Labels, u64)>) {
        let values = values
            .into_iter()
            .map(|(l, v)| (l, i64::try_from(v).unwrap_or(i64::MAX)))
            .collect();
        self.gauge(name, help, values);
    }

    fn gauge(&mut self, name: &str, help: &str, values: Vec<(Labels, i64)>) {
        let f = Family::<Labels, Gauge>::default();
        for (l, v) in values.into_iter().take(LABELS_MAX) {
            f.get_or_create(&l).set(v);
        }
        self.registry.register(name, help, f);
    }
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_owned(), v.to_owned())]
}

/// Render `s` and the histograms in the OpenMetrics text format.
pub fn render(s: &Snapshot, h: &super::Histograms) -> String {
    let mut m = Families {
        registry: Registry::default(),
    };
    m.registry.register(
        "zmesh_request_duration_seconds",
        "MDP request latency, arrival to final reply, by service",
        h.request_seconds.clone(),
    );
    m.registry.register(
        "zmesh_journal_fsync_duration_seconds",
        "Group commit latency of the queue journal, sync asked to durable",
        h.fsync_seconds.clone(),
    );
    m.gauge(
        "zmesh_up",
        "1 while the broker runs; 0 while it drains",
        vec![(vec![], i64::from(!s.draining))],
    );
    m.gauge(
        "zmesh_start_time_seconds",
        "When the broker started",
        vec![(vec![], (s.started_ms / 1000) as i64)],
    );
    // MDP services.
    let svc = |f: fn(&crate::mdp::ServiceInfo) -> u64| {
        s.services
            .iter()
            .map(|x| (label("service", &x.name), f(x)))
            .collect::<Vec<_>>()
    };
    m.counter(
        "zmesh_service_requests",
        "Requests received per service",
        svc(|x| x.requests),
    );
    m.counter(
        "zmesh_service_replies",
        "Final replies sent (or waiting in the outbox) per service; zmesh_outbox_dropped_messages counts those that never reached their client",
        svc(|x| x.replies),
    );
    m.counter(
        "zmesh_service_errors",
        "Errors returned per service (timeouts, limits, dead workers)",
        svc(|x| x.errors),
    );
    let g = |f: fn(&crate::mdp::ServiceInfo) -> usize| {
        s.services
            .iter()
            .map(|x| (label("service", &x.name), f(x) as i64))
            .collect::<Vec<_>>()
    };
    m.gauge(
        "zmesh_service_workers",
        "Registered workers per service",
        g(|x| x.workers),
    );
    m.gauge(
        "zmesh_service_queued_requests",
        "Requests waiting for a worker",
        g(|x| x.queued),
    );
    m.counter(
        "zmesh_workers_expired",
        "Workers expired by heartbeat",
        vec![(vec![], s.broker.workers_expired)],
    );
    m.counter(
        "zmesh_workers_disconnected",
        "Workers removed at once because their connection closed",
        vec![(vec![], s.broker.workers_disconnected)],
    );
    m.counter(
        "zmesh_mdp_malformed_messages",
        "Messages that were not valid MDP",
        vec![(vec![], s.broker.malformed)],
    );
    // Durable queues.
    let q = |f: fn(&crate::queue::QueueStats) -> u64| {
        s.queues
            .iter()
            .map(|x| (label("queue", &x.name), f(x)))
            .collect::<Vec<_>>()
    };
    let mut depth = Vec::new();
    for x in &s.queues {
        for (state, v) in [
            ("ready", x.ready),
            ("unacked", x.unacked),
            ("storing", x.storing),
        ] {
            depth.push((
                vec![
                    ("queue".into(), x.name.clone()),
                    ("state".into(), state.into()),
                ],
                v as i64,
            ));
        }
    }
    m.gauge(
        "zmesh_queue_messages",
        "Messages held per queue and state",
        depth,
    );
    type QueueField = fn(&crate::queue::QueueStats) -> u64;
    let queue_gauges: [(&str, &str, QueueField); 3] = [
        ("zmesh_queue_bytes", "Body bytes held per queue", |x| {
            x.bytes
        }),
        (
            "zmesh_queue_on_disk_messages",
            "Messages per queue whose body is on disk only (past the broker's queue memory bound)",
            |x| x.on_disk,
        ),
        ("zmesh_queue_consumers", "Consumers per queue", |x| {
            x.consumers as u64
        }),
    ];
    for (name, help, f) in queue_gauges {
        m.gauge_u64(name, help, q(f));
    }
    let queue_counters: [(&str, &str, QueueField); 9] = [
        ("zmesh_queue_published", "Publishes accepted", |x| {
            x.counters.published
        }),
        (
            "zmesh_queue_confirmed",
            "Publishes confirmed durable",
            |x| x.counters.confirmed,
        ),
        (
            "zmesh_queue_refused",
            "Publishes refused (limits, storage)",
            |x| x.counters.refused,
        ),
        (
            "zmesh_queue_duplicates",
            "Publishes recognised as duplicates",
            |x| x.counters.duplicates,
        ),
        (
            "zmesh_queue_delivered",
            "Deliveries, first and repeated",
            |x| x.counters.delivered,
        ),
        ("zmesh_queue_acked", "Messages acknowledged", |x| {
            x.counters.acked
        }),
        (
            "zmesh_queue_redelivered",
            "Messages returned for redelivery",
            |x| x.counters.redelivered,
        ),
        (
            "zmesh_queue_dead_lettered",
            "Messages moved to the dead-letter queue",
            |x| x.counters.dead_lettered,
        ),
        ("zmesh_queue_expired", "Messages whose TTL ran out", |x| {
            x.counters.expired
        }),
    ];
    for (name, help, f) in queue_counters {
        m.counter(name, help, q(f));
    }
    m.gauge(
        "zmesh_journal_bytes",
        "Bytes of the queue journal on disk",
        vec![(vec![], s.journal_bytes as i64)],
    );
    if let Some(c) = &s.queue_counters {
        m.counter(
            "zmesh_queue_storage_errors",
            "Journal writes refused by the storage",
            vec![(vec![], c.storage_errors)],
        );
        m.counter(
            "zmesh_queue_compaction_moved",
            "Waiting messages copied forward by journal compaction",
            vec![(vec![], c.moved)],
        );
    }
    // Streams.
    let st = |key: &str| {
        s.streams
            .iter()
            .map(|x| {
                let name = x["name"].as_str().unwrap_or("?");
                (label("stream", name), x[key].as_u64().unwrap_or(0))
            })
            .collect::<Vec<_>>()
    };
    m.gauge_u64(
        "zmesh_stream_messages",
        "Messages kept per stream",
        st("messages"),
    );
    m.gauge_u64(
        "zmesh_stream_subscribers",
        "Subscriptions per stream",
        st("subscribers"),
    );
    m.counter(
        "zmesh_stream_published",
        "Messages stored per stream since start",
        st("published"),
    );
    m.gauge_u64(
        "zmesh_stream_consumer_lag_messages",
        "Messages the slowest subscription of each stream is behind",
        st("lag_max"),
    );
    m.counter(
        "zmesh_stream_duplicates",
        "Publishes per stream recognised as repeats of a remembered message id",
        st("duplicates"),
    );
    m.counter(
        "zmesh_stream_delivered",
        "Messages delivered per stream since start",
        st("delivered"),
    );
    // Connections.
    let mut states: std::collections::BTreeMap<String, i64> = Default::default();
    let (mut reconnects, mut hs_fail, mut hb_timeouts) = (0u64, 0u64, 0u64);
    for c in &s.connections {
        let state = serde_json::to_value(c.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *states.entry(state).or_default() += 1;
        reconnects += c.reconnects;
        hs_fail += c.handshake_failures;
        hb_timeouts += c.heartbeat_timeouts;
    }
    m.gauge(
        "zmesh_connections",
        "Connections of the broker's socket by state",
        states
            .into_iter()
            .map(|(k, v)| (label("state", &k), v))
            .collect(),
    );
    m.counter(
        "zmesh_connection_handshake_failures",
        "Handshakes that failed (including auth refusals)",
        vec![(vec![], hs_fail)],
    );
    m.counter(
        "zmesh_connection_heartbeat_timeouts",
        "Connections closed by heartbeat timeout",
        vec![(vec![], hb_timeouts)],
    );
    m.counter(
        "zmesh_connection_reconnects",
        "Reconnects",
        vec![(vec![], reconnects)],
    );
    let t = &s.traffic;
    let dir = |d: &str| label("direction", d);
    m.counter(
        "zmesh_broker_messages",
        "ZeroMQ messages through the broker's socket",
        vec![(dir("in"), t.msgs_in), (dir("out"), t.msgs_out)],
    );
    m.counter(
        "zmesh_broker_bytes",
        "Payload bytes through the broker's socket",
        vec![(dir("in"), t.bytes_in), (dir("out"), t.bytes_out)],
    );
    let o = &s.outbox;
    m.gauge_u64(
        "zmesh_outbox_waiting_messages",
        "Messages waiting for peers whose pipe is full",
        vec![(vec![], o.waiting_messages)],
    );
    m.gauge_u64(
        "zmesh_outbox_waiting_bytes",
        "Bytes of the messages waiting for full peers, envelopes included",
        vec![(vec![], o.waiting_bytes)],
    );
    m.gauge_u64(
        "zmesh_outbox_blocked_peers",
        "Peers with messages waiting for room in their pipe",
        vec![(vec![], o.blocked_peers)],
    );
    m.gauge_u64(
        "zmesh_outbox_congested_peers",
        "Peers given no new work until what waits for them drains",
        vec![(vec![], o.congested_peers)],
    );
    m.counter(
        "zmesh_outbox_disconnected_peers",
        "Peers disconnected for letting more than their bound wait unread",
        vec![(vec![], o.overflowed_peers_total)],
    );
    m.counter(
        "zmesh_outbox_waited_messages",
        "Messages that waited for their peer before going out",
        vec![(vec![], o.waited_total)],
    );
    m.counter(
        "zmesh_outbox_dropped_messages",
        "Messages the broker could not deliver, by product and reason",
        o.dropped
            .iter()
            .map(|d| {
                let labels = vec![
                    ("product".to_owned(), d.product.as_str().to_owned()),
                    ("reason".to_owned(), d.reason.as_str().to_owned()),
                ];
                (labels, d.messages)
            })
            .collect(),
    );
    let mut out = String::new();
    encode(&mut out, &m.registry).expect("writing to a String cannot fail");
    out
}
