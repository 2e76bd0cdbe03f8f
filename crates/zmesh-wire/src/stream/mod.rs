//! ZMST01, the stream protocol: its messages, the options a stream is
//! created with, and subject filters.

pub mod options;
pub mod proto;
pub mod subject;
