//! The tokio halves: a sender task owning a DEALER and the outbox log, a
//! receiver task owning a ROUTER and the committed positions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use zmesh::clock::{Clock, Now, SystemClock};
use zmesh::{Message, Socket, SocketOptions, SocketType};
use zmesh_log::{Durability, DurableWriter, Log, LogConfig};

use crate::proto::Frame;
use crate::receiver::{ReceiverCore, Verdict};
use crate::sender::{SenderConfig, SenderCore};

/// Errors of the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Environment: the outbox or the state could not be written or read.
    #[error(transparent)]
    Storage(#[from] zmesh_log::LogError),
    /// Environment: a state file could not be written or read.
    #[error("channel state {path}: {source}")]
    State {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Environment: the outbox could not store the message (disk full, a
    /// failed write or fsync); `send` may be tried again.
    #[error("the outbox in {path} could not store the message: {reason}")]
    Outbox {
        /// The outbox directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The socket failed.
    #[error(transparent)]
    Socket(#[from] zmesh::Error),
    /// Caller: the channel's task has stopped (after an error, see the log).
    #[error("the channel has stopped")]
    Stopped,
    /// Caller: a channel name must be 1-100 bytes.
    #[error("channel name must be 1-100 bytes")]
    BadName,
}

const TICK: Duration = Duration::from_millis(50);

/// The outbox's id in its writer (the only log there).
const OUTBOX: u64 = 0;

/// Sender settings.
#[derive(Clone, Debug)]
pub struct SenderOptions {
    /// Channel name (the receiver keeps one position per name).
    pub channel: String,
    /// Directory of the outbox log.
    pub outbox_dir: PathBuf,
    /// Window, timeouts.
    pub core: SenderConfig,
    /// Messages written and not yet processed, at most; `send` waits beyond.
    pub outbox_max: u64,
    /// fsync the outbox before `send` returns (else: written, survives a crash
    /// of the process, not of the machine).
    pub fsync: bool,
    /// Socket options (security, heartbeats, backoff).
    pub socket: SocketOptions,
    /// Where the sender's timers read the time (the system's, or a test's).
    pub clock: Arc<dyn Clock>,
}

impl SenderOptions {
    /// Defaults for `channel` with its outbox in `outbox_dir`.
    pub fn new(channel: impl Into<String>, outbox_dir: impl Into<PathBuf>) -> Self {
        Self {
            channel: channel.into(),
            outbox_dir: outbox_dir.into(),
            core: SenderConfig::default(),
            outbox_max: 100_000,
            fsync: false,
            socket: SocketOptions::default().name("channel-sender"),
            clock: SystemClock::shared(),
        }
    }
}

/// What the sender knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStatus {
    /// Messages in the outbox (its end offset).
    pub written: u64,
    /// Messages the receiver processed.
    pub committed: u64,
    /// The receiver answered recently.
    pub link_up: bool,
    /// Go-back-N resend rounds so far.
    pub resends: u64,
}

enum SendCmd {
    Send(Bytes, oneshot::Sender<Result<u64, ChannelError>>),
}

/// The sending end: `send` returns once the message is in the outbox; the
/// task delivers it, resending until the receiver has processed it.
///
/// ```no_run
/// # async fn demo() -> Result<(), zmesh_channel::ChannelError> {
/// use zmesh_channel::{ChannelSender, SenderOptions};
/// let tx = ChannelSender::open("tcp://10.0.0.2:6000", SenderOptions::new("files", "/var/lib/app/outbox")).await?;
/// tx.send("chunk 1").await?;
/// tx.wait_committed(std::time::Duration::from_secs(30)).await;
/// # Ok(()) }
/// ```
pub struct ChannelSender {
    tx: mpsc::Sender<SendCmd>,
    status: watch::Receiver<SenderStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChannelSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChannelSender {
    /// Open the outbox and start delivering to the receiver at `endpoint`.
    pub async fn open(endpoint: &str, opts: SenderOptions) -> Result<ChannelSender, ChannelError> {
        if opts.channel.is_empty() || opts.channel.len() > crate::proto::CHANNEL_NAME_MAX {
            return Err(ChannelError::BadName);
        }
        let (log, _) = Log::open(&opts.outbox_dir, LogConfig::default())?;
        let sock = Socket::new(SocketType::Dealer, opts.socket.clone())?;
        sock.connect(endpoint).await?;
        let core = SenderCore::new(
            opts.core.clone(),
            log.first_offset(),
            log.written_offset(),
            opts.clock.now(),
        );
        let (tx, rx) = mpsc::channel(1024);
        let (status_tx, status) = watch::channel(SenderStatus {
            written: log.written_offset(),
            ..SenderStatus::default()
        });
        // The writer's own group commit thread is never asked for: `fsync`
        // syncs each batch here (see `run_sender`).
        let mut writer = DurableWriter::new(0, 1 << 20, |_, _| {});
        writer.add_log(OUTBOX, log);
        let task = tokio::spawn(async move {
            if let Err(e) = run_sender(sock, writer, core, opts, rx, status_tx).await {
                tracing::error!(error = %e, "channel sender stopped");
            }
        });
        Ok(ChannelSender { tx, status, task })
    }

    /// Append `body` to the outbox; returns its sequence number. Waits while
    /// the outbox holds `outbox_max` unprocessed messages.
    pub async fn send(&self, body: impl Into<Bytes>) -> Result<u64, ChannelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SendCmd::Send(body.into(), reply))
            .await
            .map_err(|_| ChannelError::Stopped)?;
        rx.await.map_err(|_| ChannelError::Stopped)?
    }

    /// The latest status.
    pub fn status(&self) -> SenderStatus {
        *self.status.borrow()
    }

    /// Wait until the receiver processed everything sent so far, or `limit`
    /// passes; true when it did.
    pub async fn wait_committed(&self, limit: Duration) -> bool {
        let mut status = self.status.clone();
        tokio::time::timeout(limit, async {
            loop {
                let s = *status.borrow_and_update();
                if s.committed >= s.written {
                    return;
                }
                if status.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        })
        .await
        .is_ok()
    }
}

async fn run_sender(
    sock: Socket,
    mut writer: DurableWriter<usize>,
    mut core: SenderCore,
    opts: SenderOptions,
    mut rx: mpsc::Receiver<SendCmd>,
    status: watch::Sender<SenderStatus>,
) -> Result<(), ChannelError> {
    let channel = Bytes::from(opts.channel.clone());
    let hello = || {
        Message::from_frames(
            Frame::Hello {
                channel: channel.clone(),
            }
            .encode(),
        )
    };
    let _ = sock.try_send(hello());
    let mut tick = tokio::time::interval(TICK);
    loop {
        let room = core.pending() < opts.outbox_max;
        tokio::select! {
            cmd = rx.recv(), if room => {
                let Some(first) = cmd else { return Ok(()) };
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                // `fsync`: each record waits for a sync, which the batch
                // runs itself at its end; else written is enough.
                let durability = if opts.fsync {
                    Durability::GROUP_DEFAULT
                } else {
                    Durability::Os
                };
                let mut replies = Vec::with_capacity(batch.len());
                for (i, SendCmd::Send(body, reply)) in batch.into_iter().enumerate() {
                    match writer.append(OUTBOX, &body, Some((i, durability))) {
                        Ok(_) => replies.push(Some(reply)),
                        Err(e) => {
                            // The typed error answers it; its outcome below is skipped.
                            let _ = reply.send(Err(ChannelError::Storage(e)));
                            replies.push(None);
                        }
                    }
                }
                // Persist before anything is sent or confirmed. A failed write
                // fails exactly the messages it lost, earlier appends included.
                if opts.fsync {
                    writer.sync(OUTBOX);
                } else {
                    writer.flush(opts.clock.instant());
                }
                for (i, result) in writer.take_outcomes() {
                    if let Some(reply) = replies.get_mut(i).and_then(Option::take) {
                        let _ = reply.send(result.map_err(|reason| ChannelError::Outbox {
                            path: opts.outbox_dir.clone(),
                            reason,
                        }));
                    }
                }
                debug_assert!(writer.settled(), "every send is answered in its batch");
                core.appended(outbox(&writer).written_offset());
            }
            m = sock.recv() => {
                let m = m?;
                if let Some(Frame::Ack { channel: ch, committed, received, window }) = Frame::parse(&m.frames())
                    && ch == channel
                {
                    core.on_ack(opts.clock.now(), committed, received, window);
                    let log = writer.log_mut(OUTBOX).expect("the outbox is added at open");
                    if let Err(e) = log.remove_before(core.committed()) {
                        tracing::warn!(error = %e, "outbox cleanup failed");
                    }
                }
            }
            _ = tick.tick() => {
                if core.tick(opts.clock.now()) {
                    let frame = if core.synced() {
                        Frame::Ping { channel: channel.clone() }
                    } else {
                        Frame::Hello { channel: channel.clone() }
                    };
                    let _ = sock.try_send(Message::from_frames(frame.encode()));
                }
            }
        }
        transmit(
            &sock,
            outbox(&writer),
            &mut core,
            &channel,
            opts.clock.now(),
        )?;
        status.send_replace(SenderStatus {
            written: outbox(&writer).written_offset(),
            committed: core.committed(),
            link_up: core.link_up(opts.clock.now()),
            resends: core.resends,
        });
    }
}

fn outbox(writer: &DurableWriter<usize>) -> &Log {
    writer.log(OUTBOX).expect("the outbox is added at open")
}

/// Send what the window allows, from the outbox; stop at a full send queue.
fn transmit(
    sock: &Socket,
    log: &Log,
    core: &mut SenderCore,
    channel: &Bytes,
    now: Now,
) -> Result<(), ChannelError> {
    let range = core.transmit(now);
    let mut from = range.start;
    while from < range.end {
        let batch = log.read(from, (range.end - from) as usize, 4 << 20)?;
        let Some(last) = batch.last().map(|r| r.offset) else {
            break;
        };
        for r in batch {
            let data = Frame::Data {
                channel: channel.clone(),
                seq: r.offset,
                body: r.payload,
            };
            match sock.try_send(Message::from_frames(data.encode())) {
                Ok(()) => {}
                Err(zmesh::TrySendError::Full(_)) => {
                    core.rewind(r.offset);
                    return Ok(());
                }
                Err(zmesh::TrySendError::Failed(e)) => return Err(e.into()),
            }
        }
        from = last + 1;
    }
    Ok(())
}

/// Receiver settings.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// Directory of the committed positions (one small file per channel).
    pub state_dir: PathBuf,
    /// Messages accepted past the committed position, per channel.
    pub window: u64,
    /// Socket options.
    pub socket: SocketOptions,
}

impl ReceiverOptions {
    /// Defaults with the state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            window: 1024,
            socket: SocketOptions::default().name("channel-receiver"),
        }
    }
}

