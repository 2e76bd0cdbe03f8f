//! # zmesh-wire — the protocols, as values
//!
//! What clients and the broker both speak, with no I/O and no runtime: the
//! frames, commands, status codes and name rules of each protocol, and the
//! small value types they carry.
//!
//! - [`mdp`]: 7/MDP (v0.1 and v0.2), 8/MMI, and zmesh's extensions ZMDPC1,
//!   ZMDPW1 and BATCH.
//! - [`queue`]: ZMQU01, durable queues.
//! - [`stream`]: ZMST01, streams.
//! - [`status`]: the error codes ZMQU01 and ZMST01 share.
//! - [`Durability`]: how a queue's or stream's records reach stable storage.

mod durability;
pub mod mdp;
pub mod queue;
pub mod status;
pub mod stream;

pub use durability::{Durability, DurabilityError};
