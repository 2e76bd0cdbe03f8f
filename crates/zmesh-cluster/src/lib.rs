//! # zmesh-cluster — zmesh brokers as a cluster
//!
//! Consensus is openraft's, not ours; what this crate adds is where its state
//! lives and how it reaches the broker. Design: `docs/cluster.md`.
//!
//! - [`LogStore`]: the Raft log and vote, kept by zmesh-log's durable writer
//!   (entries reported persisted only after an fsync covers them), read by
//!   replication through [`LogReader`] while appends go on.
//! - [`CatalogMachine`]: the metadata group's state machine, the queue
//!   catalog every node agrees on.
//! - The transport (`transport.rs`): openraft's RPCs as MessagePack frames
//!   over ZMTP, a DEALER per peer to its ROUTER, shared by all groups.
//! - [`ShardMachine`]: a shard group's state machine: batches of queue
//!   records, ordered and replicated, handed to the broker as committed.
//! - [`ClusterNode`]: one node, with its endpoint, metadata group and shards.

mod catalog;
mod log_store;
mod node;
mod propose;
mod shard;
mod snapshot_file;
mod transport;
mod types;

pub use catalog::{
    CATALOG_QUEUES_MAX, CLIENT_ENDPOINT_BYTES_MAX, CatalogError, CatalogMachine, CatalogView,
    QueueRecord,
};
pub use log_store::{LogReader, LogStore, LogStoreError};
pub use node::{
    AdvertiseError, ClusterNode, NodeConfig, SHARD_SNAPSHOT_EVERY_ENTRIES, SHARDS_DEFAULT,
    SHARDS_MAX, StartError, Timing,
};
pub use propose::{Applied, ProposeError};
pub use shard::{COMMITTED_QUEUE_MAX, Committed, ShardMachine, ShardUpdate, shard_of};
pub use snapshot_file::SnapshotFileError;
pub use transport::{Answer, MESSAGE_BYTES_MAX, Reply, Request, Rpc, WireError};
pub use types::{Command, GroupId, METADATA_GROUP, NodeId, Outcome, Types};