/// A message handed to the application, in order, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Channel.
    pub channel: String,
    /// Sequence number.
    pub seq: u64,
    /// Body.
    pub body: Bytes,
}

/// A channel's persisted position: everything below `committed` processed,
/// and the application's own number stored with it (e.g. an output length).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// Processed below this.
    pub committed: u64,
    /// The application's number.
    pub meta: u64,
}

fn state_path(dir: &Path, channel: &str) -> PathBuf {
    // Channel names are bytes from the network: hex keeps the file name safe.
    let hex: String = channel.bytes().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.json"))
}

/// Read a channel's persisted position (zero when none).
pub fn load_committed(state_dir: &Path, channel: &str) -> Result<Committed, ChannelError> {
    let path = state_path(state_dir, channel);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| ChannelError::State {
            path,
            source: std::io::Error::other(e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Committed::default()),
        Err(source) => Err(ChannelError::State { path, source }),
    }
}

fn save_committed(state_dir: &Path, channel: &str, c: Committed) -> Result<(), ChannelError> {
    use std::io::Write;
    let path = state_path(state_dir, channel);
    let io = |source| ChannelError::State {
        path: path.clone(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&serde_json::to_vec(&c).expect("serializes"))
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

enum RecvCmd {
    Commit(String, Committed),
}

/// The receiving end: hands each message to the application once, in
/// order; the application calls [`ChannelReceiver::commit`] once it has
/// processed (and made durable) what it received.
pub struct ChannelReceiver {
    rx: mpsc::UnboundedReceiver<Delivery>,
    cmd: mpsc::UnboundedSender<RecvCmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChannelReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Chan {
    core: ReceiverCore,
    peer: Option<Bytes>,
    meta: u64,
}

impl ChannelReceiver {
    /// Bind at `endpoint`; returns the receiver and the bound endpoint.
    pub async fn bind(
        endpoint: &str,
        opts: ReceiverOptions,
    ) -> Result<(ChannelReceiver, String), ChannelError> {
        std::fs::create_dir_all(&opts.state_dir).map_err(|source| ChannelError::State {
            path: opts.state_dir.clone(),
            source,
        })?;
        let sock = Socket::new(SocketType::Router, opts.socket.clone())?;
        let real = sock.bind(endpoint).await?;
        let (dtx, rx) = mpsc::unbounded_channel();
        let (cmd, crx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            if let Err(e) = run_receiver(sock, opts, dtx, crx).await {
                tracing::error!(error = %e, "channel receiver stopped");
            }
        });
        Ok((ChannelReceiver { rx, cmd, task }, real))
    }

    /// The next message of any channel.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// Everything of `channel` below `next_seq` is processed; `meta` is
    /// stored with the position (see [`load_committed`]).
    pub fn commit(&self, channel: &str, next_seq: u64, meta: u64) {
        let _ = self.cmd.send(RecvCmd::Commit(
            channel.to_owned(),
            Committed {
                committed: next_seq,
                meta,
            },
        ));
    }
}

async fn run_receiver(
    sock: Socket,
    opts: ReceiverOptions,
    deliver: mpsc::UnboundedSender<Delivery>,
    mut cmds: mpsc::UnboundedReceiver<RecvCmd>,
) -> Result<(), ChannelError> {
    let mut chans: HashMap<Bytes, Chan> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let mut touched: Vec<Bytes> = Vec::new();
        tokio::select! {
            m = sock.recv() => {
                let mut next = Some(m?);
                let mut n = 0;
                while let Some(m) = next.take() {
                    let f = m.frames();
                    if let Some((peer, rest)) = f.split_first()
                        && let Some(frame) = Frame::parse(rest)
                    {
                        let ch_name = match &frame {
                            Frame::Hello { channel } | Frame::Ping { channel } | Frame::Data { channel, .. } => channel.clone(),
                            Frame::Ack { .. } => continue,
                        };
                        let Ok(name) = std::str::from_utf8(&ch_name) else { continue };
                        if !chans.contains_key(&ch_name) {
                            // One channel's unreadable state must not stop the others.
                            let c = match load_committed(&opts.state_dir, name) {
                                Ok(c) => c,
                                Err(e) => {
                                    tracing::error!(error = %e, channel = name, "channel state unreadable; its messages are ignored");
                                    continue;
                                }
                            };
                            chans.insert(ch_name.clone(), Chan {
                                core: ReceiverCore::new(c.committed, opts.window),
                                peer: None,
                                meta: c.meta,
                            });
                        }
                        let chan = chans.get_mut(&ch_name).expect("inserted");
                        chan.peer = Some(peer.clone());
                        if let Frame::Data { seq, body, .. } = frame
                            && chan.core.on_data(seq) == Verdict::Deliver
                        {
                            let _ = deliver.send(Delivery { channel: name.to_owned(), seq, body });
                        }
                        if !touched.contains(&ch_name) {
                            touched.push(ch_name);
                        }
                    }
                    n += 1;
                    if n < 256 {
                        next = sock.try_recv()?;
                    }
                }
            }
            cmd = cmds.recv() => {
                let Some(RecvCmd::Commit(name, c)) = cmd else { return Ok(()) };
                let key = Bytes::from(name.clone());
                // Positions only move forward; an older commit (and its meta) is ignored.
                if let Some(chan) = chans.get_mut(&key)
                    && c.committed > chan.core.committed
                {
                    chan.core.commit(c.committed);
                    chan.meta = c.meta;
                    let saved = Committed { committed: chan.core.committed, meta: c.meta };
                    if let Err(e) = save_committed(&opts.state_dir, &name, saved) {
                        // Not acknowledged as committed: the sender keeps the messages.
                        tracing::error!(error = %e, channel = %name, "saving the channel position failed");
                        continue;
                    }
                    touched.push(key);
                }
            }
            _ = tick.tick() => {
                // Unprompted ACKs keep the sender's view fresh when DATA stops.
                touched.extend(chans.keys().cloned());
            }
        }
        for key in touched {
            if let Some(chan) = chans.get(&key)
                && let Some(peer) = &chan.peer
            {
                let ack = Frame::Ack {
                    channel: key.clone(),
                    committed: chan.core.committed,
                    received: chan.core.received,
                    window: chan.core.window_left(),
                };
                let frames = std::iter::once(peer.clone()).chain(ack.encode());
                let _ = sock.try_send(Message::from_frames(frames));
            }
        }
    }
}
