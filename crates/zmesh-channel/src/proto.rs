//! The ZMCH02 wire format (docs/protocol/channel.md): frames after the ROUTER
//! identity, each message starting with `""` and `"ZMCH02"`.
//!
//! ```text
//! sender → receiver   HELLO channel crc            (after (re)connecting)
//!                     DATA  channel seq crc body   (seq: the outbox offset)
//!                     PING  channel crc            (when idle)
//! receiver → sender   ACK   channel committed received window crc
//! ```
//! Every message carries `crc`, a CRC-32C of its channel name, numbers and
//! body ([`frame_crc`]): ZMTP has no checksum of its own, and a damaged ACK
//! could make the sender forget messages the receiver never got.
//! `committed`: every seq below it is processed by the application (the
//! sender may forget them); `received`: every seq below it has arrived (the
//! sender resends from here after a timeout); `window`: how many messages
//! past `received` the receiver accepts.

use bytes::Bytes;

/// Protocol name, the second frame of every message. (Version 1, ZMCH01,
/// checked DATA bodies only; its peers are not understood.)
pub const PROTOCOL: &[u8] = b"ZMCH02";

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

/// CRC-32C over the channel name, then each number as 8 bytes little-endian
/// (DATA: `seq`; ACK: `committed`, `received`, `window`; none for HELLO and
/// PING), then the body (DATA).
///
/// ```
/// use zmesh_channel::proto::frame_crc;
/// // DATA files 0 ... alpha (the example of docs/protocol/channel.md)
/// assert_eq!(frame_crc(b"files", &[0], b"alpha"), 4_249_533_566);
/// ```
pub fn frame_crc(channel: &[u8], numbers: &[u64], body: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(channel);
    for n in numbers {
        crc = crc32c::crc32c_append(crc, &n.to_le_bytes());
    }
    crc32c::crc32c_append(crc, body)
}

/// Whether frame `f` holds the CRC of the rest.
fn crc_ok(f: Option<&Bytes>, channel: &[u8], numbers: &[u64], body: &[u8]) -> Option<()> {
    (num(f)? == u64::from(frame_crc(channel, numbers, body))).then_some(())
}

fn num(f: Option<&Bytes>) -> Option<u64> {
    std::str::from_utf8(f?).ok()?.parse().ok()
}

impl Frame {
    /// Parse frames after the identity; `None` if not a valid ZMCH02 message.
    pub fn parse(f: &[Bytes]) -> Option<Frame> {
        if f.len() < 4 || !f[0].is_empty() || f[1] != PROTOCOL {
            return None;
        }
        let channel = f[3].clone();
        if channel.is_empty() || channel.len() > CHANNEL_NAME_MAX {
            return None;
        }
        // ZMTP carries no checksum of its own: a message damaged on the way
        // (or by a faulty proxy) is dropped. A DATA is sent again like any
        // lost message; HELLO, PING and ACK are repeated on their timers.
        Some(match (&f[2][..], f.len()) {
            (b"HELLO", 5) => {
                crc_ok(f.get(4), &channel, &[], &[])?;
                Frame::Hello { channel }
            }
            (b"PING", 5) => {
                crc_ok(f.get(4), &channel, &[], &[])?;
                Frame::Ping { channel }
            }
            (b"DATA", 7) => {
                let seq = num(f.get(4))?;
                crc_ok(f.get(5), &channel, &[seq], &f[6])?;
                Frame::Data {
                    channel,
                    seq,
                    body: f[6].clone(),
                }
            }
            (b"ACK", 8) => {
                let (committed, received, window) =
                    (num(f.get(4))?, num(f.get(5))?, num(f.get(6))?);
                crc_ok(f.get(7), &channel, &[committed, received, window], &[])?;
                Frame::Ack {
                    channel,
                    committed,
                    received,
                    window,
                }
            }
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
        let crc = |channel: &Bytes, numbers: &[u64], body: &[u8]| {
            Bytes::from(frame_crc(channel, numbers, body).to_string())
        };
        match self {
            Frame::Hello { channel } => {
                let mut f = head(b"HELLO", channel);
                f.push(crc(channel, &[], &[]));
                f
            }
            Frame::Ping { channel } => {
                let mut f = head(b"PING", channel);
                f.push(crc(channel, &[], &[]));
                f
            }
            Frame::Data { channel, seq, body } => {
                let mut f = head(b"DATA", channel);
                f.push(Bytes::from(seq.to_string()));
                f.push(crc(channel, &[*seq], body));
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
                f.push(crc(channel, &[*committed, *received, *window], &[]));
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
        // A damaged number in an ACK (here committed 3 -> 9) would make the
        // sender forget messages; a damaged name would reach another channel.
        let ack = Frame::Ack {
            channel: ch.clone(),
            committed: 3,
            received: 5,
            window: 64,
        }
        .encode();
        let mut forged = ack.clone();
        forged[4] = Bytes::from_static(b"9");
        assert_eq!(Frame::parse(&forged), None, "a damaged ACK is refused");
        for f in [
            ack,
            Frame::Hello {
                channel: ch.clone(),
            }
            .encode(),
        ] {
            let mut renamed = f.clone();
            renamed[3] = Bytes::from_static(b"filez");
            assert_eq!(Frame::parse(&renamed), None, "a damaged name is refused");
        }
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
