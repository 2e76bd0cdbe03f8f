//! The client's background tasks: one batches publishes, one reads every
//! reply and delivery, one keeps consumers subscribed across broker restarts.

use super::*;

fn parse_reply(f: &[Bytes]) -> Option<(u64, Reply)> {
    let corr: u64 = std::str::from_utf8(f.get(3)?).ok()?.parse().ok()?;
    let num = |i: usize| -> Option<u64> { std::str::from_utf8(f.get(i)?).ok()?.parse().ok() };
    let reply = match &f[2][..] {
        b"OK" => Reply::Ok(f.get(4).cloned()),
        b"ERROR" => {
            let code = u16::try_from(num(4)?).ok()?;
            let reason = String::from_utf8_lossy(f.get(5)?).into_owned();
            if code == zmesh_wire::status::MISDIRECTED {
                let endpoint = f.get(6).and_then(|e| std::str::from_utf8(e).ok());
                Reply::Misdirected(reason, endpoint.map(str::to_owned))
            } else {
                Reply::Error(code, reason)
            }
        }
        _ => return None,
    };
    Some((corr, reply))
}

fn parse_delivery(f: &[Bytes]) -> Option<Delivery> {
    let num = |i: usize| -> Option<u64> { std::str::from_utf8(f.get(i)?).ok()?.parse().ok() };
    Some(Delivery {
        queue: String::from_utf8(f.get(3)?.to_vec()).ok()?,
        tag: num(4)?,
        deliveries: num(5)? as u32,
        msg_id: f.get(6)?.clone(),
        body: f.get(7)?.clone(),
    })
}

fn parse_status(f: &Bytes) -> Option<Status> {
    let text = std::str::from_utf8(f).ok()?;
    let (kind, rest) = text.split_at_checked(1)?;
    Some(match kind {
        "c" | "d" => Status::Stored(Confirm {
            tag: rest.parse().ok()?,
            duplicate: kind == "d",
        }),
        "e" => {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            Status::Refused(code.parse().ok()?, reason.to_owned())
        }
        _ => return None,
    })
}

/// Send waiting publishes in batches, one BATCH per queue per round, each
/// to the link requests go to then.
pub(super) async fn batch_publishes(inner: Arc<Inner>, mut rx: mpsc::Receiver<PublishReq>) {
    let attempt_timeout = inner.cfg.attempt_timeout;
    // Batches whose publishers gave up (and retried) are forgotten after a while.
    let mut sent: std::collections::VecDeque<(Instant, u64)> = Default::default();
    while let Some(first) = rx.recv().await {
        let mut round = vec![first];
        while round.len() < BATCH_SEND_MAX {
            match rx.try_recv() {
                Ok(r) => round.push(r),
                Err(_) => break,
            }
        }
        let mut by_queue: Vec<(String, Vec<PublishReq>)> = Vec::new();
        for r in round {
            match by_queue.iter_mut().find(|(q, _)| *q == r.queue) {
                Some((_, v)) => v.push(r),
                None => by_queue.push((r.queue.clone(), vec![r])),
            }
        }
        for (queue, reqs) in by_queue {
            let corr = inner.next_corr.fetch_add(1, Ordering::Relaxed);
            let mut parts = Vec::with_capacity(2 + reqs.len() * 2);
            parts.push(Bytes::from_static(b"BATCH"));
            parts.push(Bytes::from(corr.to_string()));
            parts.push(Bytes::from(queue));
            let mut waiting = Vec::with_capacity(reqs.len());
            for r in reqs {
                parts.push(r.msg_id);
                parts.push(r.body);
                waiting.push(r.tx);
            }
            let link = inner.links.pick();
            lock(&inner.batches).insert(corr, (link, waiting));
            sent.push_back((Instant::now(), corr));
            let sock = inner.links.get(link).sock.clone();
            let send = tokio::time::timeout(attempt_timeout, sock.send(frames(parts)));
            if !matches!(send.await, Ok(Ok(()))) {
                // Dropping the senders tells each publisher to retry.
                lock(&inner.batches).remove(&corr);
            }
        }
        while let Some(&(at, corr)) = sent.front() {
            if at.elapsed() < attempt_timeout * 2 {
                break;
            }
            sent.pop_front();
            lock(&inner.batches).remove(&corr);
        }
    }
}

