//! The Python interpreter with pyzmq: the libzmq peer of the interop tests.

use std::path::PathBuf;

/// The interpreter to run pyzmq peers with: `$ZMESH_PYTHON`, else `.venv/bin/python`
/// at the workspace root (what `.ci/run` creates), else `python3`.
pub fn interpreter() -> PathBuf {
    if let Ok(p) = std::env::var("ZMESH_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file under the workspace's `tests/python` folder.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}
