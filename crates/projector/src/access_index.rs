//! The access log (the AUDIT stream) indexed in the node's sled, so that a listing of one child's, one
//! agency's or one person's accesses, or those of a period, costs what that selection holds and not the
//! whole log (`ListAccess`), and a flag answer can carry the last accesses to the child's flag, as CP-IS
//! does. A tree of its own (`access`), not part of the read models an export compares: it follows AUDIT,
//! not the agency streams. Exactly once as the rest: the position in AUDIT is written in the same batch as
//! the records up to it, so a batch read again after a crash changes nothing.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `\0position` | | the AUDIT sequence indexed through (u64) |
//! | `r` | sequence (8) index (4) | the access record as stored in AUDIT (protobuf) |
//! | `t` | at (8) sequence index | empty: every record by time |
//! | `c` | child (16) at sequence index | empty: the records about a child |
//! | `a` | agency 0 at sequence index | empty: the records of calls made by an agency |
//! | `p` | principal 0 at sequence index | empty: the records of calls made by one principal |
//! | `f` | child (16) at sequence index | a permitted check of the child's flag (`pb::FlagAccess`) |
//!
//! Every secondary key ends with the same 20 bytes (at, sequence, index): the record's [`AccessCursor`],
//! in the order a listing pages through.

use halcyon_schema::ChildId;
use halcyon_schema::pb;
use prost::Message as _;

use crate::error::ProjectorError;
use crate::store::Projector;

const TREE: &str = "access";
/// The key of the AUDIT position reached (no other key starts with a zero byte).
const POSITION: &[u8] = b"\0position";
const RECORD: u8 = b'r';
const BY_TIME: u8 = b't';
const BY_CHILD: u8 = b'c';
const BY_AGENCY: u8 = b'a';
const BY_PRINCIPAL: u8 = b'p';
const FLAG: u8 = b'f';
/// The length of the cursor every secondary key ends with.
const CURSOR_LEN: usize = 8 + 8 + 4;

/// Where a record sits in a listing: its time, then its place in AUDIT. Listings run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccessCursor {
    pub at_ms: i64,
    pub sequence: u64,
    pub index: u32,
}

impl AccessCursor {
    fn bytes(&self) -> [u8; CURSOR_LEN] {
        let mut b = [0; CURSOR_LEN];
        // Times before 1970 are not access times; clamp so that the big-endian order is the time order.
        b[..8].copy_from_slice(&(self.at_ms.max(0) as u64).to_be_bytes());
        b[8..16].copy_from_slice(&self.sequence.to_be_bytes());
        b[16..].copy_from_slice(&self.index.to_be_bytes());
        b
    }

    fn from_key_tail(key: &[u8]) -> Option<Self> {
        let tail = key.get(key.len().checked_sub(CURSOR_LEN)?..)?;
        Some(Self {
            at_ms: u64::from_be_bytes(tail[..8].try_into().ok()?) as i64,
            sequence: u64::from_be_bytes(tail[8..16].try_into().ok()?),
            index: u32::from_be_bytes(tail[16..].try_into().ok()?),
        })
    }

    /// As a page token: `at.sequence.index`.
    pub fn token(&self) -> String {
        format!("{}.{}.{}", self.at_ms.max(0), self.sequence, self.index)
    }

    /// A page token back, if it is one [`AccessCursor::token`] made.
    pub fn parse_token(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let cursor = Self {
            at_ms: parts.next()?.parse::<u64>().ok()?.try_into().ok()?,
            sequence: parts.next()?.parse().ok()?,
            index: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// One access record of an AUDIT message, where it sits.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRow {
    pub cursor: AccessCursor,
    pub record: pb::AccessRecord,
}

impl AccessRow {
    /// The rows of one AUDIT message (none if it does not decode: AUDIT holds only what nodes wrote).
    pub fn of_message(sequence: u64, payload: &[u8]) -> Vec<AccessRow> {
        let Ok(records) = pb::AccessRecords::decode(payload) else {
            return Vec::new();
        };
        records
            .records
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                let at_ms = record.at.as_ref().map_or(0, |t| {
                    t.seconds
                        .saturating_mul(1000)
                        .saturating_add(i64::from(t.nanos) / 1_000_000)
                });
                AccessRow {
                    cursor: AccessCursor {
                        at_ms,
                        sequence,
                        index: i as u32,
                    },
                    record,
                }
            })
            .collect()
    }

