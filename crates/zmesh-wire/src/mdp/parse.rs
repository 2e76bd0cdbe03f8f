//! Parsing what arrives on the broker's ROUTER (after the identity frame).

use bytes::Bytes;

use super::{MDPC01, MDPC02, MDPW01, MDPW02, WorkerVersion, ZMDPC1, ZMDPW1, batch, cmd};

/// Which client protocol a request came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientProto {
    /// 7/MDP.
    V1,
    /// 18/MDP.
    V2,
    /// zmesh extension, with the client's request id.
    Zmesh {
        /// Opaque id echoed in replies.
        request_id: Bytes,
    },
}

/// A client message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// A request for `service`.
    Request {
        /// Protocol (and request id).
        proto: ClientProto,
        /// Service name.
        service: Bytes,
        /// Body frames.
        body: Vec<Bytes>,
    },
}

/// A worker message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerMsg {
    /// Register for a service.
    Ready {
        /// Service name.
        service: Bytes,
        /// Requests it takes at once (1 for MDP workers).
        credit: u32,
    },
    /// A (partial or final) reply to the request the broker addressed as `address`.
    Reply {
        /// The broker's request handle, echoed.
        address: Bytes,
        /// True for v0.1 REPLY and v0.2 FINAL.
        last: bool,
        /// Body frames.
        body: Vec<Bytes>,
    },
    /// Liveness.
    Heartbeat,
    /// Leaving.
    Disconnect,
    /// ZMDPW1: send no more requests; the ones held will be answered.
    Drain,
}

/// A parsed broker input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// From a client.
    Client(ClientMsg),
    /// From a worker speaking `version`.
    Worker(WorkerVersion, WorkerMsg),
    /// A BATCH of zmesh client or worker messages, in order. Each item is
    /// parsed on its own, so one bad item does not cost the others.
    Batch(Vec<Result<Inbound, BadItem>>),
}

/// An item of a BATCH that is not a valid message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadItem {
    /// What is wrong with it.
    pub error: MdpError,
    /// The request id, when the item is a ZMDPC1 request: it gets an error reply.
    pub request_id: Option<Bytes>,
}

