//! # Streams: ordered, replayable pub/sub on the storage log
//!
//! Each stream is its own log; every message gets a sequence number (its
//! offset) and a subject. Subscribers start from the beginning, from new
//! messages, from a sequence number or from a time, filter by subject
//! (`orders.*`, `orders.>`), and receive by credit; durable subscriptions have
//! their position kept by the broker. A snapshot returns the last message of
//! every subject (the Clone pattern), so a client can load the current state
//! and follow from the snapshot's sequence on. Wire: `docs/protocol/streams.md`.
//!
//! - [`core`]: the sans-IO state machine.
//! - [`store`]: one log per stream, group commit, replay.
//! - [`proto`], [`record`], [`subject`], [`options`]: formats.
//! - [`client`]: subscriber with gap detection and re-subscription, publisher,
//!   snapshot; now in `zmesh-client`.

/// Now `zmesh_client::stream`.
pub use zmesh_client::stream as client;
pub mod core;
pub mod options;
/// The stream protocol, now in `zmesh-wire`.
pub use zmesh_wire::stream::proto;
pub mod record;
pub mod store;
/// Subjects and filters, now in `zmesh-wire`.
pub use zmesh_wire::stream::subject;
#[cfg(test)]
mod tests;

pub use self::core::{StreamAction, StreamCore, StreamCoreConfig};
pub use options::{StreamCatalog, StreamOptions, StreamSpec};
pub use store::{DiskDone, StreamStore, StreamStoreConfig};
