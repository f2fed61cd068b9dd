//! Key layout of the single `model` tree. One tree so that a batch (facts + identity + checkpoint) is
//! atomic with `apply_batch`. Big-endian numbers so keys sort as the numbers do.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `C` | stream | checkpoint: last applied sequence (u64) |
//! | `D` | stream 0 seq | duplicate: position of the copy already projected |
//! | `F` | child (16) occurred_ms (8) agency 0 seq (8) | stored fact; a re-sent event id is found under its key without the seq |
//! | `I` | identifier key | child (16) |
//! | `Q` | stream 0 seq | quarantine record (JSON) |
//! | `V` | child (16) | every agency's view of the child (`view::ChildViews`) |
//! | `X` | stream 0 seq | children (16 each) whose facts the batch ending at seq changed: views to derive |
//! | `L`, `W`, `B` | see `deadlines.rs` | a child's deadlines, the due index, breach records |
//! | `S` | see `signals.rs` | a child's multi-agency signals and their outcomes |
//! | `M`, `N`, `H` | see `history.rs` | facts moved by identity links, and what each identifier denoted when |

use halcyon_schema::ChildId;

pub const CHECKPOINT: u8 = b'C';
pub const DUPLICATE: u8 = b'D';
pub const FACT: u8 = b'F';
pub const IDENTITY: u8 = b'I';
pub const QUARANTINE: u8 = b'Q';
pub const VIEWS: u8 = b'V';
pub const STALE_VIEWS: u8 = b'X';
/// A child's deadlines (`deadlines.rs`).
pub const DEADLINES: u8 = b'L';
/// The due index: running deadlines by due time (`deadlines.rs`).
pub const DUE: u8 = b'W';
/// Breach records (`deadlines.rs`).
pub const BREACHES: u8 = b'B';
/// A child's multi-agency signals (`signals.rs`).
pub const SIGNALS: u8 = b'S';
/// Where a fact moved by identity links was filed, from when (`history.rs`).
pub const MOVES: u8 = b'M';
/// The facts ever moved into or out of a child (`history.rs`).
pub const MOVED: u8 = b'N';
/// What an identifier denoted, from when (`history.rs`).
pub const LINKS: u8 = b'H';

/// Every prefix of the tree, with what it holds: a new read model declares its prefix here.
pub const PREFIXES: &[(u8, &str)] = &[
    (CHECKPOINT, "checkpoint"),
    (DUPLICATE, "duplicate"),
    (FACT, "fact"),
    (IDENTITY, "identity"),
    (QUARANTINE, "quarantine"),
    (VIEWS, "views"),
    (STALE_VIEWS, "views to derive"),
    (DEADLINES, "deadlines"),
    (DUE, "due index"),
    (BREACHES, "breaches"),
    (SIGNALS, "signals"),
    (MOVES, "fact moves"),
    (MOVED, "moved facts by child"),
    (LINKS, "link history"),
];

pub fn checkpoint(stream: &str) -> Vec<u8> {
    let mut k = vec![CHECKPOINT];
    k.extend_from_slice(stream.as_bytes());
    k
}

pub fn position(prefix: u8, stream: &str, sequence: u64) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

/// Signed milliseconds mapped to an order-preserving unsigned big-endian value.
fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn child_facts_prefix(child: &ChildId) -> Vec<u8> {
    let mut k = vec![FACT];
    k.extend_from_slice(child.as_bytes());
    k
}

/// Facts of a child sort by (occurred at, agency, sequence): the order views are derived in, whatever the
/// order the streams were read in.
pub fn fact(child: &ChildId, occurred_ms: i64, agency: &str, sequence: u64) -> Vec<u8> {
    let mut k = child_facts_prefix(child);
    k.extend_from_slice(&ordered_i64(occurred_ms));
    k.extend_from_slice(agency.as_bytes());
    k.push(0);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

/// A fact key without its sequence: the facts of one child at one moment from one agency, where a re-sent
/// event's first copy is.
pub fn fact_sequence_prefix(fact_key: &[u8]) -> &[u8] {
    &fact_key[..fact_key.len() - 8]
}

pub fn views(child: &ChildId) -> Vec<u8> {
    let mut k = vec![VIEWS];
    k.extend_from_slice(child.as_bytes());
    k
}

pub fn identity(identifier: &str) -> Vec<u8> {
    let mut k = vec![IDENTITY];
    k.extend_from_slice(identifier.as_bytes());
    k
}

pub fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_keys_sort_by_time_then_agency_then_sequence() {
        let c = ChildId::from_bytes([7; 16]);
        let mut keys = vec![
            fact(&c, 5, "b", 1),
            fact(&c, -3, "z", 9),
            fact(&c, 5, "a", 2),
            fact(&c, 5, "a", 1),
            fact(&c, 1_700_000_000_000, "a", 0),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                fact(&c, -3, "z", 9),
                fact(&c, 5, "a", 1),
                fact(&c, 5, "a", 2),
                fact(&c, 5, "b", 1),
                fact(&c, 1_700_000_000_000, "a", 0)
            ]
        );
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    #[test]
    fn every_prefix_is_distinct() {
        let mut seen = std::collections::BTreeMap::new();
        for (prefix, what) in PREFIXES {
            if let Some(other) = seen.insert(*prefix, *what) {
                panic!("{} and {what} share the prefix {:?}", other, *prefix as char);
            }
        }
    }
}
