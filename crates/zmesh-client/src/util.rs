//! Small pieces every client of this crate shares: background tasks that
//! end with the client, a mutex that survives a panicked holder, full-jitter
//! backoff, framing under a protocol name, and message ids for deduplication.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use zmesh::Message;

/// Background tasks aborted when the last clone of their client goes.
pub(crate) struct Tasks(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Lock, taking over the data if a holder panicked (the maps stay usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A uniformly random wait in [0, d] ("full jitter").
pub(crate) fn jitter(d: Duration) -> Duration {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("OS random number generator unavailable");
    let frac = (u64::from_be_bytes(r) >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(frac)
}

/// Resolves when a link of the socket `socket_id` becomes active again (the
/// broker is back after a restart or a dropped connection), or when events
/// were missed. A client then subscribes again at once, instead of waiting
/// until the broker's silence shows. Cancel-safe.
pub(crate) async fn link_restored(
    events: &mut tokio::sync::broadcast::Receiver<zmesh::registry::ConnectionEvent>,
    socket_id: u64,
) {
    use tokio::sync::broadcast::error::RecvError;
    use zmesh::registry::PeerState;
    loop {
        match events.recv().await {
            Ok(ev) if ev.socket_id == socket_id && ev.to == PeerState::Active => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Message ids unique to one client: a random prefix and a counter. A
/// publish keeps its id through its retries, so the broker stores it once.
pub(crate) struct MsgIds {
    prefix: String,
    next: AtomicU64,
}

impl MsgIds {
    pub fn new() -> MsgIds {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("OS random number generator unavailable");
        MsgIds {
            prefix: hex::encode(seed),
            next: AtomicU64::new(0),
        }
    }

    /// A fresh id, `PREFIX-N`.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}

/// `"" PROTOCOL parts...`: the envelope every zmesh protocol message starts with.
pub(crate) fn framed(protocol: &'static [u8], parts: impl IntoIterator<Item = Bytes>) -> Message {
    Message::from_frames(
        [Bytes::new(), Bytes::from_static(protocol)]
            .into_iter()
            .chain(parts),
    )
}
