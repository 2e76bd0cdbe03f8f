//! `zmesh-fault-proxy --upstream ADDR`: a TCP proxy with faults on demand,
//! steered from stdin, for trying a deployment's peers against a bad network
//! by hand. It lives with the test kit, not in the `zmesh` binary, so the
//! product ships no test code.
//!
//! Commands on stdin, one per line:
//! `delay MS | stall | resume | cut | refuse | accept | corrupt N | status`.
//! Each answers `ok live=N accepted=N`; the proxy stops when stdin closes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use zmesh_testkit::fault_proxy::FaultProxy;

const USAGE: &str = "usage: zmesh-fault-proxy --upstream IP:PORT
commands on stdin: delay MS | stall | resume | cut | refuse | accept | corrupt N | status";

fn upstream_from_args() -> Result<SocketAddr, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, addr] if flag == "--upstream" => addr
            .parse()
            .map_err(|_| format!("--upstream {addr:?}: expected IP:PORT")),
        [one] if one.starts_with("--upstream=") => {
            let addr = &one["--upstream=".len()..];
            addr.parse()
                .map_err(|_| format!("--upstream {addr:?}: expected IP:PORT"))
        }
        _ => Err(USAGE.to_owned()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let upstream = match upstream_from_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match FaultProxy::start(upstream).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("zmesh-fault-proxy: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening {}", proxy.endpoint());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |s: &str| s.parse::<u64>().ok();
        match words.as_slice() {
            ["delay", ms] if number(ms).is_some() => {
                proxy.set_delay(Duration::from_millis(number(ms).unwrap_or(0)))
            }
            ["stall"] => proxy.set_stalled(true),
            ["resume"] => proxy.set_stalled(false),
            ["cut"] => proxy.cut(),
            ["refuse"] => proxy.set_refusing(true),
            ["accept"] => proxy.set_refusing(false),
            ["corrupt", n] if number(n).is_some() => {
                proxy.corrupt_next(number(n).unwrap_or(0) as usize)
            }
            ["status"] => {}
            [] => continue,
            _ => {
                eprintln!("zmesh-fault-proxy: unknown command {line:?}");
                continue;
            }
        }
        println!(
            "ok live={} accepted={}",
            proxy.live_connections(),
            proxy.accepted()
        );
    }
    ExitCode::SUCCESS
}
