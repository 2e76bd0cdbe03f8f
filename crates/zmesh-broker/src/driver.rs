//! Runs the broker core on a ROUTER socket: the thin tokio half.

use std::future::Future;
use std::time::{Duration, Instant};

use zmesh::{Message, Socket};

use crate::core::{Action, Broker};

/// Longest sleep between ticks even when nothing is due.
const IDLE_TICK: Duration = Duration::from_secs(1);

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
                let frames = m?.frames();
                let Some((from, rest)) = frames.split_first() else { continue };
                broker.handle(Instant::now(), from, rest)
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