/// Reads every reply and delivery of one link.
pub(super) async fn read_replies(link: Arc<Link>, inner: Arc<Inner>) {
    let mut at = None;
    while let Ok(m) = link.sock.recv().await {
        let f = m.frames();
        if f.len() < 3 || f[1] != PROTOCOL {
            continue;
        }
        *lock(&link.last_heard) = Instant::now();
        match &f[2][..] {
            b"DELIVER" => {
                // The link's index, once the link is listed (it is by the
                // time a CONSUME was sent on it).
                if at.is_none() {
                    at = inner.links.by_socket(link.sock.id());
                }
                if let Some(d) = parse_delivery(&f)
                    && let Some(sub) = lock(&inner.subscriptions).get_mut(&d.queue)
                {
                    // Only the node serving the queue delivers: its acks go
                    // there, even before the CONSUME's answer is read.
                    if let Some(at) = at {
                        sub.link = at;
                    }
                    let _ = sub.tx.send(d);
                }
            }
            b"HEARTBEAT" => {}
            b"CONFIRMED" => {
                let corr = std::str::from_utf8(f.get(3).map_or(&[][..], |c| &c[..]))
                    .ok()
                    .and_then(|c| c.parse::<u64>().ok());
                if let Some((_, waiting)) = corr.and_then(|c| lock(&inner.batches).remove(&c)) {
                    for (tx, status) in waiting.into_iter().zip(f.iter().skip(4)) {
                        if let Some(st) = parse_status(status) {
                            let _ = tx.send(st);
                        }
                    }
                }
            }
            _ => {
                if let Some((corr, reply)) = parse_reply(&f)
                    && let Some((_, tx)) = lock(&inner.pending).remove(&corr)
                {
                    let _ = tx.send(reply);
                }
            }
        }
    }
}

/// Follows every link's connection, and keeps consumers subscribed: they
/// heartbeat every `heartbeat`; a consumer subscribes again at once when
/// its link's connection comes back (on that link: the broker restarted)
/// or drops (on the link requests moved to), and when its link fell
/// silent past `broker_timeout` (on the next link). What waits on a
/// dropped link is failed at once, so it is tried again elsewhere.
pub(super) async fn keep_links(inner: Arc<Inner>) {
    use tokio::sync::broadcast::error::RecvError;
    use zmesh::registry::PeerState;
    let mut tick = tokio::time::interval(inner.cfg.heartbeat);
    let mut events = zmesh::registry::Registry::global().subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => heartbeat(&inner),
            event = events.recv() => match event {
                Ok(ev) => {
                    let Some(link) = inner.links.by_socket(ev.socket_id) else {
                        continue;
                    };
                    let up = ev.to == PeerState::Active;
                    let was_up = inner.links.get(link).up.swap(up, Ordering::Relaxed);
                    if up {
                        // Back (or first up): its consumers subscribe there,
                        // and it names the cluster's other nodes, if any.
                        *lock(&inner.links.get(link).last_heard) = Instant::now();
                        resubscribe_on(&inner, link, link);
                        inner.learn_nodes(link);
                    } else if was_up {
                        tracing::info!(endpoint = inner.links.get(link).endpoint, "connection dropped");
                        inner.link_dropped(link);
                        resubscribe_on(&inner, link, inner.links.pick());
                    }
                }
                // Events missed: every link's state is read again.
                Err(RecvError::Lagged(_)) => {
                    for (at, link) in inner.links.all().iter().enumerate() {
                        let up = link
                            .sock
                            .peers()
                            .iter()
                            .any(|p| p.state == PeerState::Active);
                        link.up.store(up, Ordering::Relaxed);
                        resubscribe_on(&inner, at, if up { at } else { inner.links.pick() });
                    }
                }
                Err(RecvError::Closed) => std::future::pending().await,
            },
        }
    }
}

/// Subscribes the consumers of link `link` again, starting at `start`.
fn resubscribe_on(inner: &Arc<Inner>, link: usize, start: usize) {
    let queues: Vec<String> = lock(&inner.subscriptions)
        .iter()
        .filter(|(_, sub)| sub.link == link)
        .map(|(queue, _)| queue.clone())
        .collect();
    for queue in queues {
        inner.resubscribe(queue, start);
    }
}

/// Heartbeats to every link with consumers; a link silent past the
/// broker timeout has its consumers subscribe again on another.
fn heartbeat(inner: &Arc<Inner>) {
    let links: std::collections::BTreeSet<usize> = lock(&inner.subscriptions)
        .values()
        .map(|sub| sub.link)
        .collect();
    for at in links {
        let link = inner.links.get(at);
        let _ = link.sock.try_send(frames([Bytes::from("HEARTBEAT")]));
        let silent = {
            let mut heard = lock(&link.last_heard);
            let silent = heard.elapsed() > inner.cfg.broker_timeout;
            if silent {
                // Not again before another broker timeout.
                *heard = Instant::now();
            }
            silent
        };
        if silent {
            tracing::info!(endpoint = link.endpoint, "broker silent");
            let start = inner.links.move_off(at);
            resubscribe_on(inner, at, start);
        }
    }
}
