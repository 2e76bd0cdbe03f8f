//! A group's snapshot on disk: one file, openraft's meta beside the state,
//! replaced atomically, so a node restarted after openraft purged the log
//! below it starts from the file and replays the rest.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::Types;
use openraft::type_config::alias::SnapshotMetaOf;

/// A snapshot file's contents: openraft's meta and the encoded state.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub meta: SnapshotMetaOf<Types>,
    pub data: Vec<u8>,
}

/// Why a snapshot file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("reading the snapshot {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the snapshot {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// The snapshot kept at `path`, if there is one.
pub(crate) fn read(path: &Path) -> Result<Option<StoredSnapshot>, SnapshotFileError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            rmp_serde::from_slice(&bytes)
                .map(Some)
                .map_err(|e| SnapshotFileError::Damaged {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces the snapshot at `path` with `stored`, durably (two fsyncs): the
/// caller runs it where blocking is allowed.
pub(crate) fn write(path: &Path, stored: &StoredSnapshot) -> io::Result<()> {
    let bytes = rmp_serde::to_vec(stored).map_err(io::Error::other)?;
    zmesh_log::write_atomically(path, &bytes)
}
