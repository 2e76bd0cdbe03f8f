//! The catalog of streams. The options themselves are part of the protocol
//! and live in `zmesh-wire` (re-exported here).

use serde::{Deserialize, Serialize};
pub use zmesh_wire::stream::options::*;

/// Every stream, and every durable subscription's position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCatalog {
    /// Id for the next stream.
    pub next_id: u32,
    /// Streams.
    pub streams: Vec<StreamSpec>,
}
