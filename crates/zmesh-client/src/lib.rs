//! # zmesh-client — the clients, with no server code
//!
//! What an application links to talk to a zmesh broker (or, for Majordomo,
//! any broker speaking 7/MDP). It depends on the socket library and the wire
//! formats only: no HTTP server, no metrics, no storage.
//!
//! - [`mdp`]: requests with deadline, retries, backoff and a circuit breaker.
//! - [`worker`]: handlers with bounded concurrency, heartbeats, reconnect, drain.
//! - [`breaker`]: the circuit breaker, sans-IO.
//! - [`queue`]: durable queue producer and consumer (ZMQU01).
//! - [`stream`]: stream publisher, subscriber with gap detection, snapshot (ZMST01).
//! - [`request`]: how they all retry, and the queue and stream clients' error.

pub mod breaker;
pub mod mdp;
pub mod queue;
pub mod request;
pub mod stream;
mod util;
pub mod worker;
