//! The ZMQU01 wire protocol (docs/protocol/queues.md), frames after the
//! ROUTER identity. Every message starts with an empty frame and the
//! protocol name, as 7/MDP's do, so DEALER and REQ clients both work.

use bytes::Bytes;

use super::options::{QueueOptions, check_name};

/// Protocol name, the second frame of every message.
pub const PROTOCOL: &[u8] = b"ZMQU01";

/// Tags (message offsets) one ACK or NACK may carry.
pub const TAGS_MAX: usize = 10_000;

/// Messages one BATCH may carry.
pub const BATCH_MAX: usize = 10_000;

/// Prefetch a consumer may ask for.
pub const PREFETCH_MAX: u32 = 100_000;

/// A client's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create a queue, or check an existing one's options.
    Declare {
        /// Correlation id echoed in the reply.
        corr: Bytes,
        /// Queue name.
        queue: String,
        /// Options, if given.
        options: Option<QueueOptions>,
    },
    /// Remove a queue and its messages.
    Delete {
        /// Correlation id.
        corr: Bytes,
        /// Queue name.
        queue: String,
    },
    /// Drop every ready message.
    Purge {
        /// Correlation id.
        corr: Bytes,
        /// Queue name.
        queue: String,
    },
    /// Store a message; CONFIRM once it is durable.
    Publish {
        /// Correlation id.
        corr: Bytes,
        /// Queue name.
        queue: String,
        /// Producer message id for deduplication; empty for none.
        msg_id: Bytes,
        /// Body.
        body: Bytes,
    },
    /// Store many messages; one CONFIRMED reply with a status per message.
    Batch {
        /// Correlation id.
        corr: Bytes,
        /// Queue name.
        queue: String,
        /// (message id, body) pairs.
        items: Vec<(Bytes, Bytes)>,
    },
    /// Start (or re-state) consuming with at most `prefetch` unacknowledged.
    Consume {
        /// Correlation id.
        corr: Bytes,
        /// Queue name.
        queue: String,
        /// Credit window.
        prefetch: u32,
    },
    /// Stop consuming; unacknowledged messages go back to the queue, or with
    /// `keep` stay held until acked by tag (from any connection) or timed out.
    Cancel {
        /// Correlation id.
        corr: Bytes,
        /// Queue name.
        queue: String,
        /// Leave unacknowledged messages held.
        keep: bool,
    },
    /// Messages processed.
    Ack {
        /// Queue name.
        queue: String,
        /// Delivery tags.
        tags: Vec<u64>,
    },
    /// Messages not processed: back to the queue, or to the dead letters.
    Nack {
        /// Queue name.
        queue: String,
        /// Back to the queue (`true`) or dead-lettered (`false`).
        requeue: bool,
        /// Delivery tags.
        tags: Vec<u64>,
    },
    /// Counters of one queue or all.
    Stats {
        /// Correlation id.
        corr: Bytes,
        /// Queue name, or every queue.
        queue: Option<String>,
    },
    /// Where clients reach each node of the broker's cluster.
    Nodes {
        /// Correlation id.
        corr: Bytes,
    },
    /// The client is alive.
    Heartbeat,
    /// The client leaves: its consumers are cancelled.
    Disconnect,
}

/// Why a message was not understood, with the correlation id when it had one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoError {
    /// Correlation id, to address an ERROR reply.
    pub corr: Option<Bytes>,
    /// What is wrong.
    pub reason: String,
}

fn text(f: &Bytes, what: &str) -> Result<String, String> {
    std::str::from_utf8(f)
        .map(str::to_owned)
        .map_err(|_| format!("{what} is not UTF-8"))
}

fn name(f: &Bytes) -> Result<String, String> {
    let n = text(f, "queue name")?;
    check_name(&n)?;
    Ok(n)
}

fn number<T: std::str::FromStr>(f: &Bytes, what: &str) -> Result<T, String> {
    std::str::from_utf8(f)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "{what} {:?} is not a decimal number",
                String::from_utf8_lossy(f)
            )
        })
}

