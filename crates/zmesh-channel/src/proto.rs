//! The ZMCH01 wire format (docs/protocol/channel.md): frames after the ROUTER
//! identity, each message starting with `""` and `"ZMCH01"`.
//!
//! ```text
//! sender → receiver   HELLO channel              (after (re)connecting)
//!                     DATA  channel seq crc body (seq: the outbox offset;
//!                                                 crc: CRC-32C of seq and body)
//!                     PING  channel              (when idle)
//! receiver → sender   ACK   channel committed received window
//! ```
//! `committed`: every seq below it is processed by the application (the
//! sender may forget them); `received`: every seq below it has arrived (the
//! sender resends from here after a timeout); `window`: how many messages
//! past `received` the receiver accepts.

use bytes::Bytes;

/// Protocol name, the second frame of every message.
pub const PROTOCOL: &[u8] = b"ZMCH01";

/// Longest channel name (it names the receiver's state file, in hex).
pub const CHANNEL_NAME_MAX: usize = 100;

/// A message of the channel protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The sender (re)connected; the receiver answers with ACK.
    Hello {
        /// Channel name.
        channel: Bytes,
    },
    /// One message.
    Data {
        /// Channel name.
        channel: Bytes,
        /// Sequence number.
        seq: u64,
        /// Body.
        body: Bytes,
    },
    /// Are you there? (answered with ACK)
    Ping {
        /// Channel name.
        channel: Bytes,
    },
    /// Cumulative acknowledgement and flow control.
    Ack {
        /// Channel name.
        channel: Bytes,
        /// Processed below this.
        committed: u64,
        /// Arrived below this.
        received: u64,
        /// Accepted beyond `received`.
        window: u64,
    },
}

/// CRC-32C over the sequence number (8 bytes LE) and the body.
pub fn data_crc(seq: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), body)
}

fn num(f: Option<&Bytes>) -> Option<u64> {
    std::str::from_utf8(f?).ok()?.parse().ok()
}

impl Frame {
    /// Parse frames after the identity; `None` if not a valid ZMCH01 message.
    pub fn parse(f: &[Bytes]) -> Option<Frame> {
        if f.len() < 4 || !f[0].is_empty() || f[1] != PROTOCOL {
            return None;
        }
        let channel = f[3].clone();
        if channel.is_empty() || channel.len() > CHANNEL_NAME_MAX {
            return None;
        }
        Some(match (&f[2][..], f.len()) {
            (b"HELLO", 4) => Frame::Hello { channel },
            (b"PING", 4) => Frame::Ping { channel },
            (b"DATA", 7) => {
                let seq = num(f.get(4))?;
                // ZMTP carries no checksum of its own: a payload damaged on the
                // way (or by a faulty proxy) must not be delivered. Dropped, it
                // is sent again like any lost message.
                if num(f.get(5))? != u64::from(data_crc(seq, &f[6])) {
                    return None;
                }
                Frame::Data {
                    channel,
                    seq,
                    body: f[6].clone(),
                }
            }
            (b"ACK", 7) => Frame::Ack {
                channel,
                committed: num(f.get(4))?,
                received: num(f.get(5))?,
                window: num(f.get(6))?,
            },
            _ => return None,
        })
    }

    /// The frames, starting with `""` and the protocol name.
    pub fn encode(&self) -> Vec<Bytes> {
        let head = |cmd: &'static [u8], ch: &Bytes| {
            vec![
                Bytes::new(),
                Bytes::from_static(PROTOCOL),
                Bytes::from_static(cmd),
                ch.clone(),
            ]
        };
        match self {
            Frame::Hello { channel } => head(b"HELLO", channel),
            Frame::Ping { channel } => head(b"PING", channel),
            Frame::Data { channel, seq, body } => {
                let mut f = head(b"DATA", channel);
                f.push(Bytes::from(seq.to_string()));
                f.push(Bytes::from(data_crc(*seq, body).to_string()));
                f.push(body.clone());
                f
            }
            Frame::Ack {
                channel,
                committed,
                received,
                window,
            } => {
                let mut f = head(b"ACK", channel);
                f.extend([committed, received, window].map(|n| Bytes::from(n.to_string())));
                f
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let ch = Bytes::from_static(b"files");
        for f in [
            Frame::Hello {
                channel: ch.clone(),
            },
            Frame::Ping {
                channel: ch.clone(),
            },
            Frame::Data {
                channel: ch.clone(),
                seq: 9,
                body: Bytes::from_static(b"x"),
            },
            Frame::Ack {
                channel: ch.clone(),
                committed: 3,
                received: 5,
                window: 64,
            },
        ] {
            assert_eq!(Frame::parse(&f.encode()), Some(f));
        }
        assert_eq!(
            Frame::parse(&[
                Bytes::new(),
                Bytes::from_static(PROTOCOL),
                Bytes::from_static(b"DATA")
            ]),
            None
        );
        let mut damaged = Frame::Data {
            channel: ch.clone(),
            seq: 1,
            body: Bytes::from_static(b"abc"),
        }
        .encode();
        damaged[6] = Bytes::from_static(b"abd");
        assert_eq!(Frame::parse(&damaged), None, "a damaged body is refused");
        let mut bad = Frame::Data {
            channel: ch,
            seq: 1,
            body: Bytes::new(),
        }
        .encode();
        bad[4] = Bytes::from_static(b"x1");
        assert_eq!(Frame::parse(&bad), None);
    }
}
