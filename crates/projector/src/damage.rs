//! Stored records that cannot be read back (a disk fault, a bug, an older format): each is reported once,
//! with its key and reason, and set aside — left out of answers — so that it never makes the rest of a
//! child's record, a listing across children, a rebuild or an export fail. sled is a cache of the log: a
//! rebuild from the streams replaces the record.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A record set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    /// The record's key prefix (see `keys.rs`): `F` a fact, `V` views, `L`/`B` deadlines and breaches,
    /// `S` signals, `Q` a quarantine record.
    pub kind: char,
    /// The whole key, hex (names a child by its halcyon id, never by a personal identifier).
    pub key: String,
    /// Why it could not be read.
    pub reason: String,
}

/// The records set aside since this projector was opened.
#[derive(Debug, Default)]
pub struct Damage {
    records: Mutex<BTreeMap<Vec<u8>, String>>,
}

impl Damage {
    /// Sets a record aside; reported (logged) the first time only.
    pub fn set_aside(&self, key: &[u8], reason: impl std::fmt::Display) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.contains_key(key) {
            return;
        }
        let reason = reason.to_string();
        // The kind and reason only: the key names a child.
        tracing::warn!(
            kind = %key.first().map(|b| *b as char).unwrap_or('?'),
            %reason,
            "a stored record cannot be read; set aside (rebuild the read models from the streams to replace it)"
        );
        records.insert(key.to_vec(), reason);
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record set aside, in key order.
    pub fn records(&self) -> Vec<DamagedRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(key, reason)| DamagedRecord {
                kind: key.first().map(|b| *b as char).unwrap_or('?'),
                key: hex::encode(key),
                reason: reason.clone(),
            })
            .collect()
    }
}
