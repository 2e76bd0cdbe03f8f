//! Connections as they close, for a loop that tracks its peers by connection
//! (a broker expiring the workers and clients of a closed connection at once,
//! instead of waiting for their heartbeats to lapse).
//!
//! The engine's monitor feeds every watcher a bounded backlog. A watcher that
//! falls more than [`CLOSED_BACKLOG_MAX`] closes behind is told
//! [`ConnectionClosed::Lagged`] once and re-reads the live set with
//! [`crate::Socket::connection_ids`]; nothing is dropped without it knowing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

/// Closes a watcher may fall behind by before it is told to re-read the live set.
pub const CLOSED_BACKLOG_MAX: usize = 4096;

/// What [`ClosedConnections::next`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionClosed {
    /// The connection with this id (as [`crate::Message::connection_id`] names it) closed.
    Closed {
        /// The engine's id of the connection, unique within its socket.
        connection_id: u64,
    },
    /// Closes were missed (the watcher fell behind, or the engine's events
    /// lagged): compare what you track with [`crate::Socket::connection_ids`].
    Lagged,
}

#[derive(Default)]
struct Backlog {
    closed: VecDeque<u64>,
    lagged: bool,
    socket_closed: bool,
}

#[derive(Default)]
struct WatchState {
    backlog: Mutex<Backlog>,
    wake: Notify,
}

impl WatchState {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The closes of one socket's connections, from when it was made
/// ([`crate::Socket::closed_connections`]).
pub struct ClosedConnections {
    state: Arc<WatchState>,
}

impl std::fmt::Debug for ClosedConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosedConnections").finish_non_exhaustive()
    }
}

impl ClosedConnections {
    /// The next close, waiting for one; `None` once the socket has closed and
    /// every close before it was read.
    pub async fn next(&mut self) -> Option<ConnectionClosed> {
        loop {
            if let Some(c) = self.try_next() {
                return Some(c);
            }
            if self.state.lock().socket_closed {
                return None;
            }
            // `notify_one` keeps a permit, so a close pushed between the check
            // above and this wait still wakes it.
            self.state.wake.notified().await;
        }
    }

    /// The next close if one is waiting.
    pub fn try_next(&mut self) -> Option<ConnectionClosed> {
        let mut b = self.state.lock();
        if std::mem::take(&mut b.lagged) {
            return Some(ConnectionClosed::Lagged);
        }
        b.closed
            .pop_front()
            .map(|connection_id| ConnectionClosed::Closed { connection_id })
    }
}

/// The watchers of one socket; the monitor task feeds them.
#[derive(Default)]
pub(crate) struct Watchers {
    list: Mutex<Vec<Weak<WatchState>>>,
}

impl Watchers {
    pub(crate) fn watch(&self) -> ClosedConnections {
        let state = Arc::new(WatchState::default());
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&state));
        ClosedConnections { state }
    }

    fn each(&self, mut f: impl FnMut(&mut Backlog)) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| {
            let Some(state) = w.upgrade() else {
                return false;
            };
            f(&mut state.lock());
            state.wake.notify_one();
            true
        });
    }

    pub(crate) fn closed(&self, connection_id: u64) {
        self.each(|b| {
            if b.closed.len() >= CLOSED_BACKLOG_MAX {
                // The watcher re-reads the live set, which covers everything dropped here.
                b.closed.clear();
                b.lagged = true;
            } else {
                b.closed.push_back(connection_id);
            }
        });
    }

    pub(crate) fn lagged(&self) {
        self.each(|b| b.lagged = true);
    }

    pub(crate) fn socket_closed(&self) {
        self.each(|b| b.socket_closed = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_past_its_backlog_is_told_it_lagged_once() {
        let watchers = Watchers::default();
        let mut w = watchers.watch();
        for id in 0..(CLOSED_BACKLOG_MAX as u64 + 1) {
            watchers.closed(id);
        }
        assert_eq!(w.try_next(), Some(ConnectionClosed::Lagged));
        // Everything up to the overflow is covered by re-reading the live set.
        assert_eq!(w.try_next(), None);
        watchers.closed(9);
        assert_eq!(
            w.try_next(),
            Some(ConnectionClosed::Closed { connection_id: 9 })
        );
    }

    #[tokio::test]
    async fn next_ends_after_the_socket_closed_and_the_backlog_is_read() {
        let watchers = Watchers::default();
        let mut w = watchers.watch();
        watchers.closed(7);
        watchers.socket_closed();
        assert_eq!(
            w.next().await,
            Some(ConnectionClosed::Closed { connection_id: 7 })
        );
        assert_eq!(w.next().await, None);
    }

    #[test]
    fn dropped_watchers_are_forgotten() {
        let watchers = Watchers::default();
        drop(watchers.watch());
        watchers.closed(1);
        assert!(watchers.list.lock().unwrap().is_empty());
    }
}
