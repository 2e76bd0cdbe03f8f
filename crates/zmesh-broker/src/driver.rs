//! Runs the broker core on a ROUTER socket: the thin tokio half.

use std::future::Future;
use std::time::{Duration, Instant};

use zmesh::{Message, Socket};

use crate::core::{Action, Broker};

/// Longest sleep between ticks even when nothing is due.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Most messages handled per wake-up before timers and sends get their turn.
const BATCH_MAX: usize = 256;

fn handle_message(broker: &mut Broker, now: Instant, m: &Message) -> Vec<Action> {
    let frames = m.frames();
    match frames.split_first() {
        Some((from, rest)) => broker.handle(now, from, rest),
        None => Vec::new(),
    }
}

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
    mut broker: Broker,
    shutdown: impl Future<Output = ()>,
) -> zmesh::Result<Broker> {
    tokio::pin!(shutdown);
    loop {
        let now = Instant::now();
        let next = broker
            .next_deadline()
            .map_or(now + IDLE_TICK, |d| d.min(now + IDLE_TICK));
        let actions = tokio::select! {
            m = sock.recv() => {
                // Take what else is already waiting too: one deadline scan and
                // one round of sends per batch instead of per message.
                let now = Instant::now();
                let mut actions = handle_message(&mut broker, now, &m?);
                for _ in 1..BATCH_MAX {
                    match sock.try_recv()? {
                        Some(m) => actions.extend(handle_message(&mut broker, now, &m)),
                        None => break,
                    }
                }
                actions
            }
            _ = tokio::time::sleep_until(next.into()) => broker.tick(Instant::now()),
            _ = &mut shutdown => return Ok(broker),
        };
        for Action::Send { to, frames } in actions {
            // ROUTER drops messages for peers that are gone; that is the protocol's job to recover.
            sock.send(Message::from_frames(std::iter::once(to).chain(frames)))
                .await?;
        }
    }
}
