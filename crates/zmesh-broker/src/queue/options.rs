//! The catalog of declared queues. The options themselves are part of the
//! protocol and live in `zmesh-wire` (re-exported here).

use serde::{Deserialize, Serialize};
pub use zmesh_wire::queue::options::*;

/// Every declared queue; saved whole (write, fsync, rename) on each change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Id for the next declared queue.
    pub next_id: u32,
    /// Declared queues.
    pub queues: Vec<QueueSpec>,
}
