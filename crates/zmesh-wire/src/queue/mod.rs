//! ZMQU01, the durable queue protocol: its messages and the options a queue
//! is declared with.

pub mod options;
pub mod proto;