fn tags(frames: &[Bytes]) -> Result<Vec<u64>, String> {
    if frames.is_empty() || frames.len() > TAGS_MAX {
        return Err(format!("expected 1 to {TAGS_MAX} tags"));
    }
    frames.iter().map(|f| number(f, "tag")).collect()
}

/// True when `frames` (after the identity) are meant for this protocol.
pub fn is_queue_message(frames: &[Bytes]) -> bool {
    frames.len() >= 2 && frames[0].is_empty() && frames[1] == PROTOCOL
}

/// Parse a client message (frames after the identity).
pub fn parse(frames: &[Bytes]) -> Result<Command, ProtoError> {
    let bad = |corr: Option<&Bytes>, reason: String| ProtoError {
        corr: corr.cloned(),
        reason,
    };
    if !is_queue_message(frames) {
        return Err(bad(None, "not a ZMQU01 message".into()));
    }
    let Some(cmd) = frames.get(2) else {
        return Err(bad(None, "no command frame".into()));
    };
    let args = &frames[3..];
    let corr = args.first();
    let want = |n: usize| -> Result<(), ProtoError> {
        if args.len() == n {
            Ok(())
        } else {
            Err(bad(
                corr,
                format!(
                    "{} takes {n} frames after the command, got {}",
                    String::from_utf8_lossy(cmd),
                    args.len()
                ),
            ))
        }
    };
    let e = |r: String| bad(corr, r);
    Ok(match &cmd[..] {
        b"DECLARE" => {
            if !(2..=3).contains(&args.len()) {
                want(3)?;
            }
            let options = match args.get(2) {
                Some(o) if !o.is_empty() => Some(
                    serde_json::from_slice::<QueueOptions>(o)
                        .map_err(|err| e(format!("options: {err}")))?,
                ),
                _ => None,
            };
            if let Some(o) = &options {
                o.validate().map_err(|r| e(format!("options: {r}")))?;
            }
            Command::Declare {
                corr: args[0].clone(),
                queue: name(&args[1]).map_err(e)?,
                options,
            }
        }
        b"CANCEL" => {
            let keep = match args.get(2).map(|k| &k[..]) {
                None => false,
                Some(b"keep") => true,
                Some(_) => return Err(e("CANCEL's third frame may only be \"keep\"".into())),
            };
            if !(2..=3).contains(&args.len()) {
                want(2)?;
            }
            Command::Cancel {
                corr: args[0].clone(),
                queue: name(&args[1]).map_err(e)?,
                keep,
            }
        }
        b"DELETE" | b"PURGE" => {
            want(2)?;
            let (corr, queue) = (args[0].clone(), name(&args[1]).map_err(e)?);
            if &cmd[..] == b"DELETE" {
                Command::Delete { corr, queue }
            } else {
                Command::Purge { corr, queue }
            }
        }
        b"PUBLISH" => {
            want(4)?;
            if args[2].len() > 255 {
                return Err(e("message id longer than 255 bytes".into()));
            }
            Command::Publish {
                corr: args[0].clone(),
                queue: name(&args[1]).map_err(e)?,
                msg_id: args[2].clone(),
                body: args[3].clone(),
            }
        }
        b"BATCH" => {
            if args.len() < 4 || !args.len().is_multiple_of(2) {
                return Err(e(
                    "BATCH takes corr, queue, then message id and body pairs".into()
                ));
            }
            if (args.len() - 2) / 2 > BATCH_MAX {
                return Err(e(format!("BATCH holds at most {BATCH_MAX} messages")));
            }
            let items: Vec<(Bytes, Bytes)> = args[2..]
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            if items.iter().any(|(id, _)| id.len() > 255) {
                return Err(e("message id longer than 255 bytes".into()));
            }
            Command::Batch {
                corr: args[0].clone(),
                queue: name(&args[1]).map_err(e)?,
                items,
            }
        }
        b"CONSUME" => {
            want(3)?;
            let prefetch: u32 = number(&args[2], "prefetch").map_err(e)?;
            if prefetch == 0 || prefetch > PREFETCH_MAX {
                return Err(e(format!("prefetch must be 1 to {PREFETCH_MAX}")));
            }
            Command::Consume {
                corr: args[0].clone(),
                queue: name(&args[1]).map_err(e)?,
                prefetch,
            }
        }
        b"ACK" | b"REJECT" => {
            // ACK and REJECT carry no correlation id: errors go unanswered.
            let queue = name(args.first().ok_or_else(|| bad(None, "no queue".into()))?)
                .map_err(|r| bad(None, r))?;
            let tags = tags(&args[1..]).map_err(|r| bad(None, r))?;
            if &cmd[..] == b"ACK" {
                Command::Ack { queue, tags }
            } else {
                Command::Nack {
                    queue,
                    requeue: false,
                    tags,
                }
            }
        }
        b"NACK" => {
            if args.len() < 3 {
                return Err(bad(None, "NACK takes queue, requeue and tags".into()));
            }
            let requeue = match &args[1][..] {
                b"1" => true,
                b"0" => false,
                _ => return Err(bad(None, "NACK requeue must be 0 or 1".into())),
            };
            Command::Nack {
                queue: name(&args[0]).map_err(|r| bad(None, r))?,
                requeue,
                tags: tags(&args[2..]).map_err(|r| bad(None, r))?,
            }
        }
        b"STATS" => {
            if !(1..=2).contains(&args.len()) {
                want(2)?;
            }
            Command::Stats {
                corr: args[0].clone(),
                queue: match args.get(1) {
                    Some(q) if !q.is_empty() => Some(name(q).map_err(e)?),
                    _ => None,
                },
            }
        }
        b"NODES" => {
            want(1)?;
            Command::Nodes {
                corr: args[0].clone(),
            }
        }
        b"HEARTBEAT" => Command::Heartbeat,
        b"DISCONNECT" => Command::Disconnect,
        other => {
            return Err(bad(
                None,
                format!("unknown command {:?}", String::from_utf8_lossy(other)),
            ));
        }
    })
}

