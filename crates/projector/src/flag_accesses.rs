//! Checks of children's flags, indexed from the access records (the AUDIT stream) so that a flag answer can
//! carry the last accesses to the child's flag, as CP-IS does. A tree of its own (`flag-accesses`), not part
//! of the read models an export compares: it follows AUDIT, not the agency streams. Exactly once as the rest:
//! the position in AUDIT is written in the same batch as the accesses up to it.

use halcyon_schema::ChildId;
use halcyon_schema::pb;
use prost::Message as _;

use crate::error::ProjectorError;
use crate::store::Projector;

const TREE: &str = "flag-accesses";
/// The key of the AUDIT position reached (no child key is this short).
const POSITION: &[u8] = b"\0position";

/// One check of a child's flag, where it sits in AUDIT.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagAccessRow {
    pub child: ChildId,
    pub at_ms: i64,
    pub sequence: u64,
    pub index: u32,
    pub access: pb::FlagAccess,
}

fn key(row: &FlagAccessRow) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + 8 + 8 + 4);
    k.extend_from_slice(row.child.as_bytes());
    // Times before 1970 are not access times; clamp so that the big-endian order is the time order.
    k.extend_from_slice(&(row.at_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(&row.sequence.to_be_bytes());
    k.extend_from_slice(&row.index.to_be_bytes());
    k
}

impl Projector {
    /// The AUDIT sequence the flag-access index has reached (0: none).
    pub fn flag_access_position(&self) -> Result<u64, ProjectorError> {
        let tree = self.db().open_tree(TREE)?;
        Ok(tree
            .get(POSITION)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Adds the flag checks of AUDIT messages up to `through_sequence`, atomically with that position.
    pub fn index_flag_accesses(
        &self,
        through_sequence: u64,
        rows: &[FlagAccessRow],
    ) -> Result<(), ProjectorError> {
        let tree = self.db().open_tree(TREE)?;
        let mut batch = sled::Batch::default();
        for row in rows {
            batch.insert(key(row), row.access.encode_to_vec());
        }
        batch.insert(POSITION, &through_sequence.to_be_bytes());
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// The last `n` checks of `child`'s flag, most recent first.
    pub fn recent_flag_accesses(
        &self,
        child: ChildId,
        n: usize,
    ) -> Result<Vec<pb::FlagAccess>, ProjectorError> {
        let tree = self.db().open_tree(TREE)?;
        let mut out = Vec::new();
        for kv in tree.scan_prefix(child.as_bytes()).rev().take(n) {
            let (k, v) = kv?;
            out.push(
                pb::FlagAccess::decode(v.as_ref()).map_err(|e| ProjectorError::Corrupt {
                    key: hex::encode(&k),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}
