//! Runs the broker core on a ROUTER socket: the thin tokio half.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zmesh::clock::{Clock, SystemClock};
use zmesh::{Message, Socket};

use crate::admin::{AdminCommand, AdminLink, Snapshot};
use crate::cluster::ClusterLink;
use crate::mdp::{Action, Broker, coalesce};
use crate::outbox::{Outbox, OutboxEvent, OutboxLimits, Product};
use crate::peers::PeerConnections;
use crate::queue::proto::is_queue_message;
use crate::queue::store::QueueStore;
use crate::storage::Sends;
use crate::stream::StreamStore;
use crate::stream::proto::is_stream_message;

/// Longest sleep between ticks even when nothing is due.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Most messages handled per wake-up before timers and sends get their turn.
const BATCH_MAX: usize = 256;
/// How often the connections the broker knows are checked against the
/// engine's live set, for closes whose events were missed.
const CONNECTIONS_RECHECK: Duration = Duration::from_secs(10);

/// Rounds of congestion changes handled per wake-up; later changes wait for the next.
const CONGESTION_ROUNDS_MAX: usize = 4;

/// Serve on `sock` (a bound ROUTER with `router_mandatory` on, so a full or
/// gone peer is never mistaken for a delivery) until `shutdown` completes; returns the core.
///
/// ```no_run
/// # async fn demo() -> zmesh::Result<()> {
/// use zmesh::{Socket, SocketOptions, SocketType};
/// use zmesh_broker::{core::{Broker, BrokerConfig}, driver};
/// let router = Socket::new(SocketType::Router, SocketOptions::default().router_mandatory(true))?;
/// router.bind("tcp://127.0.0.1:5555").await?;
/// driver::run(&router, Broker::new(BrokerConfig::default()), std::future::pending()).await?;
/// # Ok(()) }
/// ```
pub async fn run(
    sock: &Socket,
    broker: Broker,
    shutdown: impl Future<Output = ()>,
) -> zmesh::Result<Broker> {
    let opts = RunOptions {
        drain_timeout: Duration::ZERO,
        ..RunOptions::default()
    };
    Ok(
        run_with_stores(sock, broker, Stores::default(), opts, shutdown)
            .await?
            .0,
    )
}

/// What one round of the loop sends, each message with the product it belongs to.
type Out = Vec<(Product, Message)>;

fn send_all(product: Product, sends: Sends, out: &mut Out) {
    out.extend(sends.into_iter().map(|(to, frames)| {
        (
            product,
            Message::from_frames(std::iter::once(to).chain(frames)),
        )
    }));
}

/// The storage-backed services the broker may serve beside MDP.
#[derive(Default)]
pub struct Stores {
    /// Durable queues (ZMQU01).
    pub queues: Option<QueueStore>,
    /// Streams (ZMST01).
    pub streams: Option<StreamStore>,
}

/// How the loop runs beside the protocol cores.
pub struct RunOptions {
    /// The admin port's end, if the broker has one.
    pub admin: Option<AdminLink>,
    /// After `shutdown`: how long held requests may take to finish.
    pub drain_timeout: Duration,
    /// Bounds on what waits for peers that read slowly.
    pub outbox: OutboxLimits,
    /// Where the loop and the Majordomo core read the time: request and
    /// worker timers, the drain's limit, the outbox's retries, status stamps.
    /// The stores read their own (give them this one).
    pub clock: Arc<dyn Clock>,
    /// The broker's cluster node, when it is one of a cluster: queue
    /// declarations and deletions go through the cluster's catalog.
    pub cluster: Option<ClusterLink>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            admin: None,
            drain_timeout: Duration::from_secs(10),
            outbox: OutboxLimits::default(),
            clock: SystemClock::shared(),
            cluster: None,
        }
    }
}

