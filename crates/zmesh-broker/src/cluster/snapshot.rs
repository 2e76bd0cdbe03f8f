//! A shard's snapshot, as the broker encodes it: the state of the shard's
//! queues after the entries applied before openraft asked, and how far the
//! catalog was followed then (a node restoring it follows the catalog that
//! far first, so that its queues exist).

use serde::{Deserialize, Serialize};
use zmesh_cluster::{ClusterNode, GroupId};

use super::replicate::Followed;
use crate::queue::core::QueueSnapshot;
use crate::queue::store::QueueStore;
use crate::storage::Sends;

/// What a shard's snapshot holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardState {
    /// The catalog index this node's queues followed.
    pub catalog_index: u64,
    /// The shard's queues, by name.
    pub queues: Vec<QueueSnapshot>,
}

/// The state of `group`'s queues here, encoded; `None` if it could not be
/// taken (a bug: logged).
pub fn take(
    node: &ClusterNode,
    group: GroupId,
    queues: &QueueStore,
    followed: &Followed,
) -> Option<Vec<u8>> {
    let snapshots = match queues.shard_snapshot(|name| node.shard_of(name) == group) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(group, "the shard's snapshot cannot be taken: {e}");
            return None;
        }
    };
    let state = ShardState {
        catalog_index: followed.index,
        queues: snapshots
            .into_iter()
            .map(|mut q| {
                q.declared_at = followed.declared_at(&q.name);
                q
            })
            .collect(),
    };
    match rmp_serde::to_vec(&state) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::error!(group, "the shard's snapshot does not encode: {e}");
            None
        }
    }
}

/// Replaces what `group`'s queues hold here with `state`. A queue the
/// snapshot has of another declaration (deleted and declared again since)
/// is emptied, as is one it does not have.
pub fn restore(
    node: &ClusterNode,
    group: GroupId,
    state: &ShardState,
    queues: &mut QueueStore,
    followed: &Followed,
) -> Sends {
    debug_assert!(state.catalog_index <= followed.index, "held until followed");
    queues.restore_shard(
        |name| node.shard_of(name) == group,
        |name| {
            let here = followed.declared_at(name);
            state.queues.iter().find(|q| {
                q.name == name && (q.declared_at == 0 || here == 0 || q.declared_at == here)
            })
        },
    )
}
