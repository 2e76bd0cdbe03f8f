//! The 7/MDP worker session: one connection, one request at a time.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use zmesh::{Message, Socket};

use super::{SessionEnd, Worker};
use zmesh_wire::mdp::{MDPW01, cmd};

fn w1(command: u8) -> Vec<Bytes> {
    vec![
        Bytes::new(),
        Bytes::from_static(MDPW01),
        Bytes::from(vec![command]),
    ]
}

impl Worker {
    /// One 7/MDP session: one request at a time.
    pub(super) async fn mdp_session(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> zmesh::Result<SessionEnd> {
        let (sock, mut gave_up) = self.connect().await?;
        let mut ready = w1(cmd::W1_READY);
        ready.push(Bytes::from(self.service.clone()));
        sock.send(Message::from_frames(ready)).await?;
        let hb = self.cfg.heartbeat_interval;
        let patience = hb * self.cfg.heartbeat_liveness;
        let mut broker_expiry = Instant::now() + patience;
        let mut next_hb = Instant::now() + hb;
        // One deadline for the whole drain, set when the stop comes.
        let mut drain_deadline = None;
        let end = loop {
            tokio::select! {
                // A stop wins over a request that arrives at the same moment.
                biased;
                _ = super::stopped(stop) => break SessionEnd::Stopped,
                m = sock.recv() => {
                    broker_expiry = Instant::now() + patience;
                    let frames = m?.frames();
                    match frames.as_slice() {
                        [e, h, c, ..] if e.is_empty() && h.as_ref() == MDPW01 && c.as_ref() == [cmd::W1_DISCONNECT] => break SessionEnd::Lost,
                        [e, h, c, address, delim, body @ ..] if e.is_empty() && h.as_ref() == MDPW01 && c.as_ref() == [cmd::W1_REQUEST] && delim.is_empty() => {
                            let Some(reply) = self.handle(&sock, body.to_vec(), &mut next_hb, stop, &mut drain_deadline).await? else {
                                tracing::warn!("drain timed out: leaving with a request unanswered");
                                break SessionEnd::Stopped;
                            };
                            let mut f = w1(cmd::W1_REPLY);
                            f.extend([address.clone(), Bytes::new()]);
                            f.extend(reply);
                            sock.send(Message::from_frames(f)).await?;
                            self.stats.handled.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {} // heartbeats and anything else: liveness only
                    }
                }
                why = super::refused(&mut gave_up) => break SessionEnd::Refused(why),
                _ = sleep_until(next_hb) => {
                    if Instant::now() >= broker_expiry {
                        break SessionEnd::Lost;
                    }
                    sock.send(Message::from_frames(w1(cmd::W1_HEARTBEAT))).await?;
                    next_hb = Instant::now() + hb;
                }
            }
        };
        // Drained (we are between requests): DISCONNECT tells the broker.
        super::end_session(sock, end, w1(cmd::W1_DISCONNECT)).await
    }

    /// Run the handler while heartbeats keep going out. Once a stop is
    /// asked, the handler has `drain_timeout` to finish; `None` when it did
    /// not (the broker then deals with the request when we DISCONNECT).
    async fn handle(
        &self,
        sock: &Socket,
        body: Vec<Bytes>,
        next_hb: &mut Instant,
        stop: &mut watch::Receiver<bool>,
        drain_deadline: &mut Option<Instant>,
    ) -> zmesh::Result<Option<Vec<Bytes>>> {
        let work = super::reply_to(&self.handler, body);
        tokio::pin!(work);
        let drain_timeout = self.cfg.drain_timeout;
        loop {
            tokio::select! {
                reply = &mut work => return Ok(Some(reply)),
                _ = sleep_until(*next_hb) => {
                    sock.send(Message::from_frames(w1(cmd::W1_HEARTBEAT))).await?;
                    *next_hb = Instant::now() + self.cfg.heartbeat_interval;
                }
                _ = super::stopped(stop), if drain_deadline.is_none() => {
                    *drain_deadline = Some(Instant::now() + drain_timeout);
                }
                _ = sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if drain_deadline.is_some() => {
                    return Ok(None);
                }
            }
        }
    }
}
