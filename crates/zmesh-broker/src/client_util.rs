//! Small pieces every client of this crate shares: background tasks that
//! end with the client, a mutex that survives a panicked holder, full-jitter
//! backoff, and framing under a protocol name.

use std::sync::Mutex;
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

/// `"" PROTOCOL parts...`: the envelope every zmesh protocol message starts with.
pub(crate) fn framed(protocol: &'static [u8], parts: impl IntoIterator<Item = Bytes>) -> Message {
    Message::from_frames(
        [Bytes::new(), Bytes::from_static(protocol)]
            .into_iter()
            .chain(parts),
    )
}
