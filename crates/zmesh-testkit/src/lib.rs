//! Test tooling shared by zmesh's tests, benchmarks and demo.
//!
//! - [`fault_proxy`]: a TCP proxy the test steers — delay, stall, cut, corrupt,
//!   refuse — so network faults are reproducible without privileges.
//! - [`process`]: resident memory and open descriptors of a process, for leak tests.
//! - [`python`]: where the pyzmq interpreter lives (the foreign ZeroMQ peer).
//! - [`net`]: free ports and bounded waits.
//! - [`rng`]: a seeded random source, so a failing input reproduces.

pub mod fault_proxy;
pub mod net;
pub mod peer;
pub mod process;
pub mod python;
pub mod rng;
