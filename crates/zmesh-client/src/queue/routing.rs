//! How a request finds its broker: one attempt on a link, retried on the
//! next link on silence or a dropped connection, following a cluster's
//! redirects (421) and learning its nodes (NODES); and how a consumer is
//! subscribed again.

use super::*;

impl Inner {
    pub(super) fn retry(&self) -> Retry {
        Retry::new(
            self.cfg.retries,
            self.cfg.backoff_initial,
            self.cfg.backoff_max,
        )
    }

    /// The link to `endpoint`, connecting (and reading from) a new one if
    /// the client has none.
    pub(super) async fn link_to(self: &Arc<Self>, endpoint: &str) -> Result<usize, QueueError> {
        let inner = self.clone();
        self.links
            .to(endpoint, move |link| {
                let tasks = inner.tasks.clone();
                spawn_in(&tasks, read_replies(link, inner));
            })
            .await
    }

    /// Where a request about `queue` goes first: the link its consumer or
    /// its last redirect named, else the current link.
    pub(super) fn link_for(&self, queue: Option<&str>) -> usize {
        if let Some(queue) = queue {
            if let Some(sub) = lock(&self.subscriptions).get(queue) {
                return sub.link;
            }
            if let Some(at) = lock(&self.served_at).get(queue) {
                return *at;
            }
        }
        self.links.pick()
    }

    pub(super) fn served_at(&self, queue: &str, link: usize) {
        let mut served_at = lock(&self.served_at);
        if served_at.len() >= SERVED_AT_MAX {
            served_at.clear();
        }
        served_at.insert(queue.to_owned(), link);
    }

    /// One attempt on `link`: its reply, or `None` on silence or when the
    /// link's connection dropped meanwhile.
    pub(super) async fn attempt(
        &self,
        link: usize,
        parts: &[Bytes],
    ) -> Result<Option<Reply>, QueueError> {
        // A broker known to be down, while another is up, is not waited
        // for (a redirect may name a node that just died).
        if !self.links.usable(link) {
            return Ok(None);
        }
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= self.cfg.in_flight_max {
                return Err(QueueError::Busy(self.cfg.in_flight_max));
            }
            pending.insert(corr, (link, tx));
        }
        let msg = frames(
            std::iter::once(parts[0].clone())
                .chain(std::iter::once(Bytes::from(corr.to_string())))
                .chain(parts[1..].iter().cloned()),
        );
        let sock = self.links.get(link).sock.clone();
        let exchange = async {
            sock.send(msg).await?;
            Ok::<_, QueueError>(rx.await.ok())
        };
        let result = match tokio::time::timeout(self.cfg.attempt_timeout, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                lock(&self.pending).remove(&corr);
                return Err(e);
            }
            Err(_) => None,
        };
        if result.is_none() {
            lock(&self.pending).remove(&corr);
        }
        Ok(result)
    }

    /// A request, retried on silence (on the next link), following the
    /// cluster's redirects for `queue`: its reply and the link that gave it.
    /// An ERROR other than 421 is returned at once, never retried.
    pub(super) async fn request(
        self: &Arc<Self>,
        parts: Vec<Bytes>,
        queue: Option<&str>,
        start: usize,
    ) -> Result<(Reply, usize), QueueError> {
        let mut retry = self.retry();
        let mut link = start;
        let (mut redirects, mut leaderless) = (0, 0);
        let mut misdirected = None;
        while retry.next().await {
            loop {
                let gave_up = self.links.get(link).gave_up.clone();
                let reply = unless_refused(&gave_up, self.attempt(link, &parts))
                    .await
                    .map_err(|reason| QueueError::HandshakeRefused { reason })??;
                let no_leader = match reply {
                    Some(Reply::Misdirected(reason, Some(endpoint)))
                        if redirects < REDIRECTS_MAX =>
                    {
                        redirects += 1;
                        link = self.link_to(&endpoint).await?;
                        if let Some(queue) = queue {
                            self.served_at(queue, link);
                        }
                        if self.links.usable(link) {
                            // Followed at once: that node serves it.
                            continue;
                        }
                        // The node named is down (it died; the cluster
                        // has not noticed yet): as if none were named.
                        reason
                    }
                    Some(Reply::Misdirected(reason, _)) => reason,
                    Some(Reply::Error(code, reason)) => {
                        return Err(QueueError::Refused { code, reason });
                    }
                    Some(reply) => return Ok((reply, link)),
                    None => {
                        link = self.links.move_off(link);
                        break;
                    }
                };
                // No node known to serve it now (an election): ask the
                // next node shortly, for as long as an election may take;
                // past that, each time counts as an attempt.
                misdirected = Some(no_leader);
                link = self.links.after(link);
                if leaderless < LEADERLESS_WAITS_MAX {
                    leaderless += 1;
                    tokio::time::sleep(crate::util::jitter(self.cfg.backoff_initial)).await;
                    continue;
                }
                break;
            }
        }
        Err(match misdirected {
            Some(reason) => QueueError::Refused {
                code: zmesh_wire::status::MISDIRECTED,
                reason,
            },
            None => QueueError::Timeout(retry.attempts()),
        })
    }

    /// Link `link`'s connection dropped: what waits on it is failed at
    /// once (callers try again elsewhere), and requests move off it.
    pub(super) fn link_dropped(&self, link: usize) {
        lock(&self.pending).retain(|_, (at, _)| *at != link);
        lock(&self.batches).retain(|_, (at, _)| *at != link);
        self.links.move_off(link);
    }

    /// Asks the broker at `link` for the cluster's other nodes (NODES) and
    /// connects to each, so a client given one node can move to another
    /// when that one goes away. One attempt; a single broker names none.
    pub(super) fn learn_nodes(self: &Arc<Self>, link: usize) {
        let inner = self.clone();
        spawn_in(&self.tasks, async move {
            let Ok(Some(Reply::Ok(Some(body)))) =
                inner.attempt(link, &[Bytes::from_static(b"NODES")]).await
            else {
                return;
            };
            let Ok(nodes) = serde_json::from_slice::<NodesReply>(&body) else {
                return;
            };
            for endpoint in nodes.nodes.values() {
                if let Err(e) = inner.link_to(endpoint).await {
                    tracing::debug!(endpoint, error = %e, "not connecting to a node");
                }
            }
        });
    }

    /// Subscribes `queue`'s consumer again, starting at `start`, unless a
    /// CONSUME for it is out already. Runs on its own task.
    pub(super) fn resubscribe(self: &Arc<Self>, queue: String, start: usize) {
        let prefetch = {
            let mut subs = lock(&self.subscriptions);
            let Some(sub) = subs.get_mut(&queue).filter(|s| !s.subscribing) else {
                return;
            };
            sub.subscribing = true;
            sub.prefetch
        };
        tracing::info!(queue, "subscribing again");
        let inner = self.clone();
        spawn_in(&self.tasks, async move {
            let answered = inner
                .request(consume_parts(&queue, prefetch), Some(&queue), start)
                .await;
            if let Some(sub) = lock(&inner.subscriptions).get_mut(&queue) {
                sub.subscribing = false;
                match answered {
                    Ok((_, link)) => sub.link = link,
                    // Tried again when the link is found silent.
                    Err(e) => tracing::warn!(queue, error = %e, "not subscribed again"),
                }
            }
        });
    }
}
