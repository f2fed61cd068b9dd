//! Where a child's facts stood at a past moment, from the read models themselves: facts carry the time the
//! bus stored them, so "as it stood at T" is a filter on one child's facts, not a replay of every stream.
//! Identity links are the one thing that moves a fact from one child to another; each move is kept:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `M` | stream 0 seq (8) at (8) link seq (8) | the child (16) the fact was filed under from `at` on, and its fact key after the child |
//! | `N` | child (16) stream 0 seq (8) | empty: a fact that was moved into or out of this child |
//! | `H` | identifier key 0 at (8) link seq (8) | the child (16) the identifier denoted from `at` on |
//!
//! A fact's first `M` entry is where it was filed when it was projected (at its own stored time); each link
//! that moved it adds one. Facts never moved have no entries, and are where they were filed.

use std::collections::BTreeSet;

use halcyon_schema::ChildId;

use crate::error::ProjectorError;
use crate::fact::Fact;
use crate::keys;
use crate::store::{Identifier, Projector, decode_fact};

/// Signed milliseconds in an order-preserving big-endian form.
fn ordered(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn unordered(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

pub(crate) fn moves_prefix(stream: &str, sequence: u64) -> Vec<u8> {
    keys::position(keys::MOVES, stream, sequence)
}

pub(crate) fn move_key(stream: &str, sequence: u64, at_ms: i64, link_sequence: u64) -> Vec<u8> {
    let mut k = moves_prefix(stream, sequence);
    k.extend_from_slice(&ordered(at_ms));
    k.extend_from_slice(&link_sequence.to_be_bytes());
    k
}

pub(crate) fn move_value(child: &ChildId, fact_key: &[u8]) -> Vec<u8> {
    let mut v = child.as_bytes().to_vec();
    v.extend_from_slice(&fact_key[17..]);
    v
}

pub(crate) fn moved_key(child: &ChildId, stream: &str, sequence: u64) -> Vec<u8> {
    let mut k = vec![keys::MOVED];
    k.extend_from_slice(child.as_bytes());
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

pub(crate) fn link_history_key(identifier: &Identifier, at_ms: i64, link_sequence: u64) -> Vec<u8> {
    let mut k = link_history_prefix(identifier);
    k.extend_from_slice(&ordered(at_ms));
    k.extend_from_slice(&link_sequence.to_be_bytes());
    k
}

fn link_history_prefix(identifier: &Identifier) -> Vec<u8> {
    let mut k = vec![keys::LINKS];
    k.extend_from_slice(identifier.key().as_bytes());
    k.push(0);
    k
}

fn child_of(value: &[u8]) -> Option<ChildId> {
    Some(ChildId::from_bytes(value.get(..16)?.try_into().ok()?))
}

impl Projector {
    /// The child an identifier denoted at `at_ms`: the last link stored by then, else the child the
    /// identifier derives.
    pub fn resolve_at(&self, id: &Identifier, at_ms: i64) -> Result<ChildId, ProjectorError> {
        if let Identifier::Nhs(_) = id {
            return self.resolve(id);
        }
        let mut child = None;
        for kv in self.model.scan_prefix(link_history_prefix(id)) {
            let (k, v) = kv?;
            let at = unordered(&k[k.len() - 16..k.len() - 8]);
            if at > at_ms {
                break;
            }
            child = child_of(&v);
        }
        Ok(child.unwrap_or_else(|| id.derived_child()))
    }

    /// Where the fact at `stream`/`sequence` was filed at `at_ms`, and its key now; `None` if it never
    /// moved.
    fn location_at(
        &self,
        stream: &str,
        sequence: u64,
        at_ms: i64,
    ) -> Result<Option<(ChildId, Vec<u8>)>, ProjectorError> {
        let (mut then, mut now) = (None, None);
        for kv in self.model.scan_prefix(moves_prefix(stream, sequence)) {
            let (k, v) = kv?;
            let at = unordered(&k[k.len() - 16..k.len() - 8]);
            let Some(child) = child_of(&v) else {
                self.damage.set_aside(&k, "a short move record");
                continue;
            };
            let mut key = keys::child_facts_prefix(&child);
            key.extend_from_slice(&v[16..]);
            if at <= at_ms {
                then = Some(child);
            }
            now = Some(key);
        }
        Ok(match (then, now) {
            (Some(then), Some(now)) => Some((then, now)),
            _ => None,
        })
    }

    /// `child`'s facts as they stood at `at_ms`: those the bus had stored by then, filed under the child
    /// then (identity links stored later undone), in (occurred at, agency, sequence) order — what a store
    /// projected up to the messages stored by `at_ms` holds for the child. Costs what the child's facts
    /// cost, not the history.
    pub fn facts_at(&self, child: &ChildId, at_ms: i64) -> Result<Vec<Fact>, ProjectorError> {
        let mut moved: BTreeSet<(String, u64)> = BTreeSet::new();
        let prefix = {
            let mut k = vec![keys::MOVED];
            k.extend_from_slice(child.as_bytes());
            k
        };
        for kv in self.model.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let rest = &k[17..];
            let Some(zero) = rest.iter().position(|b| *b == 0) else {
                continue;
            };
            let (Ok(stream), Some(seq)) = (
                std::str::from_utf8(&rest[..zero]),
                keys::decode_u64(&rest[zero + 1..]),
            ) else {
                continue;
            };
            moved.insert((stream.to_owned(), seq));
        }
        let mut out = Vec::new();
        for fact in self.facts(child)? {
            if fact.stored_at_ms > at_ms {
                continue;
            }
            if moved.remove(&(fact.stream.clone(), fact.sequence))
                && let Some((then, _)) = self.location_at(&fact.stream, fact.sequence, at_ms)?
                && then != *child
            {
                continue;
            }
            out.push(fact);
        }
        // Facts under another child now that were under this one at the moment.
        for (stream, sequence) in moved {
            let Some((then, key)) = self.location_at(&stream, sequence, at_ms)? else {
                continue;
            };
            if then != *child {
                continue;
            }
            let Some(value) = self.model.get(&key)? else {
                continue;
            };
            match decode_fact(&key, &value) {
                Ok(fact) if fact.stored_at_ms <= at_ms => out.push(fact),
                Ok(_) => {}
                Err(e) => self.damage.set_aside(&key, crate::store::reason_of(e)),
            }
        }
        out.sort_by(|a, b| {
            (a.occurred_ms(), a.envelope.agency_id.as_str(), a.sequence).cmp(&(
                b.occurred_ms(),
                b.envelope.agency_id.as_str(),
                b.sequence,
            ))
        });
        Ok(out)
    }
}