    /// The flag check this record is, if it is a permitted one about a known child.
    fn flag_access(&self) -> Option<(ChildId, pb::FlagAccess)> {
        let r = &self.record;
        if r.method != "CheckFlag" || r.outcome != pb::AccessOutcome::Permitted as i32 {
            return None;
        }
        let child = r.child_id.parse().ok()?;
        Some((
            child,
            pb::FlagAccess {
                agency_id: r.agency_id.clone(),
                agency_name: String::new(),
                role: r.role.clone(),
                at: r.at,
            },
        ))
    }
}

/// Which records a listing selects. Every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct AccessSelection {
    pub child: Option<ChildId>,
    pub agency: Option<String>,
    pub principal: Option<String>,
    /// Inclusive bounds on the record's time.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

fn keyed(prefix: u8, name: &[u8], zero: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len() + 1 + CURSOR_LEN);
    k.push(prefix);
    k.extend_from_slice(name);
    if zero {
        k.push(0);
    }
    k
}

impl AccessSelection {
    /// The index to walk: the narrowest the selection names (a child's records are fewer than an agency's).
    fn index_prefix(&self) -> Vec<u8> {
        if let Some(child) = &self.child {
            keyed(BY_CHILD, child.as_bytes(), false)
        } else if let Some(principal) = &self.principal {
            keyed(BY_PRINCIPAL, principal.as_bytes(), true)
        } else if let Some(agency) = &self.agency {
            keyed(BY_AGENCY, agency.as_bytes(), true)
        } else {
            vec![BY_TIME]
        }
    }

    fn holds(&self, row: &AccessRow) -> bool {
        let r = &row.record;
        self.child.is_none_or(|c| r.child_id == c.to_string())
            && self.agency.as_ref().is_none_or(|a| &r.agency_id == a)
            && self.principal.as_ref().is_none_or(|p| &r.principal_id == p)
            && self.from_ms.is_none_or(|f| row.cursor.at_ms >= f)
            && self.to_ms.is_none_or(|t| row.cursor.at_ms <= t)
    }
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> ProjectorError {
    ProjectorError::Corrupt {
        key: hex::encode(key),
        reason: e.to_string(),
    }
}

fn record_key(cursor: &AccessCursor) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(RECORD);
    k.extend_from_slice(&cursor.sequence.to_be_bytes());
    k.extend_from_slice(&cursor.index.to_be_bytes());
    k
}

