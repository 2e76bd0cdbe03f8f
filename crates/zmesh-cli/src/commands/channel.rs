//! `zmesh channel send|recv`: move a file or stdin reliably between two hosts
//! over the brokerless reliable channel, resuming after either side restarts.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use zmesh_channel::{
    ChannelReceiver, ChannelSender, ReceiverOptions, SenderOptions, load_committed,
};

use crate::socket_args::SocketArgs;

/// Bytes per message. Fixed, so a restarted sender knows how much of its
/// input the outbox already holds.
const CHUNK: usize = 64 << 10;

/// Options of `zmesh channel`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  host B: zmesh channel recv --bind tcp://*:6000 --out backup.tar --state /var/lib/zmesh/chan
  host A: zmesh channel send --connect tcp://hostB:6000 --outbox /var/lib/zmesh/outbox backup.tar
Run either again after a crash with the same arguments: the transfer resumes.")]
pub struct ChannelCmd {
    #[command(subcommand)]
    pub action: ChannelAction,
}

/// Which end.
#[derive(Subcommand, Debug)]
pub enum ChannelAction {
    /// Send a file (or stdin) and wait until the receiver has it all.
    Send(SendArgs),
    /// Receive into a file; exit once the sender's end-of-data is written.
    Recv(RecvArgs),
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Receiver endpoint.
    #[arg(long)]
    pub connect: String,
    /// Outbox directory (keep it for the transfer's life; reuse it to resume).
    #[arg(long)]
    pub outbox: PathBuf,
    /// Channel name.
    #[arg(long, default_value = "default")]
    pub channel: String,
    /// Messages (64 KiB chunks) the outbox may hold unprocessed before reading waits.
    #[arg(long, default_value_t = 1024)]
    pub outbox_max: u64,
    /// fsync the outbox before sending (survives power loss, not just crashes).
    #[arg(long)]
    pub fsync: bool,
    /// Seconds to wait for the receiver to confirm everything.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Input file ("-" or absent: stdin, which cannot resume).
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

#[derive(Args, Debug)]
pub struct RecvArgs {
    /// Endpoint to bind.
    #[arg(long)]
    pub bind: String,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// State directory (the committed position; reuse it to resume).
    #[arg(long)]
    pub state: PathBuf,
    /// Channel name.
    #[arg(long, default_value = "default")]
    pub channel: String,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Run one end. Exit 0 when the transfer is complete, 1 on timeout.
pub async fn run(cmd: ChannelCmd) -> anyhow::Result<i32> {
    match cmd.action {
        ChannelAction::Send(a) => send(a).await,
        ChannelAction::Recv(a) => recv(a).await,
    }
}

async fn send(a: SendArgs) -> anyhow::Result<i32> {
    let mut opts = SenderOptions::new(&a.channel, &a.outbox);
    opts.fsync = a.fsync;
    opts.outbox_max = a.outbox_max.max(1);
    opts.socket = a.socket.options()?.name("channel-send");
    let tx = ChannelSender::open(&a.connect, opts).await?;
    // Resume: the outbox holds `written` messages of this transfer already —
    // full chunks, then possibly the empty end marker.
    let written = tx.status().written;
    let mut input: Box<dyn Read + Send> = match &a.input {
        Some(p) if p.as_os_str() != "-" => {
            let mut f = std::fs::File::open(p)?;
            let len = f.metadata()?.len();
            let data_chunks = len.div_ceil(CHUNK as u64);
            if written > data_chunks + 1 {
                anyhow::bail!(
                    "the outbox holds {written} messages, more than {} for this input: another transfer's outbox?",
                    data_chunks + 1
                );
            }
            f.seek(SeekFrom::Start((written * CHUNK as u64).min(len)))?;
            if written > 0 {
                eprintln!("zmesh: resuming after {written} messages already in the outbox");
            }
            Box::new(f)
        }
        _ if written > 0 => {
            anyhow::bail!("stdin cannot resume: give the file, or a fresh --outbox")
        }
        _ => Box::new(std::io::stdin()),
    };
    let ended = match &a.input {
        Some(p) if p.as_os_str() != "-" => {
            let len = std::fs::metadata(p)?.len();
            written == len.div_ceil(CHUNK as u64) + 1
        }
        _ => false,
    };
    if !ended {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut input, &mut buf)?;
            if n > 0 {
                tx.send(buf[..n].to_vec()).await?;
            }
            if n < CHUNK {
                break;
            }
        }
        // End of data: an empty message.
        tx.send(Vec::new()).await?;
    }
    if tx.wait_committed(Duration::from_secs_f64(a.timeout)).await {
        let s = tx.status();
        eprintln!(
            "zmesh: {} messages delivered ({} resend rounds)",
            s.written, s.resends
        );
        Ok(0)
    } else {
        eprintln!("zmesh: the receiver did not confirm everything in time");
        Ok(1)
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

async fn recv(a: RecvArgs) -> anyhow::Result<i32> {
    let c = load_committed(&a.state, &a.channel)?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&a.out)?;
    // Bytes past the committed length were written but not committed before a
    // crash: the sender sends them again, so cut them to keep exactly one copy.
    out.set_len(c.meta)?;
    out.seek(SeekFrom::End(0))?;
    let mut opts = ReceiverOptions::new(&a.state);
    opts.socket = a.socket.options()?.name("channel-recv");
    let (mut rx, real) = ChannelReceiver::bind(&a.bind, opts).await?;
    eprintln!(
        "zmesh: channel receiver on {real}, resuming at {}",
        c.committed
    );
    let mut len = c.meta;
    let mut pending = 0;
    let mut next_seq = c.committed;
    loop {
        let d = match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
            Ok(Some(d)) if d.channel == a.channel => Some(d),
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(1),
            Err(_) => None,
        };
        let done = d.as_ref().is_some_and(|d| d.body.is_empty());
        if let Some(d) = &d {
            out.write_all(&d.body)?;
            len += d.body.len() as u64;
            next_seq = d.seq + 1;
            pending += 1;
        }
        // Data first, then the position: a crash between the two leaves bytes
        // past the committed length, which the next start cuts.
        if pending > 0 && (done || pending >= 64 || d.is_none()) {
            out.sync_data()?;
            rx.commit(&a.channel, next_seq, len);
            pending = 0;
        }
        if done {
            // Let the final ACK go out before exiting.
            tokio::time::sleep(Duration::from_millis(300)).await;
            eprintln!("zmesh: received {len} bytes");
            return Ok(0);
        }
    }
}
