//! What a queue operation's failure says, and who is at fault.

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Environment: no reply in any attempt.
    #[error("no reply from the broker after {0} attempts")]
    Timeout(u32),
    /// The broker refused: `code` says why (400 bad request, 404 no queue,
    /// 409 other options, 429 queue full, 503 broker limit, 507 storage).
    #[error("broker refused ({code}): {reason}")]
    Refused {
        /// Error code.
        code: u16,
        /// The broker's reason.
        reason: String,
    },
    /// Caller: too many requests in flight on this client.
    #[error("too many requests in flight ({0})")]
    Busy(usize),
    /// The broker's reply made no sense.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The socket failed.
    #[error(transparent)]
    Socket(#[from] zmesh::Error),
}

impl QueueError {
    /// The broker's error code, if it refused.
    pub fn code(&self) -> Option<u16> {
        match self {
            QueueError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}
