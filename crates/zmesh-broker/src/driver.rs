//! Runs the broker core on a ROUTER socket: the thin tokio half.

use std::future::Future;
use std::time::{Duration, Instant};

use zmesh::{Message, Socket};

use crate::core::{Action, Broker};
use crate::queue::proto::is_queue_message;
use crate::queue::store::{QueueStore, Sends};

/// Longest sleep between ticks even when nothing is due.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Most messages handled per wake-up before timers and sends get their turn.
const BATCH_MAX: usize = 256;

/// Serve on `sock` (a bound ROUTER) until `shutdown` completes; returns the core.
///
/// ```no_run
/// # async fn demo() -> zmesh::Result<()> {
/// use zmesh::{Socket, SocketOptions, SocketType};
/// use zmesh_broker::{core::{Broker, BrokerConfig}, driver};
/// let router = Socket::new(SocketType::Router, SocketOptions::default())?;
/// router.bind("tcp://127.0.0.1:5555").await?;
/// driver::run(&router, Broker::new(BrokerConfig::default()), std::future::pending()).await?;
/// # Ok(()) }
/// ```
pub async fn run(
    sock: &Socket,
    broker: Broker,
    shutdown: impl Future<Output = ()>,
) -> zmesh::Result<Broker> {
    Ok(run_with_queues(sock, broker, None, shutdown).await?.0)
}

fn send_all(sends: Sends, out: &mut Vec<Message>) {
    out.extend(
        sends
            .into_iter()
            .map(|(to, frames)| Message::from_frames(std::iter::once(to).chain(frames))),
    );
}

/// Like [`run`], and also serve durable queues (ZMQU01) from `queues` on the
/// same ROUTER. Returns the core and the store once `shutdown` completes.
pub async fn run_with_queues(
    sock: &Socket,
    mut broker: Broker,
    mut queues: Option<QueueStore>,
    shutdown: impl Future<Output = ()>,
) -> zmesh::Result<(Broker, Option<QueueStore>)> {
    tokio::pin!(shutdown);
    let mut out: Vec<Message> = Vec::new();
    loop {
        let now = Instant::now();
        let mut next = broker
            .next_deadline()
            .map_or(now + IDLE_TICK, |d| d.min(now + IDLE_TICK));
        if let Some(q) = &queues {
            next = next.min(q.next_deadline());
        }
        let durable = async {
            match queues.as_mut() {
                Some(q) => q.durable().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = sock.recv() => {
                // Take what else is already waiting too: one deadline scan, one
                // journal flush and one round of sends per batch.
                let now = Instant::now();
                let mut next_msg = Some(m?);
                let mut n = 0;
                while let Some(m) = next_msg.take() {
                    let frames = m.frames();
                    if let Some((from, rest)) = frames.split_first() {
                        match queues.as_mut() {
                            Some(q) if is_queue_message(rest) => send_all(q.handle(from, rest), &mut out),
                            _ => out.extend(broker.handle(now, from, rest).into_iter().map(to_message)),
                        }
                    }
                    n += 1;
                    if n < BATCH_MAX {
                        next_msg = sock.try_recv()?;
                    }
                }
                if let Some(q) = queues.as_mut() {
                    send_all(q.end_batch(), &mut out);
                }
            }
            r = durable => {
                let q = queues.as_mut().expect("only polled with queues");
                send_all(q.on_durable(r), &mut out);
                // Confirms can lead to more records (dead-letter settles): write them now.
                send_all(q.end_batch(), &mut out);
            }
            _ = tokio::time::sleep_until(next.into()) => {
                out.extend(broker.tick(Instant::now()).into_iter().map(to_message));
                if let Some(q) = queues.as_mut() {
                    send_all(q.tick(), &mut out);
                    send_all(q.end_batch(), &mut out);
                }
            }
            _ = &mut shutdown => return Ok((broker, queues)),
        };
        for m in out.drain(..) {
            // ROUTER drops messages for peers that are gone; that is the protocol's job to recover.
            sock.send(m).await?;
        }
    }
}

fn to_message(a: Action) -> Message {
    let Action::Send { to, frames } = a;
    Message::from_frames(std::iter::once(to).chain(frames))
}
