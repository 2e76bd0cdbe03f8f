//! A consumer: the deliveries of one queue, acked or nacked through the
//! client that made it.

use super::*;

/// Deliveries of one queue.
pub struct Consumer {
    pub(super) client: QueueClient,
    pub(super) queue: String,
    pub(super) rx: mpsc::UnboundedReceiver<Delivery>,
    pub(super) stopped: bool,
}

impl Drop for Consumer {
    /// A consumer dropped without `cancel` stops consuming too: its
    /// unacknowledged messages go back to the queue.
    fn drop(&mut self) {
        if !self.stopped {
            let sub = lock(&self.client.inner.subscriptions).remove(&self.queue);
            if let Some(sub) = sub {
                let link = self.client.inner.links.get(sub.link);
                let _ = link.sock.try_send(frames([
                    Bytes::from("CANCEL"),
                    Bytes::from("0"),
                    Bytes::from(self.queue.clone()),
                ]));
            }
        }
    }
}

impl Consumer {
    /// The next delivery (`None` once the client is gone).
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// Acknowledge one message.
    pub async fn ack(&self, tag: u64) -> Result<(), QueueError> {
        self.client.ack(&self.queue, &[tag]).await
    }

    /// Acknowledge several at once.
    pub async fn ack_many(&self, tags: &[u64]) -> Result<(), QueueError> {
        self.client.ack(&self.queue, tags).await
    }

    /// Give one back: to the queue (`requeue`) or to the dead letters.
    pub async fn nack(&self, tag: u64, requeue: bool) -> Result<(), QueueError> {
        self.client.nack(&self.queue, &[tag], requeue).await
    }

    /// Stop consuming; unacknowledged messages go back to the queue.
    pub async fn cancel(self) -> Result<(), QueueError> {
        self.stop(false).await
    }

    /// Stop consuming but leave unacknowledged messages held: they can be
    /// acked by tag later, from any connection, until their ack timeout.
    pub async fn detach(self) -> Result<(), QueueError> {
        self.stop(true).await
    }

    async fn stop(mut self, keep: bool) -> Result<(), QueueError> {
        self.stopped = true;
        let sub = lock(&self.client.inner.subscriptions).remove(&self.queue);
        let mut parts = vec!["CANCEL".into(), self.queue.clone().into()];
        if keep {
            parts.push("keep".into());
        }
        // To the node it consumed from; CANCEL is not redirected.
        let start = sub.map_or_else(|| self.client.inner.links.pick(), |s| s.link);
        self.client
            .inner
            .request(parts, None, start)
            .await
            .map(|_| ())
    }
}
