//! # zmesh-wire — the protocols, as values
//!
//! What clients and the broker both speak, with no I/O and no runtime: the
//! frames, commands, status codes and name rules of each protocol, and the
//! small value types they carry.
//!
//! - [`Durability`]: how a queue's or stream's records reach stable storage.

mod durability;

pub use durability::{Durability, DurabilityError};