fn observe_latencies(link: &mut AdminLink, broker: &mut Broker, stores: &mut Stores) {
    for (service, d) in broker.take_latencies() {
        // Bounded label set: services beyond the cap share one label.
        let label = if link.services_seen.contains(&service)
            || link.services_seen.len() < crate::admin::SERVICE_LABELS_MAX
        {
            link.services_seen.insert(service.clone());
            service
        } else {
            "other".to_owned()
        };
        link.histograms
            .request_seconds
            .get_or_create(&vec![("service".to_owned(), label)])
            .observe(d.as_secs_f64());
    }
    if let Some(q) = stores.queues.as_mut() {
        for d in q.take_sync_latencies() {
            link.histograms.fsync_seconds.observe(d.as_secs_f64());
        }
    }
}

fn publish_snapshot(
    link: &AdminLink,
    sock: &Socket,
    broker: &Broker,
    stores: &Stores,
    outbox: &Outbox,
    draining: bool,
    (started_ms, updated_ms): (u64, u64),
) {
    let snap = Snapshot {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_ms,
        updated_ms,
        draining,
        services: broker.services(),
        broker: broker.stats().clone(),
        workers: broker.workers_registered(),
        requests_held: broker.requests_held(),
        queues: stores
            .queues
            .as_ref()
            .map(|q| q.core().stats())
            .unwrap_or_default(),
        queue_counters: stores.queues.as_ref().map(|q| q.core().counters.clone()),
        journal_bytes: stores.queues.as_ref().map_or(0, |q| q.log().bytes()),
        streams: stores
            .streams
            .as_ref()
            .map(|s| s.core().infos())
            .unwrap_or_default(),
        connections: sock.peers(),
        traffic: sock.traffic(),
        outbox: outbox.stats(),
    };
    *link.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snap;
}

