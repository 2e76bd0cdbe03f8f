//! Queue settings, as declared, and the rule for names.

use crate::Durability;
use serde::{Deserialize, Serialize};

/// Settings of one durable queue, as declared. Every field has a default, so
/// `{}` declares a queue with safe settings.
///
/// ```
/// use zmesh_wire::queue::options::QueueOptions;
/// let o: QueueOptions = serde_json::from_str(r#"{"max_length": 1000, "durability": "os"}"#).unwrap();
/// assert_eq!(o.max_length, 1000);
/// assert_eq!(o.ack_timeout_ms, 30_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueOptions {
    /// When a publish is confirmed: `always` (fsync each write), `group`
    /// (group commit, `group:MS:BYTES`), `os` (written, not synced).
    pub durability: Durability,
    /// Messages held at most (ready, in flight and being stored); more are refused.
    pub max_length: u64,
    /// Body bytes held at most; more are refused.
    pub max_bytes: u64,
    /// Messages older than this are dead-lettered (or dropped without a
    /// dead-letter queue). `None`: no expiry.
    pub message_ttl_ms: Option<u64>,
    /// A delivery not acknowledged within this is redelivered.
    pub ack_timeout_ms: u64,
    /// Deliveries before a message is dead-lettered instead of redelivered.
    pub max_deliveries: u32,
    /// Where dead letters go. `None` on declare means `<queue>.dlq`; an empty
    /// string means nowhere (they are dropped and counted).
    pub dead_letter: Option<String>,
    /// Producer message ids remembered for deduplication.
    pub dedup_window: u32,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            durability: Durability::GROUP_DEFAULT,
            max_length: 1_000_000,
            max_bytes: 256 << 20,
            message_ttl_ms: None,
            ack_timeout_ms: 30_000,
            max_deliveries: 5,
            dead_letter: None,
            dedup_window: 100_000,
        }
    }
}

impl QueueOptions {
    /// Check limits; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.durability, Durability::Group { .. })
            && self.durability != Durability::GROUP_DEFAULT
        {
            return Err(
                "durability: group commit timing is the broker's setting (--group-commit-ms); \
                 write just \"group\""
                    .into(),
            );
        }
        if self.max_length == 0 || self.max_bytes == 0 {
            return Err("max_length and max_bytes must be positive".into());
        }
        if self.ack_timeout_ms == 0 || self.ack_timeout_ms > 24 * 3600 * 1000 {
            return Err("ack_timeout_ms must be between 1 and 86400000".into());
        }
        if self.message_ttl_ms == Some(0) {
            return Err("message_ttl_ms must be positive (omit it for no expiry)".into());
        }
        if self.max_deliveries == 0 {
            return Err("max_deliveries must be at least 1".into());
        }
        if self.dedup_window > 10_000_000 {
            return Err("dedup_window above 10000000".into());
        }
        if let Some(d) = &self.dead_letter
            && !d.is_empty()
        {
            check_name(d)?;
        }
        Ok(())
    }
}

/// Queue names: 1–200 bytes of `A-Z a-z 0-9 . _ - @ :`.
pub fn check_name(name: &str) -> Result<(), String> {
    check_name_of("queue", name)
}

/// The same rule for any named thing (streams and durable subscriptions
/// too); `what` names it in the error.
pub fn check_name_of(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err(format!("{what} name {name:?} must be 1-200 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-_@:".contains(&b))
    {
        return Err(format!(
            "{what} name {name:?} may only hold letters, digits and . _ - @ :"
        ));
    }
    Ok(())
}

/// One declared queue: its journal id, name and settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Journal records name queues by this id; a queue declared again after a
    /// delete gets a new id, so the old incarnation's records stay dead.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Settings, with the dead-letter queue resolved.
    pub options: QueueOptions,
}
