//! Which worker of a service takes the next request: the least busy one with
//! a free slot, and among equally busy ones the one that changed longest ago.
//! For MDP workers (one slot each) that is least-recently-used, as 7/MDP
//! asks; for ZMDPW1 workers it spreads a burst over the pool instead of
//! filling one worker's credit while another idles.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::state::Worker;

/// The free slots of one service's workers.
#[derive(Debug, Default)]
pub(super) struct FreeSlots {
    /// (requests held, when it last changed, worker): first is next.
    order: BTreeSet<(u32, u64, Bytes)>,
    /// Free slots over all listed workers.
    free: usize,
}

impl FreeSlots {
    /// List `w` (if it can take a request) at its current load; `seq` orders
    /// it after every worker listed before at the same load.
    pub fn offer(&mut self, id: &Bytes, w: &mut Worker, seq: u64) {
        self.withdraw(id, w);
        let busy = w.busy.len() as u32;
        if w.draining || w.congested || busy >= w.credit {
            return;
        }
        self.order.insert((busy, seq, id.clone()));
        self.free += (w.credit - busy) as usize;
        w.listed = Some((busy, seq));
    }

    /// Take `w` off the list (it is busy, draining, congested or gone).
    pub fn withdraw(&mut self, id: &Bytes, w: &mut Worker) {
        if let Some((busy, seq)) = w.listed.take() {
            self.order.remove(&(busy, seq, id.clone()));
            self.free -= (w.credit - busy) as usize;
        }
    }

    /// The worker to take the next request, if any has a free slot.
    pub fn next(&self) -> Option<Bytes> {
        self.order.first().map(|(_, _, id)| id.clone())
    }

    /// Free slots in all.
    pub fn free(&self) -> usize {
        self.free
    }
}
