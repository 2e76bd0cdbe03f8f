//! # zmesh-channel — a reliable channel between two nodes, no broker
//!
//! The classic recipe, over DEALER → ROUTER: the sender writes every message
//! to a local outbox log before sending it, numbers it by its offset, keeps at
//! most a window of them unacknowledged, and resends from the first
//! unacknowledged one when progress stops (go-back-N). The receiver accepts
//! only the next expected message, drops duplicates, and acknowledges
//! cumulatively — separately what arrived and what the application has
//! processed, so the sender forgets a message only once it is processed.
//! Both sides resume after a restart: the outbox and the receiver's committed
//! position are on disk. Wire: `docs/protocol/channel.md`.
//!
//! - [`sender`], [`receiver`]: the sans-IO state machines.
//! - [`proto`]: the wire format.
//! - [`driver`]: [`ChannelSender`] and [`ChannelReceiver`], the tokio halves.

pub mod driver;
pub mod proto;
pub mod receiver;
pub mod sender;

pub use driver::{
    ChannelError, ChannelReceiver, ChannelSender, Committed, Delivery, ReceiverOptions,
    SenderOptions, SenderStatus, load_committed,
};
