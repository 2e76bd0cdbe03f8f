//! The Majordomo wire protocol: 7/MDP (v0.1), 18/MDP (v0.2), and zmesh's client extension.
//!
//! One ROUTER socket carries all of them; the first frame after the peer's
//! identity tells them apart (v0.1 starts with an empty frame, v0.2 and the
//! zmesh client protocol with their header).
//!
//! The zmesh client protocol `ZMDPC1` adds what MDP leaves out, so that one
//! connection can carry many requests and hear about failures:
//!
//! ```text
//! request:  "ZMDPC1" | 0x01 | request id (8 bytes) | service | body...
//! reply:    "ZMDPC1" | 0x02 PARTIAL, 0x03 FINAL or 0x04 ERROR | request id | service | body...
//!           (ERROR body: status code such as "503", then a reason)
//! ```
//! Workers never see it: they get the REQUESTs of their own protocol whatever
//! the client spoke.
//!
//! The zmesh worker protocol `ZMDPW1` is 18/MDP's worker side with a credit:
//! one connection serves up to `credit` requests at once, so a worker process
//! with a pool of handlers needs one connection rather than one per handler.
//!
//! ```text
//! READY:      "ZMDPW1" | 0x01 | service | credit (4 bytes big-endian, 1..=1024)
//! REQUEST:    "ZMDPW1" | 0x02 | handle | "" | body...       (broker to worker)
//! PARTIAL:    "ZMDPW1" | 0x03 | handle | "" | body...       (worker to broker)
//! FINAL:      "ZMDPW1" | 0x04 | handle | "" | body...
//! HEARTBEAT:  "ZMDPW1" | 0x05
//! DISCONNECT: "ZMDPW1" | 0x06
//! DRAIN:      "ZMDPW1" | 0x07   worker: send me nothing more; broker: done,
//!                               every request for you was sent before this
//! ```
//! Both zmesh protocols also carry a [`batch`] of their messages in one.

pub mod batch;
mod parse;

pub use parse::{
    BadItem, ClientMsg, ClientProto, Inbound, MdpError, WORKER_CREDIT_MAX, WorkerMsg,
    is_service_name, parse,
};

use bytes::Bytes;

/// 7/MDP client header.
pub const MDPC01: &[u8] = b"MDPC01";
/// 7/MDP worker header.
pub const MDPW01: &[u8] = b"MDPW01";
/// 18/MDP client header.
pub const MDPC02: &[u8] = b"MDPC02";
/// 18/MDP worker header.
pub const MDPW02: &[u8] = b"MDPW02";
/// zmesh client extension header.
pub const ZMDPC1: &[u8] = b"ZMDPC1";
/// zmesh worker extension header.
pub const ZMDPW1: &[u8] = b"ZMDPW1";

/// Worker protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerVersion {
    /// MDPW01.
    V1,
    /// MDPW02.
    V2,
    /// ZMDPW1: MDPW02's commands, a credit, DRAIN and BATCH.
    Zmesh,
}

/// Worker command codes per version.
pub mod cmd {
    /// v0.1 READY.
    pub const W1_READY: u8 = 0x01;
    /// v0.1 REQUEST.
    pub const W1_REQUEST: u8 = 0x02;
    /// v0.1 REPLY.
    pub const W1_REPLY: u8 = 0x03;
    /// v0.1 HEARTBEAT.
    pub const W1_HEARTBEAT: u8 = 0x04;
    /// v0.1 DISCONNECT.
    pub const W1_DISCONNECT: u8 = 0x05;
    /// v0.2 READY.
    pub const W2_READY: u8 = 0x01;
    /// v0.2 REQUEST.
    pub const W2_REQUEST: u8 = 0x02;
    /// v0.2 PARTIAL.
    pub const W2_PARTIAL: u8 = 0x03;
    /// v0.2 FINAL.
    pub const W2_FINAL: u8 = 0x04;
    /// v0.2 HEARTBEAT.
    pub const W2_HEARTBEAT: u8 = 0x05;
    /// v0.2 DISCONNECT.
    pub const W2_DISCONNECT: u8 = 0x06;
    /// v0.2 client REQUEST / PARTIAL / FINAL, and zmesh ERROR.
    pub const C2_REQUEST: u8 = 0x01;
    /// Partial reply.
    pub const C2_PARTIAL: u8 = 0x02;
    /// Final reply.
    pub const C2_FINAL: u8 = 0x03;
    /// zmesh client protocol: an error reply.
    pub const Z_ERROR: u8 = 0x04;
    /// zmesh worker protocol: stop sending work (worker), none follows (broker).
    pub const Z_DRAIN: u8 = 0x07;
    /// zmesh protocols: several messages in one (see [`super::batch`]).
    pub const BATCH: u8 = 0x10;
}

