//! What the core asks its driver to do.

use bytes::Bytes;
use zmesh_log::Durability;

use super::super::options::Catalog;

/// Something for the driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueAction {
    /// Send frames to a peer.
    Send {
        /// ROUTER identity.
        to: Bytes,
        /// Frames after the identity.
        frames: Vec<Bytes>,
        /// The last frame is the body of the message stored by the journal
        /// record at this offset (a PUBLISH or MOVE): read it with
        /// [`journal::body`](crate::queue::journal::body) and push it.
        body_at: Option<u64>,
    },
    /// Append a journal record. With a ticket, answer with
    /// [`QueueCore::persisted`](super::QueueCore::persisted) once it is durable under `durability`.
    Append {
        /// Encoded [`Entry`](crate::queue::journal::Entry).
        record: Bytes,
        /// The record ends with the body of the message stored by the
        /// journal record at this offset: append it before writing. Should
        /// it be unreadable, the append failed.
        body_at: Option<u64>,
        /// What "durable" means for this record.
        durability: Durability,
        /// Who waits for it.
        ticket: Option<u64>,
    },
    /// Save the catalog (atomically) before carrying out later actions.
    SaveCatalog(Catalog),
}
