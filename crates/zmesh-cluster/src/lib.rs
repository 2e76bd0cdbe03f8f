//! # zmesh-cluster — zmesh brokers as a cluster
//!
//! Consensus is openraft's, not ours; what this crate adds is where its state
//! lives and how it reaches the broker. Design: `docs/cluster.md`.
//!
//! - [`LogStore`]: the Raft log and vote, kept by zmesh-log's durable writer
//!   (entries reported persisted only after an fsync covers them), read by
//!   replication through [`LogReader`] while appends go on.

mod log_store;

pub use log_store::{LogReader, LogStore, LogStoreError};