/// A message that is not valid MDP. The peer is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MdpError {
    /// No recognised protocol header.
    #[error("not an MDP message (unknown header)")]
    UnknownHeader,
    /// Too few frames for the command.
    #[error("{0}: too few frames")]
    Truncated(&'static str),
    /// An unknown command byte.
    #[error("unknown {0} command 0x{1:02x}")]
    UnknownCommand(&'static str, u8),
    /// The client address envelope is not followed by an empty frame.
    #[error("missing empty delimiter after the client address")]
    MissingDelimiter,
    /// A service name that is empty or not printable.
    #[error("invalid service name")]
    BadService,
    /// A ZMDPW1 READY whose credit is not 4 bytes within 1..=WORKER_CREDIT_MAX.
    #[error("worker credit must be 4 bytes within 1..={WORKER_CREDIT_MAX}")]
    BadCredit,
    /// A BATCH that does not split into whole messages.
    #[error("invalid BATCH: {0}")]
    BadBatch(&'static str),
}

/// Most requests one ZMDPW1 worker may hold at once.
pub const WORKER_CREDIT_MAX: u32 = 1024;

fn credit(f: Option<&Bytes>) -> Result<u32, MdpError> {
    let c = f
        .and_then(|f| <[u8; 4]>::try_from(f.as_ref()).ok())
        .map(u32::from_be_bytes)
        .ok_or(MdpError::BadCredit)?;
    if c == 0 || c > WORKER_CREDIT_MAX {
        return Err(MdpError::BadCredit);
    }
    Ok(c)
}

/// Longest service name accepted.
pub const SERVICE_NAME_MAX: usize = 255;

/// Whether `name` is a service name the broker accepts: 1 to 255 printable
/// ASCII characters, no spaces.
pub fn is_service_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= SERVICE_NAME_MAX
        && name.iter().all(|c| (0x21..0x7f).contains(c))
}

fn service(f: &Bytes) -> Result<Bytes, MdpError> {
    if !is_service_name(f) {
        return Err(MdpError::BadService);
    }
    Ok(f.clone())
}

fn command(f: Option<&Bytes>, what: &'static str) -> Result<u8, MdpError> {
    match f.map(|b| b.as_ref()) {
        Some([c]) => Ok(*c),
        Some(_) => Err(MdpError::UnknownCommand(what, 0xff)),
        None => Err(MdpError::Truncated(what)),
    }
}

/// Parse frames that followed the peer identity. The fuzzed entry point.
pub fn parse(frames: &[Bytes]) -> Result<Inbound, MdpError> {
    // v0.1 leads with an empty frame; v0.2 and ZMDPC1 do not.
    let (v1, rest) = match frames.split_first() {
        Some((first, rest)) if first.is_empty() => (true, rest),
        Some(_) => (false, frames),
        None => return Err(MdpError::Truncated("message")),
    };
    let (header, rest) = rest.split_first().ok_or(MdpError::Truncated("header"))?;
    let zmesh = header.as_ref() == ZMDPC1 || header.as_ref() == ZMDPW1;
    if !v1 && zmesh && batch::is_batch(frames) {
        let items = batch::split(frames)?;
        return Ok(Inbound::Batch(
            items
                .iter()
                .map(|m| {
                    parse(m).map_err(|error| BadItem {
                        error,
                        request_id: match m.as_slice() {
                            [h, c, rid, ..]
                                if h.as_ref() == ZMDPC1 && c.as_ref() == [cmd::C2_REQUEST] =>
                            {
                                Some(rid.clone())
                            }
                            _ => None,
                        },
                    })
                })
                .collect(),
        ));
    }
    match (v1, header.as_ref()) {
        (true, h) if h == MDPC01 => {
            let (svc, body) = rest
                .split_first()
                .ok_or(MdpError::Truncated("MDPC01 request"))?;
            Ok(Inbound::Client(ClientMsg::Request {
                proto: ClientProto::V1,
                service: service(svc)?,
                body: body.to_vec(),
            }))
        }
        (false, h) if h == MDPC02 => {
            if command(rest.first(), "MDPC02")? != cmd::C2_REQUEST {
                return Err(MdpError::UnknownCommand("MDPC02", rest[0][0]));
            }
            let (svc, body) = rest[1..]
                .split_first()
                .ok_or(MdpError::Truncated("MDPC02 request"))?;
            Ok(Inbound::Client(ClientMsg::Request {
                proto: ClientProto::V2,
                service: service(svc)?,
                body: body.to_vec(),
            }))
        }
        (false, h) if h == ZMDPC1 => {
            if command(rest.first(), "ZMDPC1")? != cmd::C2_REQUEST {
                return Err(MdpError::UnknownCommand("ZMDPC1", rest[0][0]));
            }
            let [_, rid, svc, body @ ..] = rest else {
                return Err(MdpError::Truncated("ZMDPC1 request"));
            };
            Ok(Inbound::Client(ClientMsg::Request {
                proto: ClientProto::Zmesh {
                    request_id: rid.clone(),
                },
                service: service(svc)?,
                body: body.to_vec(),
            }))
        }
        (true, h) if h == MDPW01 => worker(WorkerVersion::V1, rest),
        (false, h) if h == MDPW02 => worker(WorkerVersion::V2, rest),
        (false, h) if h == ZMDPW1 => worker(WorkerVersion::Zmesh, rest),
        _ => Err(MdpError::UnknownHeader),
    }
}

fn worker(v: WorkerVersion, rest: &[Bytes]) -> Result<Inbound, MdpError> {
    let what = match v {
        WorkerVersion::V1 => "MDPW01",
        WorkerVersion::V2 => "MDPW02",
        WorkerVersion::Zmesh => "ZMDPW1",
    };
    let c = command(rest.first(), what)?;
    let args = &rest[1..];
    let reply = |last: bool| -> Result<WorkerMsg, MdpError> {
        let [address, delim, body @ ..] = args else {
            return Err(MdpError::Truncated("worker reply"));
        };
        if !delim.is_empty() {
            return Err(MdpError::MissingDelimiter);
        }
        Ok(WorkerMsg::Reply {
            address: address.clone(),
            last,
            body: body.to_vec(),
        })
    };
    use WorkerVersion::{V1, V2, Zmesh};
    let msg = match (v, c) {
        (V1, cmd::W1_READY) | (V2, cmd::W2_READY) | (Zmesh, cmd::W2_READY) => WorkerMsg::Ready {
            service: service(args.first().ok_or(MdpError::Truncated("READY"))?)?,
            credit: if v == Zmesh { credit(args.get(1))? } else { 1 },
        },
        (V1, cmd::W1_REPLY) | (V2 | Zmesh, cmd::W2_FINAL) => reply(true)?,
        (V2 | Zmesh, cmd::W2_PARTIAL) => reply(false)?,
        (V1, cmd::W1_HEARTBEAT) | (V2 | Zmesh, cmd::W2_HEARTBEAT) => WorkerMsg::Heartbeat,
        (V1, cmd::W1_DISCONNECT) | (V2 | Zmesh, cmd::W2_DISCONNECT) => WorkerMsg::Disconnect,
        (Zmesh, cmd::Z_DRAIN) => WorkerMsg::Drain,
        (_, other) => return Err(MdpError::UnknownCommand(what, other)),
    };
    Ok(Inbound::Worker(v, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn parses_each_protocol() {
        assert_eq!(
            parse(&f(&[b"", b"MDPC01", b"echo", b"hi"])).unwrap(),
            Inbound::Client(ClientMsg::Request {
                proto: ClientProto::V1,
                service: "echo".into(),
                body: f(&[b"hi"])
            })
        );
        assert!(matches!(
            parse(&f(&[b"MDPC02", b"\x01", b"echo"])).unwrap(),
            Inbound::Client(ClientMsg::Request {
                proto: ClientProto::V2,
                ..
            })
        ));
        assert!(matches!(
            parse(&f(&[b"ZMDPC1", b"\x01", b"12345678", b"echo", b"x"])).unwrap(),
            Inbound::Client(ClientMsg::Request {
                proto: ClientProto::Zmesh { .. },
                ..
            })
        ));
        assert_eq!(
            parse(&f(&[b"", b"MDPW01", b"\x01", b"echo"])).unwrap(),
            Inbound::Worker(
                WorkerVersion::V1,
                WorkerMsg::Ready {
                    service: "echo".into(),
                    credit: 1
                }
            )
        );
        assert_eq!(
            parse(&f(&[b"MDPW02", b"\x03", b"h1", b"", b"part"])).unwrap(),
            Inbound::Worker(
                WorkerVersion::V2,
                WorkerMsg::Reply {
                    address: "h1".into(),
                    last: false,
                    body: f(&[b"part"])
                }
            )
        );
        assert_eq!(
            parse(&f(&[b"", b"MDPW01", b"\x04"])).unwrap(),
            Inbound::Worker(WorkerVersion::V1, WorkerMsg::Heartbeat)
        );
    }

    #[test]
    fn parses_the_zmesh_worker_protocol_and_batches() {
        assert_eq!(
            parse(&f(&[b"ZMDPW1", b"\x01", b"echo", b"\0\0\0\x08"])).unwrap(),
            Inbound::Worker(
                WorkerVersion::Zmesh,
                WorkerMsg::Ready {
                    service: "echo".into(),
                    credit: 8
                }
            )
        );
        for bad in [&b"\0\0\0\0"[..], b"\0\0\x04\x01", b"\x08"] {
            assert_eq!(
                parse(&f(&[b"ZMDPW1", b"\x01", b"echo", bad])),
                Err(MdpError::BadCredit)
            );
        }
        let items = [
            f(&[b"ZMDPW1", b"\x04", b"h1", b"", b"a"]),
            f(&[b"ZMDPW1", b"\x07"]),
        ];
        assert_eq!(
            parse(&batch::join(&items)).unwrap(),
            Inbound::Batch(vec![
                Ok(Inbound::Worker(
                    WorkerVersion::Zmesh,
                    WorkerMsg::Reply {
                        address: "h1".into(),
                        last: true,
                        body: f(&[b"a"])
                    }
                )),
                Ok(Inbound::Worker(WorkerVersion::Zmesh, WorkerMsg::Drain)),
            ])
        );
        // One bad item costs only itself; a request keeps its id for the error reply.
        let mixed = [
            f(&[b"ZMDPC1", b"\x01", b"12345678", b"echo"]),
            f(&[b"ZMDPC1", b"\x01", b"abcdefgh", b"bad name"]),
        ];
        let Ok(Inbound::Batch(items)) = parse(&batch::join(&mixed)) else {
            panic!("a batch");
        };
        assert!(items[0].is_ok());
        assert_eq!(
            items[1],
            Err(BadItem {
                error: MdpError::BadService,
                request_id: Some("abcdefgh".into())
            })
        );
        // 7/MDP has no batches.
        assert_eq!(
            parse(&f(&[b"", b"MDPW01", b"\x10"])),
            Err(MdpError::UnknownCommand("MDPW01", 0x10))
        );
    }

    #[test]
    fn rejects_malformed_input_with_a_reason() {
        assert_eq!(parse(&[]), Err(MdpError::Truncated("message")));
        assert_eq!(parse(&f(&[b"HTTP/1.1"])), Err(MdpError::UnknownHeader));
        assert_eq!(
            parse(&f(&[b"", b"MDPC01"])),
            Err(MdpError::Truncated("MDPC01 request"))
        );
        assert_eq!(
            parse(&f(&[b"", b"MDPC01", b"bad name"])),
            Err(MdpError::BadService)
        );
        assert_eq!(
            parse(&f(&[b"", b"MDPW01", b"\x09"])),
            Err(MdpError::UnknownCommand("MDPW01", 9))
        );
        assert_eq!(
            parse(&f(&[b"", b"MDPW01", b"\x03", b"addr", b"x", b"body"])),
            Err(MdpError::MissingDelimiter)
        );
        // v0.2 headers after an empty frame are not v0.1: refused.
        assert_eq!(
            parse(&f(&[b"", b"MDPC02", b"\x01", b"s"])),
            Err(MdpError::UnknownHeader)
        );
    }
}
