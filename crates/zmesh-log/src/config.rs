//! Log settings, every one bounded.

use crate::LogError;
use crate::files::Files;

pub use zmesh_wire::Durability;

/// Settings of one log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment is sealed and a new one started when it would grow past this.
    pub segment_bytes_max: u64,
    /// Largest payload accepted.
    pub record_bytes_max: u32,
    /// One sparse index entry per this many bytes of records.
    pub index_interval_bytes: u64,
    /// Bytes buffered in memory before `append` writes them out by itself.
    pub write_buffer_bytes: usize,
    /// Damaged ranges remembered after recovery; more refuses to open the log.
    pub damage_ranges_max: usize,
    /// Where the files live: the operating system's, or a test's failing disk.
    pub files: Files,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 16 << 20,
            index_interval_bytes: 4096,
            write_buffer_bytes: 256 << 10,
            damage_ranges_max: 10_000,
            files: Files::default(),
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), LogError> {
        if self.segment_bytes_max < 4096 {
            return Err(LogError::Config("segment_bytes_max below 4096".into()));
        }
        if self.record_bytes_max == 0 || self.index_interval_bytes == 0 {
            return Err(LogError::Config(
                "record_bytes_max and index_interval_bytes must be positive".into(),
            ));
        }
        Ok(())
    }
}
