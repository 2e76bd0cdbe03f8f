//! Resource probes of a running process (Linux `/proc`).

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Number of open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Number of threads of process `pid`.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Send `signal` to `pid` (SIGKILL, SIGSTOP, SIGCONT, SIGTERM...).
pub fn signal(pid: u32, signal: i32) -> std::io::Result<()> {
    // kill(2) has no memory-safety preconditions; it is a plain syscall, exposed
    // safely by std only for SIGKILL, so go through the nix-free route: the `kill` command.
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{signal} {pid} failed"
        )))
    }
}

pub use libc::{SIGCONT, SIGKILL, SIGSTOP, SIGTERM, SIGUSR1};