/// The position stored in `db`'s access index (0: none), read when the store is opened.
pub(crate) fn stored_position(db: &sled::Db) -> Result<u64, sled::Error> {
    Ok(db
        .open_tree(TREE)?
        .get(POSITION)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

impl Projector {
    fn access_tree(&self) -> Result<sled::Tree, ProjectorError> {
        Ok(self.db().open_tree(TREE)?)
    }

    /// The AUDIT sequence the access index has reached (0: none).
    pub fn access_position(&self) -> Result<u64, ProjectorError> {
        Ok(stored_position(self.db())?)
    }

    /// Adds the records of AUDIT messages up to `through_sequence`, atomically with that position.
    pub fn index_access(&self, through_sequence: u64, rows: &[AccessRow]) -> Result<(), ProjectorError> {
        let tree = self.access_tree()?;
        let mut batch = sled::Batch::default();
        for row in rows {
            let cursor = row.cursor.bytes();
            let r = &row.record;
            batch.insert(record_key(&row.cursor), r.encode_to_vec());
            let mut index = |mut key: Vec<u8>| {
                key.extend_from_slice(&cursor);
                batch.insert(key, &[][..]);
            };
            index(vec![BY_TIME]);
            if let Ok(child) = r.child_id.parse::<ChildId>() {
                index(keyed(BY_CHILD, child.as_bytes(), false));
            }
            if !r.agency_id.is_empty() {
                index(keyed(BY_AGENCY, r.agency_id.as_bytes(), true));
            }
            if !r.principal_id.is_empty() {
                index(keyed(BY_PRINCIPAL, r.principal_id.as_bytes(), true));
            }
            if let Some((child, access)) = row.flag_access() {
                let mut key = keyed(FLAG, child.as_bytes(), false);
                key.extend_from_slice(&cursor);
                batch.insert(key, access.encode_to_vec());
            }
        }
        batch.insert(POSITION, &through_sequence.to_be_bytes());
        tree.apply_batch(batch)?;
        self.access_indexed.send_replace(through_sequence);
        Ok(())
    }

    /// Follows the access index's position (for a listing that must include everything AUDIT held when
    /// it was asked).
    pub fn subscribe_access_position(&self) -> tokio::sync::watch::Receiver<u64> {
        self.access_indexed.subscribe()
    }

    /// Up to `limit` records `selection` selects, newest first, strictly before `before` when given (a page
    /// token), with the cursor of the last one looked at. Costs what the narrowest index the selection names
    /// holds in the range, not the whole log.
    pub fn access_before(
        &self,
        selection: &AccessSelection,
        before: Option<AccessCursor>,
        limit: usize,
    ) -> Result<Vec<AccessRow>, ProjectorError> {
        let tree = self.access_tree()?;
        let prefix = selection.index_prefix();
        let bound = |cursor: AccessCursor| {
            let mut k = prefix.clone();
            k.extend_from_slice(&cursor.bytes());
            k
        };
        let low = bound(AccessCursor {
            at_ms: selection.from_ms.unwrap_or(0),
            sequence: 0,
            index: 0,
        });
        let to = selection.to_ms.map(|t| AccessCursor {
            at_ms: t,
            sequence: u64::MAX,
            index: u32::MAX,
        });
        let high = match (before, to) {
            (Some(b), Some(t)) => Some(b.min(t)),
            (b, t) => b.or(t),
        };
        let range = match high {
            // `before` is exclusive; the `to` cursor is above every record at that millisecond.
            Some(high) => tree.range(low..bound(high)),
            None => {
                let mut end = prefix.clone();
                end.extend_from_slice(&[0xff; CURSOR_LEN]);
                end.push(0xff);
                tree.range(low..end)
            }
        };
        let mut out = Vec::new();
        for kv in range.rev() {
            if out.len() == limit {
                break;
            }
            let (k, _) = kv?;
            let cursor = AccessCursor::from_key_tail(&k).ok_or_else(|| corrupt(&k, "a short index key"))?;
            let key = record_key(&cursor);
            let Some(v) = tree.get(&key)? else {
                return Err(corrupt(&k, "an index entry without its record"));
            };
            let record = pb::AccessRecord::decode(v.as_ref()).map_err(|e| corrupt(&key, e))?;
            let row = AccessRow { cursor, record };
            if selection.holds(&row) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The last `n` checks of `child`'s flag, most recent first.
    pub fn recent_flag_accesses(
        &self,
        child: ChildId,
        n: usize,
    ) -> Result<Vec<pb::FlagAccess>, ProjectorError> {
        let tree = self.access_tree()?;
        let mut out = Vec::new();
        for kv in tree
            .scan_prefix(keyed(FLAG, child.as_bytes(), false))
            .rev()
            .take(n)
        {
            let (k, v) = kv?;
            out.push(pb::FlagAccess::decode(v.as_ref()).map_err(|e| corrupt(&k, e))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(child: &ChildId, agency: &str, principal: &str, at_ms: i64, method: &str) -> pb::AccessRecord {
        pb::AccessRecord {
            child_id: child.to_string(),
            agency_id: agency.into(),
            principal_id: principal.into(),
            method: method.into(),
            outcome: pb::AccessOutcome::Permitted as i32,
            at: Some(halcyon_schema::convert::timestamp_from_millis(at_ms)),
            ..Default::default()
        }
    }

    fn message(records: Vec<pb::AccessRecord>) -> Vec<u8> {
        pb::AccessRecords { records }.encode_to_vec()
    }

    /// Records written in AUDIT order, and the listings computed by hand from what was written.
    #[test]
    fn listings_select_page_and_stay_exactly_once() {
        let p = Projector::temporary().unwrap();
        let (a, b) = (ChildId::from_bytes([1; 16]), ChildId::from_bytes([2; 16]));
        let t0 = 1_780_000_000_000;
        let m1 = message(vec![
            record(&a, "police-sy", "cert:pc1", t0, "GetChildView"),
            record(&b, "csc-sheffield", "cert:sw1", t0 + 5, "GetChildView"),
        ]);
        let m2 = message(vec![record(
            &a,
            "csc-sheffield",
            "cert:sw1",
            t0 + 10,
            "CheckFlag",
        )]);
        let m3 = message(vec![record(&a, "police-sy", "cert:pc2", t0 + 20, "GetChildView")]);
        let mut rows = AccessRow::of_message(1, &m1);
        rows.extend(AccessRow::of_message(2, &m2));
        p.index_access(2, &rows).unwrap();
        // The same messages again (a redelivery after a crash) and the next one.
        rows.extend(AccessRow::of_message(3, &m3));
        p.index_access(3, &rows).unwrap();
        assert_eq!(p.access_position().unwrap(), 3);

        let list = |s: AccessSelection, before: Option<AccessCursor>, limit: usize| -> Vec<(u64, u32)> {
            p.access_before(&s, before, limit)
                .unwrap()
                .iter()
                .map(|r| (r.cursor.sequence, r.cursor.index))
                .collect()
        };
        let of_child = AccessSelection {
            child: Some(a),
            ..Default::default()
        };
        assert_eq!(list(of_child.clone(), None, 10), vec![(3, 0), (2, 0), (1, 0)]);
        // Paging: two, then what is before the second.
        let first = p.access_before(&of_child, None, 2).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(list(of_child.clone(), Some(first[1].cursor), 2), vec![(1, 0)]);
        let police_of_a = AccessSelection {
            child: Some(a),
            agency: Some("police-sy".into()),
            ..Default::default()
        };
        assert_eq!(list(police_of_a, None, 10), vec![(3, 0), (1, 0)]);
        let sw1 = AccessSelection {
            principal: Some("cert:sw1".into()),
            ..Default::default()
        };
        assert_eq!(list(sw1, None, 10), vec![(2, 0), (1, 1)]);
        let period = AccessSelection {
            from_ms: Some(t0 + 5),
            to_ms: Some(t0 + 10),
            ..Default::default()
        };
        assert_eq!(list(period, None, 10), vec![(2, 0), (1, 1)]);
        let csc = AccessSelection {
            agency: Some("csc-sheffield".into()),
            to_ms: Some(t0 + 5),
            ..Default::default()
        };
        assert_eq!(list(csc, None, 10), vec![(1, 1)]);
        // Only the permitted flag check is a flag access.
        let flags = p.recent_flag_accesses(a, 25).unwrap();
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].agency_id, "csc-sheffield");
        assert!(p.recent_flag_accesses(b, 25).unwrap().is_empty());
    }

    #[test]
    fn tokens_read_back_and_refuse_what_they_did_not_make() {
        let c = AccessCursor {
            at_ms: 1_780_000_000_123,
            sequence: 42,
            index: 3,
        };
        assert_eq!(AccessCursor::parse_token(&c.token()), Some(c));
        for bad in ["", "1.2", "1.2.3.4", "x.2.3", "-1.2.3", "1.2.99999999999"] {
            assert_eq!(AccessCursor::parse_token(bad), None, "{bad}");
        }
    }
}
