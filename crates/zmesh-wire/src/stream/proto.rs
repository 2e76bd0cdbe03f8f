//! The ZMST01 wire protocol (docs/protocol/streams.md), frames after the
//! ROUTER identity; every message starts with `""` and `"ZMST01"`.

use bytes::Bytes;

use super::options::StreamOptions;
use super::subject::{Filter, check_subject};
use crate::queue::options::check_name_of;
pub use crate::queue::proto::ProtoError;

/// Protocol name, the second frame of every message.
pub const PROTOCOL: &[u8] = b"ZMST01";

/// Credit one subscription may hold.
pub const CREDIT_MAX: u32 = 100_000;

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest message kept.
    First,
    /// Only messages published from now on.
    New,
    /// From this sequence number.
    Seq(u64),
    /// From the first message stored at or after this time (ms since the epoch).
    Time(u64),
}

impl Start {
    /// Parse `first`, `new`, `seq:N` or `time:MS`.
    pub fn parse(s: &str) -> Result<Start, String> {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("start {s:?}: bad number"))
        };
        Ok(match s.split_once(':') {
            None if s == "first" => Start::First,
            None if s == "new" => Start::New,
            Some(("seq", n)) => Start::Seq(num(n)?),
            Some(("time", t)) => Start::Time(num(t)?),
            _ => {
                return Err(format!(
                    "start {s:?}: expected first, new, seq:N or time:MS"
                ));
            }
        })
    }
}

/// A client's request.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Create a stream (or accept an existing one).
    Create {
        /// Correlation id.
        corr: Bytes,
        /// Stream name.
        stream: String,
        /// Options, if given.
        options: Option<StreamOptions>,
    },
    /// Delete a stream and its messages.
    Delete {
        /// Correlation id.
        corr: Bytes,
        /// Stream name.
        stream: String,
    },
    /// Stream counters.
    Info {
        /// Correlation id.
        corr: Bytes,
        /// One stream or all.
        stream: Option<String>,
    },
    /// Append a message; STORED once durable.
    Publish {
        /// Correlation id.
        corr: Bytes,
        /// Stream.
        stream: String,
        /// Subject.
        subject: Bytes,
        /// Body.
        body: Bytes,
        /// The producer's id for deduplication, 0-255 bytes (empty: none).
        msg_id: Bytes,
    },
    /// Start a subscription.
    Subscribe {
        /// Correlation id.
        corr: Bytes,
        /// Stream.
        stream: String,
        /// The client's name for it (unique per connection).
        sub: Bytes,
        /// Which subjects.
        filter: Filter,
        /// Where to start (ignored when a durable subscription exists).
        start: Start,
        /// Messages the broker may send before more credit.
        credit: u32,
        /// Durable name: the broker keeps its acknowledged position.
        durable: Option<String>,
    },
    /// More credit.
    Credit {
        /// Subscription.
        sub: Bytes,
        /// Messages.
        credit: u32,
    },
    /// Everything up to `seq` is processed (durable subscriptions).
    Ack {
        /// Subscription.
        sub: Bytes,
        /// Sequence number.
        seq: u64,
    },
    /// End a subscription.
    Unsubscribe {
        /// Correlation id.
        corr: Bytes,
        /// Subscription.
        sub: Bytes,
    },
    /// The last message of every subject matching `filter`.
    Snapshot {
        /// Correlation id.
        corr: Bytes,
        /// Stream.
        stream: String,
        /// Which subjects.
        filter: Filter,
    },
    /// The client is alive.
    Heartbeat,
    /// The client leaves.
    Disconnect,
}

fn text(f: &Bytes) -> Result<&str, String> {
    std::str::from_utf8(f).map_err(|_| "a text frame is not UTF-8".to_owned())
}

fn num<T: std::str::FromStr>(f: &Bytes, what: &str) -> Result<T, String> {
    text(f)?.parse().map_err(|_| {
        format!(
            "{what} {:?} is not a decimal number",
            String::from_utf8_lossy(f)
        )
    })
}

fn stream_name(f: &Bytes) -> Result<String, String> {
    let n = text(f)?;
    check_name_of("stream", n)?;
    Ok(n.to_owned())
}

fn credit(f: &Bytes) -> Result<u32, String> {
    let c: u32 = num(f, "credit")?;
    if c == 0 || c > CREDIT_MAX {
        return Err(format!("credit must be 1 to {CREDIT_MAX}"));
    }
    Ok(c)
}

/// True when `frames` (after the identity) are meant for this protocol.
pub fn is_stream_message(frames: &[Bytes]) -> bool {
    frames.len() >= 2 && frames[0].is_empty() && frames[1] == PROTOCOL
}

