//! `zmesh fault-proxy`: a TCP proxy with faults on demand, steered from stdin.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tokio::io::AsyncBufReadExt;
use zmesh_testkit::fault_proxy::FaultProxy;

use super::UsageError;

/// Options of `zmesh fault-proxy`.
#[derive(Args, Debug)]
#[command(after_help = "Commands on stdin, one per line:
  delay MS | stall | resume | cut | refuse | accept | corrupt N | status")]
pub struct FaultProxyCmd {
    /// Address to forward to, e.g. 127.0.0.1:5555.
    #[arg(long)]
    pub upstream: SocketAddr,
}

/// Run the proxy until stdin closes.
pub async fn run(cmd: FaultProxyCmd) -> anyhow::Result<i32> {
    let proxy = FaultProxy::start(cmd.upstream).await?;
    println!("listening {}", proxy.endpoint());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["delay", ms] => proxy.set_delay(Duration::from_millis(parse(ms)?)),
            ["stall"] => proxy.set_stalled(true),
            ["resume"] => proxy.set_stalled(false),
            ["cut"] => proxy.cut(),
            ["refuse"] => proxy.set_refusing(true),
            ["accept"] => proxy.set_refusing(false),
            ["corrupt", n] => proxy.corrupt_next(parse(n)? as usize),
            ["status"] => {}
            [] => continue,
            _ => {
                eprintln!("zmesh: unknown command {line:?}");
                continue;
            }
        }
        println!(
            "ok live={} accepted={}",
            proxy.live_connections(),
            proxy.accepted()
        );
    }
    Ok(0)
}

fn parse(s: &str) -> anyhow::Result<u64> {
    s.parse()
        .map_err(|_| UsageError(format!("not a number: {s}")).into())
}
