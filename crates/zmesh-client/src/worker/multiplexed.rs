//! The ZMDPW1 worker session: one connection holding up to `concurrency`
//! requests, handlers running side by side, replies sent in batches.
//!
//! Drain: the worker says DRAIN and keeps answering; the broker answers DRAIN
//! once nothing more will come, so when that answer is in and no handler is
//! running, every request sent to this worker has been answered and
//! DISCONNECT loses nothing. A drain lasts at most `drain_timeout`; what is
//! still running then is dropped and the broker deals with it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use zmesh::Message;

use super::{SessionEnd, Worker};
use zmesh_wire::mdp::batch::{self, BATCH_ITEMS_MAX};
use zmesh_wire::mdp::{WORKER_CREDIT_MAX, ZMDPW1, cmd};

fn zw(command: u8) -> Vec<Bytes> {
    vec![Bytes::from_static(ZMDPW1), Bytes::from(vec![command])]
}

/// Send `items` (each header first) in as few messages as the limits allow.
async fn send_all(sock: &zmesh::Socket, items: Vec<Vec<Bytes>>) -> zmesh::Result<()> {
    for frames in batch::pack(items) {
        sock.send(Message::from_frames(frames)).await?;
    }
    Ok(())
}

impl Worker {
    /// One ZMDPW1 session; returns when the broker is lost or the drain is done.
    pub(super) async fn multiplexed_session(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> zmesh::Result<SessionEnd> {
        let (sock, mut gave_up) = self.connect().await?;
        let credit = self.cfg.concurrency.clamp(1, WORKER_CREDIT_MAX as usize) as u32;
        let mut ready = zw(cmd::W2_READY);
        ready.push(Bytes::from(self.service.clone()));
        ready.push(Bytes::copy_from_slice(&credit.to_be_bytes()));
        sock.send(Message::from_frames(ready)).await?;

        let hb = self.cfg.heartbeat_interval;
        let patience = hb * self.cfg.heartbeat_liveness;
        let mut broker_expiry = Instant::now() + patience;
        let mut next_hb = Instant::now() + hb;
        let mut heard = false;
        // Replies from the handlers; at most `credit` are ever waiting.
        let (reply_tx, mut replies) = mpsc::unbounded_channel::<Vec<Bytes>>();
        // Each handler is a task of its own, so a multi-threaded runtime runs
        // them in parallel; dropped with the session, so a lost broker's
        // requests are not worked on.
        let mut handlers = JoinSet::new();
        let mut in_flight = 0usize;
        let mut draining = false;
        let mut drained = false;
        // Far off until the drain starts.
        let mut drain_deadline = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut waiting = Vec::new();
        let end = loop {
            if draining && drained && in_flight == 0 {
                break SessionEnd::Stopped;
            }
            tokio::select! {
                m = sock.recv() => {
                    broker_expiry = Instant::now() + patience;
                    heard = true;
                    let frames = m?.frames();
                    let items = if batch::is_batch(&frames) {
                        batch::split(&frames).unwrap_or_default()
                    } else {
                        vec![frames]
                    };
                    // Replies of handlers that finish when first polled go
                    // out together right away; the others run as tasks.
                    let mut done_now = Vec::new();
                    for item in items {
                        match item.as_slice() {
                            [h, c, ..] if h.as_ref() != ZMDPW1 => {
                                tracing::debug!(command = ?c, "not a ZMDPW1 message; ignored");
                            }
                            [_, c, ..] if c.as_ref() == [cmd::W2_DISCONNECT] => {
                                return Ok(SessionEnd::Lost);
                            }
                            [_, c, ..] if c.as_ref() == [cmd::Z_DRAIN] => drained = true,
                            [_, c, address, delim, body @ ..] if c.as_ref() == [cmd::W2_REQUEST] && delim.is_empty() => {
                                let mut work = Box::pin(self.answer(address.clone(), body.to_vec()));
                                match (&mut work).now_or_never() {
                                    Some(reply) => done_now.push(reply),
                                    None => {
                                        in_flight += 1;
                                        let tx = reply_tx.clone();
                                        handlers.spawn(async move {
                                            let _ = tx.send(work.await);
                                        });
                                    }
                                }
                            }
                            _ => {} // heartbeats and anything else: liveness only
                        }
                    }
                    if !done_now.is_empty() {
                        self.stats.handled.fetch_add(done_now.len() as u64, Ordering::Relaxed);
                        send_all(&sock, done_now).await?;
                    }
                }
                why = super::refused(&mut gave_up) => break SessionEnd::Refused(why),
                n = replies.recv_many(&mut waiting, BATCH_ITEMS_MAX) => {
                    while handlers.try_join_next().is_some() {}
                    in_flight -= n;
                    send_all(&sock, std::mem::take(&mut waiting)).await?;
                    self.stats.handled.fetch_add(n as u64, Ordering::Relaxed);
                }
                _ = sleep_until(next_hb) => {
                    if Instant::now() >= broker_expiry {
                        if !heard {
                            tracing::warn!(
                                endpoint = %self.endpoint,
                                "no answer to READY: if this broker is not zmesh's, speak 7/MDP (zmesh serve --mdp, WorkerProtocol::Mdp)"
                            );
                        }
                        break SessionEnd::Lost;
                    }
                    sock.send(Message::from_frames(zw(cmd::W2_HEARTBEAT))).await?;
                    next_hb = Instant::now() + hb;
                }
                _ = super::stopped(stop), if !draining => {
                    draining = true;
                    drain_deadline = Instant::now() + self.cfg.drain_timeout;
                    sock.send(Message::from_frames(zw(cmd::Z_DRAIN))).await?;
                }
                _ = sleep_until(drain_deadline), if draining => {
                    tracing::warn!(held = in_flight, "drain timed out: leaving with requests unanswered");
                    break SessionEnd::Stopped;
                }
            }
        };
        super::end_session(sock, end, zw(cmd::W2_DISCONNECT)).await
    }

    /// The handler's FINAL reply to the request the broker calls `address`;
    /// an error or a panic becomes a `500` reply.
    fn answer(
        &self,
        address: Bytes,
        body: Vec<Bytes>,
    ) -> impl Future<Output = Vec<Bytes>> + Send + 'static {
        let reply = super::reply_to(&self.handler, body);
        async move {
            let mut f = zw(cmd::W2_FINAL);
            f.extend([address, Bytes::new()]);
            f.extend(reply.await);
            f
        }
    }
}
