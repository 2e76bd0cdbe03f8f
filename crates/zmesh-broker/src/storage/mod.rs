//! What the queues and streams share on disk: catalog files written so they
//! are never torn, the error opening a store, and the sends a store hands
//! the driver.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use zmesh_log::LogError;

pub(crate) mod saves;

/// Sends for the driver: (ROUTER identity, frames).
pub type Sends = Vec<(Bytes, Vec<Bytes>)>;

/// Errors opening the store; all are the environment's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The journal could not be opened or read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A catalog file (queues.json, streams.json) is unreadable.
    #[error("catalog {path}: {reason}")]
    Catalog {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Read a JSON file written by [`saves::Saves`]; a missing file is the default.
pub fn load_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, StoreError> {
    let bad = |reason: String| StoreError::Catalog {
        path: path.into(),
        reason,
    };
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| bad(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(bad(e.to_string())),
    }
}