/// Like [`run`], and also serve durable queues (ZMQU01) and streams (ZMST01)
/// from `stores` on the same ROUTER, and the admin port's snapshot and
/// commands. When `shutdown` completes the broker drains: new requests get
/// 503, held ones are answered (up to `drain_timeout`), workers are told to
/// disconnect, the logs are written out; then the cores and stores return.
pub async fn run_with_stores(
    sock: &Socket,
    mut broker: Broker,
    mut stores: Stores,
    mut opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> zmesh::Result<(Broker, Stores)> {
    if !sock.options().router_mandatory {
        return Err(zmesh::Error::InvalidOption(
            "the broker's ROUTER needs router_mandatory: without it a full peer's messages are dropped unseen".into(),
        ));
    }
    tokio::pin!(shutdown);
    let mut out: Out = Vec::new();
    let mut outbox = Outbox::new(opts.outbox);
    let mut closes = sock.closed_connections();
    let mut connections = PeerConnections::default();
    let clock = opts.clock.clone();
    let started_ms = clock.now().wall_ms;
    let mut drain_until: Option<Instant> = None;
    let mut cluster = opts.cluster.take();
    if let (Some(_), Some(q)) = (&cluster, stores.queues.as_mut()) {
        q.replicate_publishes();
    }
    if let Some(link) = &opts.admin {
        broker.record_latencies(true);
        publish_snapshot(
            link,
            sock,
            &broker,
            &stores,
            &outbox,
            false,
            (started_ms, started_ms),
        );
    }
    // Snapshots go out once a second whatever the traffic (the tick's sleep
    // is pushed back while messages keep coming).
    let mut snapshots = tokio::time::interval(Duration::from_secs(1));
    snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Closes can be missed: a connection that closed before `closes` was
    // taken, or a lag whose re-read failed. Checking the live set now and
    // then catches them (else only heartbeats would).
    let mut recheck = tokio::time::interval(CONNECTIONS_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let settled = stores.queues.as_ref().is_none_or(|q| q.settled())
            && stores.streams.as_ref().is_none_or(|s| s.settled())
            && cluster.as_ref().is_none_or(|c| c.settled());
        if let Some(until) = drain_until
            && ((broker.requests_held() == 0 && settled && outbox.is_empty())
                || clock.instant() >= until)
        {
            out.extend(broker.disconnect_workers().into_iter().map(to_message));
            end_batch(&mut stores, &mut out);
            let now = clock.instant();
            for (product, m) in out.drain(..) {
                outbox.send(sock, now, product, m)?;
            }
            outbox.abandon();
            tracing::info!(
                unanswered = broker.requests_held(),
                outbox = ?outbox.stats(),
                "drained"
            );
            return Ok((broker, stores));
        }
        // Deadlines are on the clock; the loop sleeps for what is left of
        // them, so an injected clock that stands still never spins the loop.
        let now = clock.instant();
        let mut next_wait = broker.next_deadline().map_or(IDLE_TICK, |d| {
            d.saturating_duration_since(now).min(IDLE_TICK)
        });
        if let Some(q) = &stores.queues {
            next_wait = next_wait.min(q.next_wait());
        }
        if let Some(s) = &stores.streams {
            next_wait = next_wait.min(s.next_wait());
        }
        // Congestion changes left over from the last round are handled at once.
        let retry_wait = if outbox.has_events() {
            Some(Duration::ZERO)
        } else {
            outbox
                .retry_at()
                .map(|at| at.saturating_duration_since(now))
        };
        let Stores { queues, streams } = &mut stores;
        let has_admin = opts.admin.is_some();
        let admin_cmd = async {
            match opts.admin.as_mut() {
                Some(a) => a.commands.recv().await,
                None => std::future::pending().await,
            }
        };
        let queue_disk = async {
            match queues.as_mut() {
                Some(q) => q.disk_done().await,
                None => std::future::pending().await,
            }
        };
        let stream_disk = async {
            match streams.as_mut() {
                Some(s) => s.disk_done().await,
                None => std::future::pending().await,
            }
        };
        let cluster_event = async {
            match cluster.as_mut() {
                Some(c) => c.next_event().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = sock.recv() => {
                // Take what else is already waiting too: one deadline scan, one
                // journal flush and one round of sends per batch.
                let now = clock.instant();
                let mut next_msg = Some(m?);
                let mut n = 0;
                let mut mdp_out = Vec::new();
                let mut last_words = Vec::new();
                while let Some(m) = next_msg.take() {
                    let frames = m.frames();
                    if let (Some(from), Some(conn)) = (frames.first(), m.connection_id())
                        && !connections.seen(from, conn)
                    {
                        last_words.push(from.clone());
                    }
                    if let Some((from, rest)) = frames.split_first() {
                        match (stores.queues.as_mut(), stores.streams.as_mut()) {
                            (Some(q), _) if is_queue_message(rest) => {
                                let sends = match cluster.as_mut().and_then(|c| c.intercept(from, rest)) {
                                    Some(sends) => sends,
                                    None => q.handle(from, rest),
                                };
                                send_all(Product::Queue, sends, &mut out)
                            }
                            (_, Some(s)) if is_stream_message(rest) => send_all(Product::Stream, s.handle(from, rest), &mut out),
                            _ => mdp_out.extend(broker.handle(now, from, rest)),
                        }
                    }
                    n += 1;
                    if n < BATCH_MAX {
                        next_msg = sock.try_recv()?;
                    }
                }
                // One BATCH per zmesh peer for the whole round.
                out.extend(coalesce(mdp_out).into_iter().map(to_message));
                // Read after their connection's close: handled, and gone again.
                for peer in last_words {
                    if connections.connection(&peer).is_some() {
                        // Reconnected in the meantime: the new connection speaks for it.
                        continue;
                    }
                    connection_closed(now, &mut broker, &mut stores, &mut outbox, &peer, &mut out);
                }
                end_batch(&mut stores, &mut out);
            }
            done = queue_disk => {
                let q = stores.queues.as_mut().expect("only polled with queues");
                send_all(Product::Queue, q.on_disk_done(done), &mut out);
                // Confirms can lead to more records (dead-letter settles): write them now.
                end_batch(&mut stores, &mut out);
            }
            event = cluster_event => {
                if let (Some(q), Some(c)) = (stores.queues.as_mut(), cluster.as_mut()) {
                    let sends = c.on_event(event, q);
                    send_all(Product::Queue, sends, &mut out);
                    end_batch(&mut stores, &mut out);
                }
            }
            done = stream_disk => {
                let s = stores.streams.as_mut().expect("only polled with streams");
                send_all(Product::Stream, s.on_disk_done(done), &mut out);
                end_batch(&mut stores, &mut out);
            }
            Some(cmd) = admin_cmd => match cmd {
                AdminCommand::Purge { queue, reply } => match stores.queues.as_mut() {
                    Some(q) => {
                        let (result, sends) = q.admin_purge(&queue);
                        send_all(Product::Queue, sends, &mut out);
                        end_batch(&mut stores, &mut out);
                        let _ = reply.send(result);
                    }
                    None => {
                        let _ = reply.send(Err("this broker serves no queues".into()));
                    }
                },
                AdminCommand::SetRoutes { service, spec, reply } => {
                    let r = crate::mdp::parse_routes(&spec)
                        .and_then(|routes| broker.set_routes(&service, routes));
                    let _ = reply.send(r);
                }
            },
            _ = tokio::time::sleep(next_wait) => {
                out.extend(coalesce(broker.tick(clock.instant())).into_iter().map(to_message));

                if let Some(q) = stores.queues.as_mut() {
                    send_all(Product::Queue, q.tick(), &mut out);
                }
                if let Some(s) = stores.streams.as_mut() {
                    send_all(Product::Stream, s.tick(), &mut out);
                }
                end_batch(&mut stores, &mut out);
            }
            Some(closed) = closes.next() => match closed {
                zmesh::ConnectionClosed::Closed { connection_id } => {
                    if let Some(peer) = connections.closed(connection_id) {
                        connection_closed(clock.instant(), &mut broker, &mut stores, &mut outbox, &peer, &mut out);
                        end_batch(&mut stores, &mut out);
                    }
                }
                zmesh::ConnectionClosed::Lagged => {
                    keep_only_live(clock.as_ref(), sock, &mut connections, &mut broker, &mut stores, &mut outbox, &mut out).await;
                }
            },
            _ = recheck.tick() => {
                keep_only_live(clock.as_ref(), sock, &mut connections, &mut broker, &mut stores, &mut outbox, &mut out).await;
            }
            _ = tokio::time::sleep(retry_wait.unwrap_or(next_wait)), if retry_wait.is_some() => {
                outbox.retry(sock, clock.instant())?;
            }
            _ = snapshots.tick(), if has_admin => {
                if let Some(link) = opts.admin.as_mut() {
                    observe_latencies(link, &mut broker, &mut stores);
                    publish_snapshot(link, sock, &broker, &stores, &outbox, drain_until.is_some(), (started_ms, clock.now().wall_ms));
                }
            }
            _ = &mut shutdown, if drain_until.is_none() => {
                tracing::info!(held = broker.requests_held(), "shutting down: draining");
                broker.begin_drain();
                if let Some(q) = stores.queues.as_mut() {
                    q.begin_drain();
                }
                if let Some(s) = stores.streams.as_mut() {
                    s.begin_drain();
                }
                if let Some(c) = cluster.as_mut() {
                    c.begin_drain();
                }
                drain_until = Some(clock.instant() + opts.drain_timeout);
                if let Some(link) = &opts.admin {
                    publish_snapshot(link, sock, &broker, &stores, &outbox, true, (started_ms, clock.now().wall_ms));
                }
            }
        };
        // What the queues took this turn goes to the cluster in one batch per shard.
        if let (Some(q), Some(c)) = (stores.queues.as_mut(), cluster.as_mut()) {
            c.replicate(q);
        }
        // Never an awaited send: a full peer waits in the outbox, not the loop.
        let now = clock.instant();
        // Congestion changes make the cores hold back or resume work, which
        // sends more; a few rounds settle it (each change is a transition).
        for _ in 0..CONGESTION_ROUNDS_MAX {
            for (product, m) in out.drain(..) {
                outbox.send(sock, now, product, m)?;
            }
            let events = outbox.take_events();
            if events.is_empty() {
                break;
            }
            for event in events {
                match event {
                    OutboxEvent::Congested(peer) => {
                        set_congested(now, &mut broker, &mut stores, &peer, true, &mut out)
                    }
                    OutboxEvent::Relieved(peer) => {
                        set_congested(now, &mut broker, &mut stores, &peer, false, &mut out)
                    }
                    OutboxEvent::Overflowed(peer) => disconnect(sock, &connections, &peer),
                }
            }
        }
        // Past the rounds: send what the last one produced; its events wait.
        for (product, m) in out.drain(..) {
            outbox.send(sock, now, product, m)?;
        }
        // Stay cooperative: with no send awaited, a busy loop must still yield.
        tokio::task::consume_budget().await;
    }
}

/// Tell every core that `peer`'s connection closed: what it held is released now.
fn connection_closed(
    now: Instant,
    broker: &mut Broker,
    stores: &mut Stores,
    outbox: &mut Outbox,
    peer: &bytes::Bytes,
    out: &mut Out,
) {
    // What waited for the old connection must not reach a new one under the same id.
    outbox.peer_gone(peer);
    out.extend(
        broker
            .connection_closed(now, peer)
            .into_iter()
            .map(to_message),
    );
    if let Some(q) = stores.queues.as_mut() {
        send_all(Product::Queue, q.connection_closed(peer), out);
    }
    if let Some(s) = stores.streams.as_mut() {
        send_all(Product::Stream, s.connection_closed(peer), out);
    }
}

/// Closes were missed: every known connection not live in the engine is
/// handled as closed. A failed read leaves it to the next check.
async fn keep_only_live(
    clock: &dyn Clock,
    sock: &Socket,
    connections: &mut PeerConnections,
    broker: &mut Broker,
    stores: &mut Stores,
    outbox: &mut Outbox,
    out: &mut Out,
) {
    let Ok(live) = sock.connection_ids().await else {
        return;
    };
    for peer in connections.keep_only(&live) {
        connection_closed(clock.instant(), broker, stores, outbox, &peer, out);
    }
    end_batch(stores, out);
}

/// Tell every core that `peer` reads too slowly, or has caught up.
fn set_congested(
    now: Instant,
    broker: &mut Broker,
    stores: &mut Stores,
    peer: &bytes::Bytes,
    congested: bool,
    out: &mut Out,
) {
    out.extend(
        broker
            .set_congested(now, peer, congested)
            .into_iter()
            .map(to_message),
    );
    if let Some(q) = stores.queues.as_mut() {
        send_all(Product::Queue, q.set_congested(peer, congested), out);
    }
    if let Some(s) = stores.streams.as_mut() {
        send_all(Product::Stream, s.set_congested(peer, congested), out);
    }
}

/// Close the connection of a peer that read too slowly, without waiting on it.
fn disconnect(sock: &Socket, connections: &PeerConnections, peer: &bytes::Bytes) {
    let Some(conn) = connections.connection(peer) else {
        tracing::warn!(peer = ?peer, "a peer past its outbox bound has no known connection");
        return;
    };
    tracing::warn!(peer = ?peer, conn, "disconnecting a peer that reads too slowly");
    let sock = sock.clone();
    tokio::spawn(async move {
        // Already gone is as good as closed.
        let _ = sock.disconnect_peer(conn).await;
    });
}

fn end_batch(stores: &mut Stores, out: &mut Out) {
    if let Some(q) = stores.queues.as_mut() {
        send_all(Product::Queue, q.end_batch(), out);
    }
    if let Some(s) = stores.streams.as_mut() {
        send_all(Product::Stream, s.end_batch(), out);
    }
}

fn to_message(a: Action) -> (Product, Message) {
    let Action::Send { to, frames } = a;
    (
        Product::Mdp,
        Message::from_frames(std::iter::once(to).chain(frames)),
    )
}
