//! # zmesh — reliable messaging on ZeroMQ's wire protocol
//!
//! zmesh speaks ZMTP 3.1 (through the `omq-tokio` engine) with any libzmq peer,
//! and makes the safe behaviour the default: heartbeats, reconnect with capped
//! exponential backoff and jitter, bounded queues, a finite linger, handshake
//! deadlines, a message-size cap — and a live [`Registry`] of every connection's
//! state and traffic.
//!
//! ```no_run
//! # async fn demo() -> zmesh::Result<()> {
//! use zmesh::{Socket, SocketOptions, SocketType};
//! let pull = Socket::new(SocketType::Pull, SocketOptions::default())?;
//! pull.bind("tcp://127.0.0.1:5557").await?;
//! let msg = pull.recv().await?;
//! println!("{} frames; peers: {:?}", msg.len(), pull.peers());
//! # Ok(()) }
//! ```
//!
//! Layout: `engine` (private) is the only code that touches the ZMTP engine;
//! [`registry`] holds the sans-IO connection state machine; [`codec`] the
//! payload formats; [`frames`] the text form of frames used by the CLI;
//! [`clock`] the one clock every core reads time from.

pub mod clock;
pub mod closes;
pub mod codec;
mod engine;
mod error;
pub mod frames;
mod message;
mod options;
pub mod registry;
pub mod security;
mod socket;
mod socket_type;
mod typed;

pub use closes::{ClosedConnections, ConnectionClosed};
#[doc(hidden)]
pub use engine::raw_bench;
pub use error::{Error, Result};
pub use message::Message;
pub use options::{Heartbeat, Reconnect, SocketOptions};
pub use registry::Registry;
pub use security::PeerAuth;
pub use socket::{Socket, TrySendError};
pub use socket_type::{SocketType, UnknownSocketType};
pub use typed::TypedSocket;
