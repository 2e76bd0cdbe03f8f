//! # zmesh-broker — Majordomo, as a product
//!
//! A service broker speaking 7/MDP (MDPC01/MDPW01), 18/MDP (MDPC02/MDPW02)
//! and 8/MMI side by side, so clients and workers written in any language
//! from those specs work unchanged — plus zmesh's own client protocol, which
//! lets one connection carry many requests and hear about failures.
//!
//! - [`mdp`]: the broker side of Majordomo: the sans-IO state machine (frames
//!   and time in, frames out), its policies, coalescing and worker slots. The
//!   wire formats are `zmesh_wire::mdp`.
//! - [`driver`]: the tokio loop that runs the core on a ROUTER socket.
//! - [`outbox`]: per-peer queues for peers that cannot take a message yet.
//! - [`client`], [`worker`], [`breaker`]: the clients, now in `zmesh-client`
//!   (re-exported while callers move).
//! - [`admin`]: the admin HTTP port (metrics, JSON API, probes).
//! - [`dedup`]: producer message ids remembered by queues and streams.
//! - [`queue`]: durable work queues on the storage log (ZMQU01).
//! - [`stream`]: replayable pub/sub streams on the storage log (ZMST01).
//! - [`storage`]: what queues and streams share on disk.
//! - [`timers`]: deadlines in order, so a tick costs what is due, not what is held.

pub mod admin;
pub mod cluster;
/// The old name of [`mdp`], kept while callers move.
pub use mdp as core;
/// Now `zmesh_client::breaker`.
pub use zmesh_client::breaker;
/// Now `zmesh_client::mdp`.
pub use zmesh_client::mdp as client;
pub mod dedup;
pub mod driver;
pub mod mdp;
pub mod outbox;
mod peers;
pub mod queue;
pub mod storage;
pub mod stream;
pub mod timers;
/// Now `zmesh_client::worker`.
pub use zmesh_client::worker;
