//! One module per `zmesh` subcommand.

pub mod bench;
pub mod bench_idle;
pub mod bench_queue;
pub mod bench_rr;
pub mod bench_stream;
pub mod broker;
pub mod channel;
pub mod demo;
pub mod input;
pub mod keygen;
pub mod mdp;
pub mod monitor;
pub mod queue;
pub mod socket;
pub mod status;
pub mod stream;

/// The user asked for something that cannot work; exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
