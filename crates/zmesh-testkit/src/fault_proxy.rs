//! A TCP proxy with faults on demand, bound to 127.0.0.1.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use zmesh_testkit::fault_proxy::FaultProxy;
//! let proxy = FaultProxy::start("127.0.0.1:5555".parse().unwrap()).await?;
//! // point the client at proxy.endpoint() instead of the server
//! proxy.set_stalled(true);   // bytes stop flowing, connections stay open
//! proxy.cut();               // every open connection is closed at once
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest chunk forwarded at once.
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Control {
    delay_us: AtomicU64,
    stalled: AtomicBool,
    refuse: AtomicBool,
    corrupt_next: AtomicUsize,
    live: AtomicUsize,
    accepted: AtomicU64,
    /// What the first client sent (up to RECORD_MAX_BYTES), for replay attacks in tests.
    recorded: Mutex<Vec<u8>>,
}

/// Most bytes of the first connection that are recorded.
const RECORD_MAX_BYTES: usize = 64 * 1024;

/// A running proxy. Dropping it stops accepting and closes its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    ctl: Arc<Control>,
    // Bumped to cut connections; each pump watches it. Changes wake stalled pumps too.
    generation: watch::Sender<u64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on an ephemeral port of 127.0.0.1 and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ctl = Arc::new(Control::default());
        let (generation, _) = watch::channel(0u64);
        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            ctl.clone(),
            generation.clone(),
        ));
        Ok(Self {
            addr,
            ctl,
            generation,
            accept_task,
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as a ZeroMQ endpoint.
    pub fn endpoint(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Delay every forwarded chunk by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.ctl
            .delay_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Stop (true) or resume (false) forwarding; connections stay open.
    pub fn set_stalled(&self, on: bool) {
        self.ctl.stalled.store(on, Ordering::Relaxed);
        self.generation.send_modify(|_| {});
    }

    /// Refuse (close at once) new connections while on.
    pub fn set_refusing(&self, on: bool) {
        self.ctl.refuse.store(on, Ordering::Relaxed);
    }

    /// Flip one byte in each of the next `n` forwarded chunks.
    pub fn corrupt_next(&self, n: usize) {
        self.ctl.corrupt_next.store(n, Ordering::Relaxed);
    }

    /// Close every open connection now.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Connections open now.
    pub fn live_connections(&self) -> usize {
        self.ctl.live.load(Ordering::Relaxed)
    }

    /// The bytes the first client sent to the server, as recorded so far.
    pub fn recorded_client_bytes(&self) -> Vec<u8> {
        self.ctl
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.ctl.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    ctl: Arc<Control>,
    generation: watch::Sender<u64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let first = ctl.accepted.fetch_add(1, Ordering::Relaxed) == 0;
        if ctl.refuse.load(Ordering::Relaxed) {
            drop(client);
            continue;
        }
        let ctl = ctl.clone();
        let cut = generation.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            ctl.live.fetch_add(1, Ordering::Relaxed);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = pump(cr, sw, ctl.clone(), cut.clone(), first);
            let down = pump(sr, cw, ctl.clone(), cut, false);
            // Either direction ending closes both: a half-open ZMTP link is useless.
            tokio::select! { _ = up => {}, _ = down => {} }
            ctl.live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    ctl: Arc<Control>,
    mut cut: watch::Receiver<u64>,
    record: bool,
) {
    let start_gen = *cut.borrow();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = cut.changed() => {
                if *cut.borrow() != start_gen { return }
                continue;
            }
        };
        // Stalled: hold the bytes until resumed or cut.
        while ctl.stalled.load(Ordering::Relaxed) {
            if cut.changed().await.is_err() || *cut.borrow() != start_gen {
                return;
            }
        }
        let delay = ctl.delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        if ctl
            .corrupt_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
            .is_ok()
        {
            let i = n / 2;
            buf[i] ^= 0xff;
        }
        if record {
            let mut rec = ctl.recorded.lock().unwrap_or_else(|p| p.into_inner());
            let room = RECORD_MAX_BYTES.saturating_sub(rec.len());
            rec.extend_from_slice(&buf[..n.min(room)]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
