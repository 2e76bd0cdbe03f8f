//! Command-line flags for socket options, shared by every socket command.

use std::time::Duration;

use clap::Args;
use zmesh::SocketOptions;

/// Connection settings. Defaults are zmesh's safe defaults.
#[derive(Args, Debug, Clone)]
pub struct SocketArgs {
    /// Heartbeat interval in ms (0 turns heartbeats off).
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Close a link silent for this long, in ms.
    #[arg(long, default_value_t = 5000)]
    pub heartbeat_timeout_ms: u64,
    /// First reconnect wait, in ms (doubles up to --reconnect-max-ms, ±10 % jitter).
    #[arg(long, default_value_t = 100)]
    pub reconnect_ms: u64,
    /// Longest reconnect wait, in ms.
    #[arg(long, default_value_t = 5000)]
    pub reconnect_max_ms: u64,
    /// Send and receive high-water marks, in messages.
    #[arg(long, default_value_t = 1000)]
    pub hwm: u32,
    /// How long closing waits for queued messages, in ms.
    #[arg(long, default_value_t = 1000)]
    pub linger_ms: u64,
    /// Largest accepted message, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_message_size: usize,
    /// Routing identity to announce (for ROUTER peers).
    #[arg(long)]
    pub identity: Option<String>,
}

impl SocketArgs {
    /// The options these flags describe.
    pub fn options(&self) -> SocketOptions {
        let mut o = SocketOptions::default()
            .backoff(
                Duration::from_millis(self.reconnect_ms),
                Duration::from_millis(self.reconnect_max_ms),
            )
            .send_hwm(self.hwm)
            .recv_hwm(self.hwm)
            .linger(Duration::from_millis(self.linger_ms))
            .max_message_size(Some(self.max_message_size));
        o = if self.heartbeat_ms == 0 {
            o.no_heartbeat()
        } else {
            o.heartbeat_interval(Duration::from_millis(self.heartbeat_ms))
                .heartbeat_timeout(Duration::from_millis(self.heartbeat_timeout_ms))
        };
        if let Some(id) = &self.identity {
            o = o.identity(id.clone().into_bytes());
        }
        o
    }
}
