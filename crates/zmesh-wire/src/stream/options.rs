//! Stream settings, as declared.

use crate::Durability;
use serde::{Deserialize, Serialize};

/// Settings of one stream; `{}` gives the defaults.
///
/// ```
/// use zmesh_wire::stream::options::StreamOptions;
/// let o: StreamOptions = serde_json::from_str(r#"{"max_age_ms": 3600000}"#).unwrap();
/// assert_eq!(o.max_age_ms, Some(3_600_000));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamOptions {
    /// When a publish is acknowledged: `always`, `group` or `os`.
    pub durability: Durability,
    /// Drop whole segments older than this.
    pub max_age_ms: Option<u64>,
    /// Keep at most about this many bytes.
    pub max_bytes: Option<u64>,
    /// Keep at most about this many messages.
    pub max_msgs: Option<u64>,
    /// Subjects whose last value the broker remembers for snapshots.
    pub last_values_max: u32,
    /// Producer message ids remembered for deduplication (the newest; 0: none).
    pub dedup_window: u32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            durability: Durability::GROUP_DEFAULT,
            max_age_ms: None,
            max_bytes: Some(1 << 30),
            max_msgs: None,
            last_values_max: 100_000,
            dedup_window: 100_000,
        }
    }
}

impl StreamOptions {
    /// Check limits; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.durability, Durability::Group { .. })
            && self.durability != Durability::GROUP_DEFAULT
        {
            return Err("durability: write just \"group\" (timing is the broker's setting)".into());
        }
        if self.max_age_ms == Some(0) || self.max_bytes == Some(0) || self.max_msgs == Some(0) {
            return Err("max_age_ms, max_bytes and max_msgs must be positive when given".into());
        }
        if self.last_values_max > 10_000_000 {
            return Err("last_values_max above 10000000".into());
        }
        if self.dedup_window > 10_000_000 {
            return Err("dedup_window above 10000000".into());
        }
        Ok(())
    }
}

/// One stream: its id (and directory), name and settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Never reused; names the stream's directory.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Settings.
    pub options: StreamOptions,
}
