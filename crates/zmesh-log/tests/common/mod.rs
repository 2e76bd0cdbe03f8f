//! What the log's tests share: fresh directories, a small log, reading it all back.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::path::PathBuf;

use zmesh_log::faulty::Faults;
use zmesh_log::{Log, LogConfig};

/// A fresh directory (not created), unique within this test binary.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("zmesh-log-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Small segments and buffers, so a few hundred records rotate and flush often.
pub fn small() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        write_buffer_bytes: 1024,
        ..LogConfig::default()
    }
}

/// [`small`] on `faults`' disk.
pub fn config(faults: &Faults) -> LogConfig {
    LogConfig {
        files: faults.files(),
        ..small()
    }
}

/// Every record the log holds, as (offset, payload).
pub fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = log.read(from, 100, 1 << 20).unwrap();
        let Some(last) = batch.last() else { break };
        from = last.offset + 1;
        out.extend(batch.into_iter().map(|r| (r.offset, r.payload.to_vec())));
    }
    out
}
