//! Error codes of the queue (ZMQU01) and stream (ZMST01) protocols,
//! HTTP-like so they read the same in any language.

/// The request is malformed or its options invalid.
pub const BAD_REQUEST: u16 = 400;
/// No such queue or stream.
pub const NOT_FOUND: u16 = 404;
/// The queue or stream exists with other options.
pub const CONFLICT: u16 = 409;
/// In a cluster: another node serves this request (the queue's consumers,
/// its purge). The frame after the reason, when present, is where clients
/// reach that node; without it no node is known to serve it now (an
/// election is under way): retry shortly.
pub const MISDIRECTED: u16 = 421;
/// The queue is at its length or bytes limit: back off and retry.
pub const QUEUE_FULL: u16 = 429;
/// The broker is at a global limit.
pub const UNAVAILABLE: u16 = 503;
/// The storage refused the write (disk full, I/O error).
pub const STORAGE: u16 = 507;
