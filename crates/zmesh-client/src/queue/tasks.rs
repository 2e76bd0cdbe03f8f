//! The client's background tasks: one batches publishes, one reads every
//! reply and delivery, one keeps consumers subscribed across broker restarts.

use super::*;

fn parse_reply(f: &[Bytes]) -> Option<(u64, Reply)> {
    let corr: u64 = std::str::from_utf8(f.get(3)?).ok()?.parse().ok()?;
    let num = |i: usize| -> Option<u64> { std::str::from_utf8(f.get(i)?).ok()?.parse().ok() };
    let reply = match &f[2][..] {
        b"OK" => Reply::Ok(f.get(4).cloned()),
        b"ERROR" => Reply::Error(
            num(4)? as u16,
            String::from_utf8_lossy(f.get(5)?).into_owned(),
        ),
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

/// Send waiting publishes in batches, one BATCH per queue per round.
pub(super) async fn batch_publishes(
    sock: Socket,
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<PublishReq>,
    attempt_timeout: Duration,
) {
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
            lock(&inner.batches).insert(corr, waiting);
            sent.push_back((Instant::now(), corr));
            if sock.send(frames(parts)).await.is_err() {
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

pub(super) async fn read_replies(sock: Socket, inner: Arc<Inner>) {
    while let Ok(m) = sock.recv().await {
        let f = m.frames();
        if f.len() < 3 || f[1] != PROTOCOL {
            continue;
        }
        *lock(&inner.last_heard) = Instant::now();
        match &f[2][..] {
            b"DELIVER" => {
                if let Some(d) = parse_delivery(&f)
                    && let Some((_, tx)) = lock(&inner.consumers).get(&d.queue)
                {
                    let _ = tx.send(d);
                }
            }
            b"HEARTBEAT" => {}
            b"CONFIRMED" => {
                let corr = std::str::from_utf8(f.get(3).map_or(&[][..], |c| &c[..]))
                    .ok()
                    .and_then(|c| c.parse::<u64>().ok());
                if let Some(waiting) = corr.and_then(|c| lock(&inner.batches).remove(&c)) {
                    for (tx, status) in waiting.into_iter().zip(f.iter().skip(4)) {
                        if let Some(st) = parse_status(status) {
                            let _ = tx.send(st);
                        }
                    }
                }
            }
            _ => {
                if let Some((corr, reply)) = parse_reply(&f)
                    && let Some(tx) = lock(&inner.pending).remove(&corr)
                {
                    let _ = tx.send(reply);
                }
            }
        }
    }
}

/// Heartbeats while consuming; subscribe again when the link to the broker
/// comes back, or when the broker falls silent.
pub(super) async fn keep_consumers(sock: Socket, inner: Arc<Inner>, cfg: QueueClientConfig) {
    let mut tick = tokio::time::interval(cfg.heartbeat);
    let mut events = sock.registry().subscribe();
    loop {
        let relinked = tokio::select! {
            _ = tick.tick() => false,
            _ = link_restored(&mut events, sock.id()) => true,
        };
        let consumers: Vec<(String, u32)> = lock(&inner.consumers)
            .iter()
            .map(|(q, (p, _))| (q.clone(), *p))
            .collect();
        if consumers.is_empty() {
            continue;
        }
        let _ = sock.try_send(frames([Bytes::from("HEARTBEAT")]));
        let silent = lock(&inner.last_heard).elapsed() > cfg.broker_timeout;
        if relinked || silent {
            tracing::info!(relinked, "subscribing again");
            *lock(&inner.last_heard) = Instant::now();
            for (queue, prefetch) in consumers {
                // The OK goes unanswered: no one waits on correlation id 0.
                let _ = sock.try_send(frames([
                    Bytes::from("CONSUME"),
                    Bytes::from("0"),
                    Bytes::from(queue),
                    Bytes::from(prefetch.to_string()),
                ]));
            }
        }
    }
}
