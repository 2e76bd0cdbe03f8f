//! # Durable queues: at-least-once delivery on the storage log
//!
//! Work-queue semantics over the ZMQU01 protocol (`docs/protocol/queues.md`):
//! a publish is confirmed only once its record is durable under the queue's
//! policy; consumers get messages within a credit window (prefetch) and
//! acknowledge them; what is not acknowledged in time, or whose consumer
//! leaves, is delivered again; after `max_deliveries` it goes to the
//! dead-letter queue.
//!
//! - [`core`]: the sans-IO state machine (messages and time in, actions out).
//! - [`state`]: one queue's messages and consumers.
//! - [`journal`]: the records written to the log.
//! - [`proto`]: the wire format.
//! - [`store`]: the journal, group commit and replay — the storage half of the driver
//!   (in a cluster, publishes go to the cluster instead: `store/replicated.rs`).
//! - `reads`: bodies read back from the journal off the loop, in order per consumer.
//! - [`client`]: async producer and consumer, now in `zmesh-client`.
//! - [`options`]: queue settings and the catalog.

/// Now `zmesh_client::queue`.
pub use zmesh_client::queue as client;
pub mod core;
pub mod journal;
pub mod options;
mod reads;
/// The queue protocol, now in `zmesh-wire`.
pub use zmesh_wire::queue::proto;
pub mod state;
pub mod store;
#[cfg(test)]
mod tests;

pub use self::core::{CoreCounters, QueueAction, QueueCore, QueueCoreConfig};
pub use options::{Catalog, QueueOptions, QueueSpec};
pub use state::{QueueCounters, QueueStats};
pub use store::{
    Decision, DiskDone, OpenReport, QueueStore, QueueStoreConfig, Replicated, ReplicatedDecision,
    ReplicatedPublish, StoreError,
};
