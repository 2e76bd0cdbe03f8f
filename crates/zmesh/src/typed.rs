//! [`TypedSocket`]: a socket whose payloads are typed values in one codec.

use std::marker::PhantomData;

use crate::codec::{Codec, Decode, Encode};
use crate::error::Result;
use crate::socket::Socket;

/// A [`Socket`] that sends and receives values of a codec chosen once, for the socket.
///
/// ```no_run
/// # async fn demo() -> zmesh::Result<()> {
/// use zmesh::{codec::MsgPack, Socket, SocketOptions, SocketType, TypedSocket};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Tick { seq: u64 }
/// let push: TypedSocket<MsgPack> = Socket::new(SocketType::Push, SocketOptions::default())?.typed();
/// push.send(&Tick { seq: 1 }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TypedSocket<C: Codec> {
    socket: Socket,
    codec: PhantomData<C>,
}

impl Socket {
    /// View this socket through codec `C`.
    pub fn typed<C: Codec>(self) -> TypedSocket<C> {
        TypedSocket {
            socket: self,
            codec: PhantomData,
        }
    }
}

impl<C: Codec> TypedSocket<C> {
    /// Send a value.
    pub async fn send<T: Encode<C> + ?Sized>(&self, value: &T) -> Result<()> {
        self.socket.send_as::<C, T>(value).await
    }

    /// Receive a value.
    pub async fn recv<T: Decode<C>>(&self) -> Result<T> {
        self.socket.recv_as::<C, T>().await
    }

    /// The untyped socket underneath.
    pub fn inner(&self) -> &Socket {
        &self.socket
    }
}
