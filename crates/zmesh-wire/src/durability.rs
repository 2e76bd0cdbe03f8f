//! How a queue's or stream's records reach stable storage: a value in their
//! options on the wire, and the storage log's sync policy.

/// A durability policy that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("durability {0:?}: expected always, group[:MAX_DELAY_MS[:MAX_BYTES]] or os")]
pub struct DurabilityError(pub String);

/// How appended records reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Group commit with no delay: a record's `fdatasync` starts as soon as
    /// its batch is written, and it is done only after it. Records of one
    /// batch share the sync; a publisher waiting for each one gets the
    /// disk's fsync rate.
    Always,
    /// Group commit: one `fdatasync` covers every record written since the
    /// previous one. A sync starts once `max_delay_ms` has passed since the
    /// first unsynced record or `max_bytes` are waiting, whichever is first; a
    /// delay of 0 syncs as soon as the previous sync ends.
    Group {
        /// Longest a record waits for its sync to start.
        max_delay_ms: u64,
        /// Unsynced bytes that start a sync at once.
        max_bytes: u64,
    },
    /// Never `fdatasync` outside segment rotation and close: the operating
    /// system writes pages back when it likes. Survives a process crash
    /// (`kill -9`), not a power cut.
    Os,
}

impl Durability {
    /// Group commit with the defaults: a sync starts as soon as the previous
    /// one ends (whatever was written meanwhile rides along), or at 1 MiB.
    /// Measured: a 1 ms delay cut throughput at a window of 100 publishes from
    /// 72 k/s to 34 k/s and doubled latency, for no gain at high load.
    pub const GROUP_DEFAULT: Durability = Durability::Group {
        max_delay_ms: 0,
        max_bytes: 1 << 20,
    };

    /// Parse `always`, `group`, `group:MS`, `group:MS:BYTES` or `os`.
    ///
    /// ```
    /// use zmesh_wire::Durability;
    /// assert_eq!(Durability::parse("os").unwrap(), Durability::Os);
    /// assert_eq!(
    ///     Durability::parse("group:5:65536").unwrap(),
    ///     Durability::Group { max_delay_ms: 5, max_bytes: 65536 }
    /// );
    /// ```
    pub fn parse(s: &str) -> Result<Durability, DurabilityError> {
        let bad = || DurabilityError(s.to_owned());
        let mut parts = s.split(':');
        match parts.next() {
            Some("always") if parts.next().is_none() => Ok(Durability::Always),
            Some("os") if parts.next().is_none() => Ok(Durability::Os),
            Some("group") => {
                let Durability::Group {
                    mut max_delay_ms,
                    mut max_bytes,
                } = Durability::GROUP_DEFAULT
                else {
                    unreachable!()
                };
                if let Some(ms) = parts.next() {
                    max_delay_ms = ms.parse().map_err(|_| bad())?;
                }
                if let Some(b) = parts.next() {
                    max_bytes = b.parse().map_err(|_| bad())?;
                }
                if parts.next().is_some() || max_delay_ms > 10_000 {
                    return Err(bad());
                }
                Ok(Durability::Group {
                    max_delay_ms,
                    max_bytes,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::Group {
                max_delay_ms,
                max_bytes,
            } => write!(f, "group:{max_delay_ms}:{max_bytes}"),
            Durability::Os => f.write_str("os"),
        }
    }
}

/// As text (`always`, `group:MS:BYTES`, `os`), as queue and stream options carry it.
impl serde::Serialize for Durability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Durability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Durability::parse(&s).map_err(serde::de::Error::custom)
    }
}
