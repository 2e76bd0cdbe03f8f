//! The core's settings.

/// Core settings.
#[derive(Clone, Debug)]
pub struct QueueCoreConfig {
    /// How often consumers hear a HEARTBEAT from the broker.
    pub heartbeat_ms: u64,
    /// A consumer silent for this long is gone: its messages are redelivered.
    pub peer_timeout_ms: u64,
    /// Messages held over all queues.
    pub messages_max: u64,
    /// Body bytes of stored messages kept in memory over all queues: past
    /// it, a stored message's body stays on disk only and is read back when
    /// needed (each queue also has its `max_bytes`, in memory or not).
    pub bytes_max: u64,
    /// Body bytes waiting for their write over all queues: past it,
    /// publishes are refused (503), so a stalled disk cannot fill the memory.
    /// One body is always taken when none waits, whatever its size.
    pub storing_bytes_max: u64,
    /// Consuming peers at once.
    pub peers_max: usize,
    /// Queues at once.
    pub queues_max: usize,
    /// In a cluster: a queue is served (consumers, deliveries, acks, expiry,
    /// purge) only by the node that leads its shard. Queues start unserved
    /// and [`QueueCore::serve`](super::QueueCore::serve) says which are led
    /// here; publishes are taken on every node.
    pub served_where_led: bool,
}

impl Default for QueueCoreConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            peer_timeout_ms: 5000,
            messages_max: 20_000_000,
            bytes_max: 4 << 30,
            storing_bytes_max: 4 << 30,
            peers_max: 100_000,
            queues_max: 10_000,
            served_where_led: false,
        }
    }
}
