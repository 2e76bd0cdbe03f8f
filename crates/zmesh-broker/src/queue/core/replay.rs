//! Start-up: the journal read back into the core, and which journal offsets
//! live messages still need.

use super::*;

impl QueueCore {
    /// Apply one journal record read back at start-up.
    pub fn replay(&mut self, now: Now, offset: u64, record: &Bytes) {
        let entry = Entry::decode(record);
        if let Some(
            Entry::Publish { queue, .. }
            | Entry::Settle { queue, .. }
            | Entry::Requeue { queue, .. }
            | Entry::Move { queue, .. }
            | Entry::Deliver { queue, .. },
        ) = &entry
        {
            // Should the catalog ever lag the journal, a new queue must not inherit old records.
            self.catalog.next_id = self.catalog.next_id.max(queue + 1);
        }
        match entry {
            Some(Entry::Publish {
                queue,
                published_ms,
                msg_id,
                body,
            }) => {
                let Some(q) = self.queue_by_id(queue) else {
                    return;
                };
                q.remember(msg_id.clone(), Dedup::Stored(offset));
                q.insert(
                    offset,
                    Msg::replayed(body, msg_id, published_ms, now, offset),
                );
                self.messages += 1;
            }
            Some(Entry::Settle { queue, offsets, .. }) => {
                let offsets: Vec<u64> = offsets.iter().map(|o| self.moved_to(*o)).collect();
                let Some(q) = self.queue_by_id(queue) else {
                    return;
                };
                let removed = offsets.iter().filter(|o| q.remove(**o).is_some()).count();
                self.messages -= removed as u64;
            }
            Some(Entry::Move {
                queue,
                from,
                order,
                published_ms,
                deliveries,
                msg_id,
                body,
            }) => {
                // Where the message is now: a MOVE after a failed one (or
                // a SETTLE of the original written while the move was in
                // flight) must reach the copy, not resurrect the original.
                let current = self.moved_to(from);
                self.replay_moves.insert(from, offset);
                let Some(q) = self.queue_by_id(queue) else {
                    return;
                };
                // The original is gone already when its segment was deleted.
                if q.remove(current).is_none() {
                    self.messages += 1;
                }
                let q = self.queue_by_id(queue).expect("found above");
                // An id past the window stays forgotten: a move does not make it new.
                q.dedup.update(&msg_id, Dedup::Stored(offset));
                let mut msg = Msg::replayed(body, msg_id, published_ms, now, order);
                msg.deliveries = deliveries;
                q.insert(offset, msg);
            }
            Some(Entry::Requeue {
                queue,
                offset,
                deliveries,
            }) => {
                let offset = self.moved_to(offset);
                if let Some(m) = self
                    .queue_by_id(queue)
                    .and_then(|q| q.messages.get_mut(&offset))
                {
                    m.deliveries = deliveries;
                }
            }
            Some(Entry::Deliver { queue, offsets }) => {
                let offsets: Vec<u64> = offsets.iter().map(|o| self.moved_to(*o)).collect();
                let Some(q) = self.queue_by_id(queue) else {
                    return;
                };
                for o in offsets {
                    if let Some(m) = q.messages.get_mut(&o) {
                        m.deliveries = m.deliveries.saturating_add(1);
                    }
                }
            }
            None => tracing::warn!(offset, "journal record of an unknown kind skipped"),
        }
    }

    /// Replay is over: forget how moved messages were renamed.
    pub fn replay_done(&mut self) {
        self.replay_moves = HashMap::default();
    }

    /// During replay, the tag a message stored at `tag` has now (after the
    /// MOVEs replayed so far).
    pub(super) fn moved_to(&self, mut tag: u64) -> u64 {
        while let Some(&next) = self.replay_moves.get(&tag) {
            tag = next;
        }
        tag
    }

    /// The lowest offset a live message still needs; the log may drop
    /// segments wholly below it. `None` when nothing is held.
    pub fn min_live_offset(&self) -> Option<u64> {
        self.queues
            .values()
            .filter_map(|q| q.messages.first_key_value().map(|(tag, _)| *tag))
            .chain(self.tickets.values().filter_map(|t| match t {
                // The original stays needed until its dead-letter copy is durable.
                Ticket::DeadLetter { from_offset, .. } => Some(*from_offset),
                // Likewise until its move is durable.
                Ticket::Move { from, .. } => Some(*from),
                Ticket::Publish { .. } => None,
            }))
            .min()
    }

    /// The lowest journal offset to keep: the oldest a live message needs,
    /// or a `pending` record (written, not yet answered) needs; with neither,
    /// `end` (everything below may go).
    pub fn keep_from(&self, pending: impl IntoIterator<Item = u64>, end: u64) -> u64 {
        self.min_live_offset()
            .into_iter()
            .chain(pending)
            .min()
            .unwrap_or(end)
    }
}