fn b(x: &'static [u8]) -> Bytes {
    Bytes::from_static(x)
}

/// The header frames of a worker message: `v1` is the 7/MDP command, `v2`
/// the 18/MDP one (which ZMDPW1 shares).
fn worker_command(v: WorkerVersion, v1: &'static [u8; 1], v2: &'static [u8; 1]) -> Vec<Bytes> {
    match v {
        WorkerVersion::V1 => vec![Bytes::new(), b(MDPW01), b(v1)],
        WorkerVersion::V2 => vec![b(MDPW02), b(v2)],
        WorkerVersion::Zmesh => vec![b(ZMDPW1), b(v2)],
    }
}

/// Frames (after the peer identity) of a REQUEST to a worker. `address` is the
/// broker's handle for the request, echoed back by the worker.
pub fn worker_request(v: WorkerVersion, address: Bytes, body: &[Bytes]) -> Vec<Bytes> {
    let mut f = worker_command(v, &[cmd::W1_REQUEST], &[cmd::W2_REQUEST]);
    f.push(address);
    f.push(Bytes::new());
    f.extend_from_slice(body);
    f
}

/// A HEARTBEAT to a worker.
pub fn worker_heartbeat(v: WorkerVersion) -> Vec<Bytes> {
    worker_command(v, &[cmd::W1_HEARTBEAT], &[cmd::W2_HEARTBEAT])
}

/// A DISCONNECT to a worker.
pub fn worker_disconnect(v: WorkerVersion) -> Vec<Bytes> {
    worker_command(v, &[cmd::W1_DISCONNECT], &[cmd::W2_DISCONNECT])
}

/// The broker's answer to a ZMDPW1 DRAIN: no request follows it.
pub fn worker_drained() -> Vec<Bytes> {
    vec![b(ZMDPW1), b(&[cmd::Z_DRAIN])]
}

/// What kind of reply goes to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// More follows (v0.2 and zmesh clients only).
    Partial,
    /// The answer.
    Final,
}

/// Frames of a reply to a client speaking `proto`.
pub fn client_reply(
    proto: &ClientProto,
    kind: ReplyKind,
    service: &Bytes,
    body: &[Bytes],
) -> Vec<Bytes> {
    let code = |k: ReplyKind| {
        Bytes::from_static(if k == ReplyKind::Partial {
            &[cmd::C2_PARTIAL]
        } else {
            &[cmd::C2_FINAL]
        })
    };
    let mut f = match proto {
        ClientProto::V1 => vec![Bytes::new(), b(MDPC01)],
        ClientProto::V2 => vec![b(MDPC02), code(kind)],
        ClientProto::Zmesh { request_id } => vec![b(ZMDPC1), code(kind), request_id.clone()],
    };
    f.push(service.clone());
    f.extend_from_slice(body);
    f
}

/// Frames of an error reply: zmesh clients get ERROR; MDP clients, which have
/// no error command, get a FINAL reply whose body is the status code and reason
/// (the convention MMI uses for its status replies).
pub fn client_error(proto: &ClientProto, service: &Bytes, code: &str, reason: &str) -> Vec<Bytes> {
    let body = [Bytes::from(code.to_owned()), Bytes::from(reason.to_owned())];
    match proto {
        ClientProto::Zmesh { request_id } => {
            let mut f = vec![
                b(ZMDPC1),
                Bytes::from_static(&[cmd::Z_ERROR]),
                request_id.clone(),
                service.clone(),
            ];
            f.extend(body);
            f
        }
        other => client_reply(other, ReplyKind::Final, service, &body),
    }
}

/// Status replies, as MMI uses them.
pub mod status {
    /// Found / OK.
    pub const OK: &str = "200";
    /// Bad request.
    pub const BAD_REQUEST: &str = "400";
    /// Not found.
    pub const NOT_FOUND: &str = "404";
    /// Over the rate limit.
    pub const TOO_MANY: &str = "429";
    /// Not implemented.
    pub const NOT_IMPLEMENTED: &str = "501";
    /// No worker, queue full, or the worker died.
    pub const UNAVAILABLE: &str = "503";
}
