//! [`Message`]: one ZeroMQ message of one or more frames.

use bytes::Bytes;

use crate::engine::{self, RawMessage};
use crate::security::PeerAuth;

/// A ZeroMQ message: one or more frames, sent and received atomically.
///
/// Frames are [`Bytes`], shared without copying. The representation is the
/// engine's own, so moving a message between zmesh and the wire costs nothing.
///
/// ```
/// use zmesh::Message;
/// let m = Message::from_frames(["key", "value"]);
/// assert_eq!(m.len(), 2);
/// assert_eq!(m.frame(1).unwrap(), "value");
/// assert_eq!(m.to_vec(), vec!["key".as_bytes(), b"value"]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message(pub(crate) RawMessage);

impl Message {
    /// A single-frame message.
    pub fn single(frame: impl Into<Bytes>) -> Self {
        Self(engine::message_single(frame.into()))
    }

    /// A message from its frames, in order. An empty iterator gives a message of
    /// one empty frame, the smallest message ZMTP can carry.
    pub fn from_frames<I, B>(frames: I) -> Self
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let frames: Vec<Bytes> = frames.into_iter().map(Into::into).collect();
        if frames.is_empty() {
            return Self::single(Bytes::new());
        }
        Self(engine::message_from_frames(frames))
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        engine::frame_count(&self.0)
    }

    /// Whether the message has no frames (never true for a received message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of the frame sizes in bytes.
    pub fn byte_len(&self) -> usize {
        engine::byte_len(&self.0)
    }

    /// Frame `i`, shared without copying.
    pub fn frame(&self, i: usize) -> Option<Bytes> {
        engine::frame(&self.0, i)
    }

    /// Frame `i` borrowed.
    pub fn frame_slice(&self, i: usize) -> Option<&[u8]> {
        engine::frame_slice(&self.0, i)
    }

    /// All frames, shared without copying.
    pub fn frames(&self) -> Vec<Bytes> {
        (0..self.len()).filter_map(|i| self.frame(i)).collect()
    }

    /// All frames borrowed.
    pub fn to_vec(&self) -> Vec<&[u8]> {
        (0..self.len())
            .filter_map(|i| self.frame_slice(i))
            .collect()
    }

    /// The last frame: the body, after any routing envelope.
    pub fn body(&self) -> Option<Bytes> {
        self.len().checked_sub(1).and_then(|i| self.frame(i))
    }
}

impl Message {
    /// For a message received on a ROUTER: who sent it, as authenticated by
    /// the handshake. Other socket types have a single peer per message
    /// stream; look it up in [`crate::Socket::peers`].
    pub fn sender_auth(&self) -> Option<PeerAuth> {
        engine::sender_auth(&self.0)
    }

    /// For a message received on a ROUTER: the connection it came in on, as
    /// [`crate::Socket::closed_connections`] and
    /// [`crate::Socket::disconnect_peer`] name it. `None` for messages made
    /// locally or received on other socket types.
    pub fn connection_id(&self) -> Option<u64> {
        engine::sender_connection(&self.0)
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.to_vec()
                    .iter()
                    .map(|b| bytes::Bytes::copy_from_slice(b)),
            )
            .finish()
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::single(b)
    }
}

impl From<&'static str> for Message {
    fn from(s: &'static str) -> Self {
        Self::single(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::single(Bytes::from(s))
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Self::single(Bytes::from(v))
    }
}