fn head(cmd: &'static [u8]) -> Vec<Bytes> {
    vec![
        Bytes::new(),
        Bytes::from_static(PROTOCOL),
        Bytes::from_static(cmd),
    ]
}

/// `OK corr [json]`.
pub fn ok(corr: &Bytes, body: Option<Bytes>) -> Vec<Bytes> {
    let mut f = head(b"OK");
    f.push(corr.clone());
    f.extend(body);
    f
}

/// `CONFIRM corr tag [duplicate]`.
pub fn confirm(corr: &Bytes, tag: u64, duplicate: bool) -> Vec<Bytes> {
    let mut f = head(b"CONFIRM");
    f.push(corr.clone());
    f.push(Bytes::from(tag.to_string()));
    if duplicate {
        f.push(Bytes::from_static(b"duplicate"));
    }
    f
}

/// `CONFIRMED corr status...`: one status frame per message of a BATCH.
pub fn confirmed(corr: &Bytes, statuses: impl Iterator<Item = Bytes>) -> Vec<Bytes> {
    let mut f = head(b"CONFIRMED");
    f.push(corr.clone());
    f.extend(statuses);
    f
}

/// A BATCH status: `c<tag>` stored, `d<tag>` a duplicate of the stored `tag`.
pub fn batch_stored(tag: u64, duplicate: bool) -> Bytes {
    Bytes::from(format!("{}{tag}", if duplicate { 'd' } else { 'c' }))
}

/// A BATCH status: `e<code> <reason>` refused.
pub fn batch_refused(code: u16, reason: &str) -> Bytes {
    Bytes::from(format!("e{code} {reason}"))
}

