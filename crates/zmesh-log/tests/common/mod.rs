//! What the tests on the failing disk share: fresh directories and a small log.

use std::path::PathBuf;

use zmesh_log::LogConfig;
use zmesh_log::faulty::Faults;

/// A fresh directory (not created), unique within this test binary.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("zmesh-log-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Small segments and buffers on `faults`' disk, so a few hundred records
/// rotate and flush often.
pub fn config(faults: &Faults) -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        write_buffer_bytes: 1024,
        files: faults.files(),
        ..LogConfig::default()
    }
}
