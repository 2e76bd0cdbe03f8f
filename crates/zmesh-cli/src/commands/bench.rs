//! `zmesh bench`: zmesh sockets against the raw engine (and libzmq, via the script).

use clap::Args;

/// Options of `zmesh bench`.
#[derive(Args, Debug)]
pub struct BenchCmd {}

/// Run the benchmarks.
pub async fn run(_cmd: BenchCmd) -> anyhow::Result<i32> {
    Ok(0)
}