/// Parse a client message (frames after the identity).
pub fn parse(frames: &[Bytes]) -> Result<Command, ProtoError> {
    if !is_stream_message(frames) || frames.len() < 3 {
        return Err(ProtoError {
            corr: None,
            reason: "not a ZMST01 command".into(),
        });
    }
    let (cmd, args) = (&frames[2][..], &frames[3..]);
    let with_corr = !matches!(cmd, b"CREDIT" | b"ACK" | b"HEARTBEAT" | b"DISCONNECT");
    let corr = if with_corr {
        args.first().cloned()
    } else {
        None
    };
    let fail = |reason: String| ProtoError {
        corr: corr.clone(),
        reason,
    };
    let arity = |lo: usize, hi: usize| -> Result<(), ProtoError> {
        if (lo..=hi).contains(&args.len()) {
            Ok(())
        } else {
            Err(fail(format!(
                "{} takes {lo} to {hi} frames after the command, got {}",
                String::from_utf8_lossy(cmd),
                args.len()
            )))
        }
    };
    Ok(match cmd {
        b"CREATE" => {
            arity(2, 3)?;
            let options = match args.get(2) {
                Some(o) if !o.is_empty() => {
                    let o: StreamOptions =
                        serde_json::from_slice(o).map_err(|e| fail(format!("options: {e}")))?;
                    o.validate().map_err(|e| fail(format!("options: {e}")))?;
                    Some(o)
                }
                _ => None,
            };
            Command::Create {
                corr: args[0].clone(),
                stream: stream_name(&args[1]).map_err(fail)?,
                options,
            }
        }
        b"DELETE" => {
            arity(2, 2)?;
            Command::Delete {
                corr: args[0].clone(),
                stream: stream_name(&args[1]).map_err(fail)?,
            }
        }
        b"INFO" => {
            arity(1, 2)?;
            Command::Info {
                corr: args[0].clone(),
                stream: match args.get(1) {
                    Some(s) if !s.is_empty() => Some(stream_name(s).map_err(fail)?),
                    _ => None,
                },
            }
        }
        b"PUBLISH" => {
            arity(4, 5)?;
            check_subject(text(&args[2]).map_err(fail)?).map_err(fail)?;
            let msg_id = args.get(4).cloned().unwrap_or_default();
            if msg_id.len() > 255 {
                return Err(fail("msg_id must be at most 255 bytes".into()));
            }
            Command::Publish {
                corr: args[0].clone(),
                stream: stream_name(&args[1]).map_err(fail)?,
                subject: args[2].clone(),
                body: args[3].clone(),
                msg_id,
            }
        }
        b"SUBSCRIBE" => {
            arity(6, 7)?;
            if args[2].is_empty() || args[2].len() > 255 {
                return Err(fail("subscription id must be 1-255 bytes".into()));
            }
            let durable = match args.get(6) {
                Some(d) if !d.is_empty() => {
                    let d = text(d).map_err(fail)?;
                    check_name_of("durable", d).map_err(fail)?;
                    Some(d.to_owned())
                }
                _ => None,
            };
            Command::Subscribe {
                corr: args[0].clone(),
                stream: stream_name(&args[1]).map_err(fail)?,
                sub: args[2].clone(),
                filter: Filter::parse(text(&args[3]).map_err(fail)?).map_err(fail)?,
                start: Start::parse(text(&args[4]).map_err(fail)?).map_err(fail)?,
                credit: credit(&args[5]).map_err(fail)?,
                durable,
            }
        }
        b"CREDIT" => {
            arity(2, 2)?;
            Command::Credit {
                sub: args[0].clone(),
                credit: credit(&args[1]).map_err(fail)?,
            }
        }
        b"ACK" => {
            arity(2, 2)?;
            Command::Ack {
                sub: args[0].clone(),
                seq: num(&args[1], "seq").map_err(fail)?,
            }
        }
        b"UNSUBSCRIBE" => {
            arity(2, 2)?;
            Command::Unsubscribe {
                corr: args[0].clone(),
                sub: args[1].clone(),
            }
        }
        b"SNAPSHOT" => {
            arity(3, 3)?;
            Command::Snapshot {
                corr: args[0].clone(),
                stream: stream_name(&args[1]).map_err(fail)?,
                filter: Filter::parse(text(&args[2]).map_err(fail)?).map_err(fail)?,
            }
        }
        b"HEARTBEAT" => Command::Heartbeat,
        b"DISCONNECT" => Command::Disconnect,
        other => {
            return Err(ProtoError {
                corr: None,
                reason: format!("unknown command {:?}", String::from_utf8_lossy(other)),
            });
        }
    })
}

/// A message of the stream protocol: the empty delimiter, ZMST01, `cmd`.
pub fn head(cmd: &'static [u8]) -> Vec<Bytes> {
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

/// `STORED corr seq`.
pub fn stored(corr: &Bytes, seq: u64) -> Vec<Bytes> {
    let mut f = head(b"STORED");
    f.push(corr.clone());
    f.push(Bytes::from(seq.to_string()));
    f
}

/// Error codes, shared with the queue protocol.
pub use crate::status as code;

/// `ERROR corr code reason` (codes in [`code`]).
pub fn error(corr: &Bytes, code: u16, reason: &str) -> Vec<Bytes> {
    crate::queue::proto::error(corr, code, reason)
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            if i == 1 {
                Bytes::from_static(PROTOCOL)
            } else {
                f
            }
        })
        .collect()
}

/// `MSG sub seq dseq time_ms subject body`: `dseq` counts this subscription's
/// deliveries 1, 2, 3… without gaps, so a client can see a loss.
pub fn msg(
    sub: &Bytes,
    seq: u64,
    dseq: u64,
    time_ms: u64,
    subject: &Bytes,
    body: &Bytes,
) -> Vec<Bytes> {
    let mut f = head(b"MSG");
    f.push(sub.clone());
    f.push(Bytes::from(seq.to_string()));
    f.push(Bytes::from(dseq.to_string()));
    f.push(Bytes::from(time_ms.to_string()));
    f.push(subject.clone());
    f.push(body.clone());
    f
}

/// `HEARTBEAT`.
pub fn heartbeat() -> Vec<Bytes> {
    head(b"HEARTBEAT")
}