/// `ERROR corr code text`.
pub fn error(corr: &Bytes, code: u16, reason: &str) -> Vec<Bytes> {
    let mut f = head(b"ERROR");
    f.push(corr.clone());
    f.push(Bytes::from(code.to_string()));
    f.push(Bytes::from(reason.to_owned()));
    f
}

/// `ERROR corr 421 reason [endpoint]`: another node serves the request;
/// `endpoint` is where clients reach it, when known.
pub fn misdirected(corr: &Bytes, reason: &str, endpoint: Option<&str>) -> Vec<Bytes> {
    let mut f = error(corr, crate::status::MISDIRECTED, reason);
    f.extend(endpoint.map(|e| Bytes::from(e.to_owned())));
    f
}

/// `DELIVER queue tag deliveries msg_id body`.
pub fn deliver(queue: &str, tag: u64, deliveries: u32, msg_id: &Bytes, body: &Bytes) -> Vec<Bytes> {
    let mut f = deliver_head(queue, tag, deliveries, msg_id);
    f.push(body.clone());
    f
}

/// `DELIVER` without its last frame, the body (for a body read back from disk).
pub fn deliver_head(queue: &str, tag: u64, deliveries: u32, msg_id: &Bytes) -> Vec<Bytes> {
    let mut f = head(b"DELIVER");
    f.push(Bytes::from(queue.to_owned()));
    f.push(Bytes::from(tag.to_string()));
    f.push(Bytes::from(deliveries.to_string()));
    f.push(msg_id.clone());
    f
}

/// `HEARTBEAT`.
pub fn heartbeat() -> Vec<Bytes> {
    head(b"HEARTBEAT")
}

/// Error codes, shared with the stream protocol.
pub use crate::status as code;

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(parts: &[&[u8]]) -> Vec<Bytes> {
        let mut f = vec![Bytes::new(), Bytes::from_static(PROTOCOL)];
        f.extend(parts.iter().map(|p| Bytes::copy_from_slice(p)));
        f
    }

    #[test]
    fn parses_each_command() {
        assert!(matches!(
            parse(&msg(&[b"PUBLISH", b"1", b"jobs", b"", b"x"])),
            Ok(Command::Publish { .. })
        ));
        assert_eq!(
            parse(&msg(&[b"ACK", b"jobs", b"1", b"2"])),
            Ok(Command::Ack {
                queue: "jobs".into(),
                tags: vec![1, 2]
            })
        );
        assert!(matches!(
            parse(&msg(&[b"DECLARE", b"c", b"jobs", br#"{"max_length":5}"#])),
            Ok(Command::Declare {
                options: Some(_),
                ..
            })
        ));
        assert!(matches!(
            parse(&msg(&[b"NACK", b"jobs", b"0", b"7"])),
            Ok(Command::Nack { requeue: false, .. })
        ));
        assert_eq!(
            parse(&msg(&[b"NODES", b"n1"])),
            Ok(Command::Nodes {
                corr: Bytes::from_static(b"n1")
            })
        );
        let e = parse(&msg(&[b"NODES", b"n2", b"extra"])).unwrap_err();
        assert_eq!(e.corr.as_deref(), Some(&b"n2"[..]));
    }

    #[test]
    fn errors_keep_the_correlation_id_and_say_why() {
        let e = parse(&msg(&[b"DECLARE", b"c9", b"jobs", br#"{"max_lenght":5}"#])).unwrap_err();
        assert_eq!(e.corr.as_deref(), Some(&b"c9"[..]));
        assert!(e.reason.contains("max_lenght"), "{}", e.reason);
        let e = parse(&msg(&[b"CONSUME", b"c", b"jobs", b"0"])).unwrap_err();
        assert!(e.reason.contains("prefetch"));
        let e = parse(&msg(&[b"PUBLISH", b"c", b"bad name!", b"", b"x"])).unwrap_err();
        assert!(e.reason.contains("queue name"));
        assert!(parse(&msg(&[b"ACK", b"jobs", b"x1"])).is_err());
        assert!(parse(&msg(&[b"FROB"])).is_err());
    }
}
