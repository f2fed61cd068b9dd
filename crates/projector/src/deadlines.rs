//! The deadline projection (ARCHITECTURE.md, docs/domain.md §3): each child's statutory deadlines derived from its
//! facts with `halcyon-timescales`, an index of the open ones by due time (so a node's timer finds the next
//! one without scanning), and breach records.
//!
//! What is stored depends only on the facts and, for a breach still open, on whether the evaluation moment
//! has passed its due time — never on when a node happened to notice: a rebuild evaluated at the same
//! moment writes the same bytes.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `L` | child (16) | every deadline the child's facts start, with how each ended (`ChildDeadlines`) |
//! | `W` | due_ms (8) child (16) rule `/` event id | empty: an open deadline not yet recorded as breached |
//! | `B` | child (16) rule `/` event id | a breach (`StoredDeadline`): closed late, or open past its due time |
//!
//! Known gaps in the rule table, not invented here: T19 starts when the authority becomes aware of a
//! serious incident, which no event in the catalogue records (the rule is loaded but never starts); T13 is
//! expiry-only (an emergency protection order lapses; it is never breached, so it is neither indexed nor
//! recorded).

use std::collections::BTreeSet;
use std::sync::Arc;

use halcyon_schema::ChildId;
use halcyon_timescales::{Deadline, Occurrence, Resolution, Status, StopReason, Timescales, evaluate};
use prost::Message;
use tokio::sync::{broadcast, watch};

use crate::error::ProjectorError;
use crate::fact::Fact;
use crate::model::{Derived, ReadModel, Writes};
use crate::store::Projector;

pub use crate::keys::BREACHES;
pub use crate::keys::DEADLINES;
pub use crate::keys::DUE;

/// Breach notices kept for a slow listener before it is told it fell behind.
pub const NOTICES_BUFFERED_MAX: usize = 1024;

/// A fact a deadline names, by reference.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StoredFactRef {
    #[prost(string, tag = "1")]
    pub event_id: String,
    #[prost(int64, tag = "2")]
    pub at_ms: i64,
    #[prost(string, tag = "3")]
    pub event_type: String,
    #[prost(string, tag = "4")]
    pub agency_id: String,
    #[prost(string, tag = "5")]
    pub case_id: String,
}

/// How a deadline ended, as far as the facts say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Ending {
    /// No end event yet.
    Running = 0,
    /// The end event came (on time or late: compare `ended_by.at_ms` with `due_at_ms`).
    Met = 1,
    /// A stop event ended it.
    Stopped = 2,
    /// A further start of a restart rule replaced it.
    Superseded = 3,
    /// An expiry rule's clock (T13): it runs out, it is never breached.
    Expiry = 4,
}

/// One deadline as the facts alone decide it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StoredDeadline {
    #[prost(string, tag = "1")]
    pub rule_id: String,
    #[prost(message, optional, tag = "2")]
    pub started_by: Option<StoredFactRef>,
    /// The last millisecond on time.
    #[prost(int64, tag = "3")]
    pub due_at_ms: i64,
    #[prost(bool, tag = "4")]
    pub beyond_calendar: bool,
    #[prost(enumeration = "Ending", tag = "5")]
    pub ending: i32,
    /// The fact that met or stopped it.
    #[prost(message, optional, tag = "6")]
    pub ended_by: Option<StoredFactRef>,
}

impl StoredDeadline {
    /// `T01/<event id>`: the same deadline has the same key in every derivation.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.rule_id,
            self.started_by.as_ref().map_or("", |f| f.event_id.as_str())
        )
    }

    pub fn owner(&self) -> &str {
        self.started_by.as_ref().map_or("", |f| f.agency_id.as_str())
    }

    /// Still running (no end, not an expiry clock): the timer must watch its due time.
    pub fn is_running(&self) -> bool {
        self.ending() == Ending::Running
    }

    /// Ended by a fact after its due time: breached whatever the moment.
    pub fn closed_late(&self) -> bool {
        matches!(self.ending(), Ending::Met | Ending::Stopped | Ending::Superseded)
            && self.ended_by.as_ref().is_some_and(|f| f.at_ms > self.due_at_ms)
    }

    /// Breached at `now_ms`: closed late, or still running past its due time.
    pub fn breached_at(&self, now_ms: i64) -> bool {
        self.closed_late() || (self.is_running() && now_ms > self.due_at_ms)
    }
}

/// Every deadline of one child (value of an `L` key).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChildDeadlines {
    #[prost(message, repeated, tag = "1")]
    pub deadlines: Vec<StoredDeadline>,
}

/// A breach recorded or changed: for a node to tell watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreachNotice {
    pub child: ChildId,
    pub deadline: StoredDeadline,
}

/// The timescales a projector derives deadlines with, and the channels that tell a node about them.
#[derive(Debug)]
pub struct DeadlineSpec {
    pub timescales: Arc<Timescales>,
    /// Bumped whenever the due index may have gained an earlier entry: the timer re-reads its next due time.
    due_changed: watch::Sender<u64>,
    /// Breaches a derivation wrote or changed (a late end event closes one). Those the timer records are
    /// returned to it instead, so a catch-up of many cannot overrun this buffer.
    notices: broadcast::Sender<BreachNotice>,
}

impl DeadlineSpec {
    pub fn new(timescales: Arc<Timescales>) -> DeadlineSpec {
        DeadlineSpec {
            timescales,
            due_changed: watch::channel(0).0,
            notices: broadcast::channel(NOTICES_BUFFERED_MAX).0,
        }
    }

    pub fn subscribe_due(&self) -> watch::Receiver<u64> {
        self.due_changed.subscribe()
    }

    pub fn subscribe_notices(&self) -> broadcast::Receiver<BreachNotice> {
        self.notices.subscribe()
    }

    pub(crate) fn due_changed(&self) {
        self.due_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn notify(&self, notices: Vec<BreachNotice>) {
        for notice in notices {
            // No receivers is fine: nobody is listening.
            let _ = self.notices.send(notice);
        }
    }
}

/// The timescales' input from a child's stored facts, as their recording agencies corrected them (a fact
/// entered in error starts, meets and stops nothing).
pub fn occurrences(facts: &[Fact]) -> Vec<Occurrence> {
    crate::corrections::effective(facts)
        .iter()
        .filter_map(|f| {
            let kind = f.kind()?;
            Some(Occurrence::from_event(
                f.envelope.event_id.clone(),
                f.occurred_ms(),
                f.envelope.agency_id.clone(),
                f.envelope.case_id.clone(),
                kind,
            ))
        })
        .collect()
}

/// Every deadline the facts start, as the facts alone decide them (evaluated after the last fact, so every
/// end and stop the node holds counts; whether a running one is breached is the moment's question).
pub fn derive(timescales: &Timescales, facts: &[Fact]) -> ChildDeadlines {
    let evaluation = evaluate(timescales, &occurrences(facts), i64::MAX);
    ChildDeadlines {
        deadlines: evaluation.deadlines.iter().map(stored).collect(),
    }
}

fn fact_ref(f: &halcyon_timescales::FactRef) -> StoredFactRef {
    StoredFactRef {
        event_id: f.event_id.clone(),
        at_ms: f.at_ms,
        event_type: f.event_type.clone(),
        agency_id: f.agency_id.clone(),
        case_id: f.case_id.clone(),
    }
}

fn stop_ending(reason: StopReason) -> Ending {
    match reason {
        StopReason::StopEvent => Ending::Stopped,
        StopReason::Superseded => Ending::Superseded,
    }
}

fn stored(d: &Deadline) -> StoredDeadline {
    let (ending, ended_by) = match &d.status {
        // Evaluated at the end of time, a running clock reads as breached without a resolution (or, for an
        // expiry rule, expired); open cannot occur but is the same thing.
        Status::Open { .. } | Status::Breached { resolution: None, .. } => (Ending::Running, None),
        Status::Expired => (Ending::Expiry, None),
        Status::Met { by, .. }
        | Status::Breached {
            resolution: Some(Resolution::MetLate(by)),
            ..
        } => (Ending::Met, Some(fact_ref(by))),
        Status::Stopped { by, reason }
        | Status::Breached {
            resolution: Some(Resolution::Stopped(by, reason)),
            ..
        } => (stop_ending(*reason), Some(fact_ref(by))),
    };
    StoredDeadline {
        rule_id: d.rule.id.clone(),
        started_by: Some(fact_ref(&d.started_by)),
        due_at_ms: d.due_at_ms,
        beyond_calendar: d.beyond_calendar,
        ending: ending as i32,
        ended_by,
    }
}

/// Signed milliseconds mapped to an order-preserving unsigned big-endian value.
fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63)) as i64)
}

pub fn deadlines_key(child: &ChildId) -> Vec<u8> {
    let mut k = vec![DEADLINES];
    k.extend_from_slice(child.as_bytes());
    k
}

pub fn due_key(due_at_ms: i64, child: &ChildId, deadline_key: &str) -> Vec<u8> {
    let mut k = vec![DUE];
    k.extend_from_slice(&ordered_i64(due_at_ms));
    k.extend_from_slice(child.as_bytes());
    k.extend_from_slice(deadline_key.as_bytes());
    k
}

/// (due ms, child, deadline key) of a `W` key.
pub fn parse_due_key(k: &[u8]) -> Option<(i64, ChildId, String)> {
    if k.len() < 25 || k[0] != DUE {
        return None;
    }
    let due = from_ordered(&k[1..9])?;
    let child = ChildId::from_bytes(k[9..25].try_into().ok()?);
    Some((due, child, String::from_utf8_lossy(&k[25..]).into_owned()))
}

pub fn breaches_prefix(child: &ChildId) -> Vec<u8> {
    let mut k = vec![BREACHES];
    k.extend_from_slice(child.as_bytes());
    k
}

pub fn breach_key(child: &ChildId, deadline_key: &str) -> Vec<u8> {
    let mut k = breaches_prefix(child);
    k.extend_from_slice(deadline_key.as_bytes());
    k
}

/// Adds to `batch` the writes that make `child`'s deadlines those of `facts`: its `L` record, its `W`
/// entries (running, not yet recorded as breached) and its `B` records (closed late; running ones the
/// timer already recorded stay). Returns breaches that are new or changed, for notices, and whether an
/// index entry was added.
pub(crate) fn rederive(
    tree: &sled::Tree,
    batch: &mut Writes,
    timescales: &Timescales,
    child: &ChildId,
    facts: &[Fact],
) -> Result<(Vec<BreachNotice>, bool), ProjectorError> {
    let key = deadlines_key(child);
    // An old record that cannot be read is replaced by the new derivation (a due-index entry it leaves
    // behind is dropped when it falls due: `record_breaches`).
    if let Some(old) = tree.get(&key)?
        && let Ok(old) = ChildDeadlines::decode(old.as_ref())
    {
        for d in old.deadlines.iter().filter(|d| d.is_running()) {
            batch.remove(due_key(d.due_at_ms, child, &d.key()));
        }
    }
    let mut recorded = std::collections::BTreeMap::new();
    for kv in tree.scan_prefix(breaches_prefix(child)) {
        let (k, v) = kv?;
        if let Ok(old) = StoredDeadline::decode(v.as_ref()) {
            recorded.insert(k.to_vec(), old);
        }
    }
    let new = if facts.is_empty() {
        ChildDeadlines::default()
    } else {
        derive(timescales, facts)
    };
    let mut notices = Vec::new();
    let mut indexed = false;
    let mut kept = BTreeSet::new();
    for d in &new.deadlines {
        let bkey = breach_key(child, &d.key());
        let previous = recorded.get(&bkey);
        if d.closed_late() || (d.is_running() && previous.is_some()) {
            kept.insert(bkey.clone());
            if previous != Some(d) {
                batch.insert(bkey, d.encode_to_vec());
                notices.push(BreachNotice {
                    child: *child,
                    deadline: d.clone(),
                });
            }
        } else if d.is_running() {
            batch.insert(due_key(d.due_at_ms, child, &d.key()), Vec::<u8>::new());
            indexed = true;
        }
    }
    for k in recorded.keys().filter(|k| !kept.contains(*k)) {
        batch.remove(k.clone());
    }
    if new.deadlines.is_empty() {
        batch.remove(key);
    } else {
        batch.insert(key, new.encode_to_vec());
    }
    Ok((notices, indexed))
}

/// Deadlines as a read model: a child's deadlines (`L`), the due index (`W`) and breach records (`B`).
impl ReadModel for DeadlineSpec {
    fn prefixes(&self) -> &'static [u8] {
        &[DEADLINES, DUE, BREACHES]
    }

    fn derive(
        &self,
        tree: &sled::Tree,
        writes: &mut Writes,
        child: &ChildId,
        facts: &[Fact],
    ) -> Result<Derived, ProjectorError> {
        Ok(Box::new(rederive(tree, writes, &self.timescales, child, facts)?))
    }

    fn announce(&self, derived: Vec<Derived>) {
        let mut indexed = false;
        let mut notices = Vec::new();
        for d in derived {
            if let Ok(d) = d.downcast::<(Vec<BreachNotice>, bool)>() {
                let (n, i) = *d;
                notices.extend(n);
                indexed |= i;
            }
        }
        if indexed {
            self.due_changed();
        }
        self.notify(notices);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Breaches the timer records in one sled batch at most.
pub const RECORD_BATCH_MAX: usize = 1000;

impl Projector {
    /// Derives and stores each child's deadlines with `spec` whenever its views are derived.
    pub fn with_deadlines(self, spec: DeadlineSpec) -> Self {
        self.with_model(Arc::new(spec))
    }

    /// The deadline spec, when this projector derives deadlines.
    pub fn deadline_spec(&self) -> Option<&DeadlineSpec> {
        self.model::<DeadlineSpec>()
    }

    /// Derives and stores `child`'s deadlines from `facts` with `timescales`, exactly as `derive_views` does
    /// on a node (`L`, `W` and `B` keys; no notices), for a throwaway store that derives no views: as-of
    /// reconstruction and the chronology. Then `record_breaches(at)` records what a node's timer would have
    /// recorded by `at`.
    pub fn derive_child_deadlines(
        &self,
        timescales: &Timescales,
        child: &ChildId,
        facts: &[Fact],
    ) -> Result<(), ProjectorError> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut writes = Writes::default();
        rederive(&self.model, &mut writes, timescales, child, facts)?;
        let mut batch = sled::Batch::default();
        writes.apply_to(&mut batch);
        self.model.apply_batch(batch)?;
        Ok(())
    }

    /// The earliest due time of a running deadline not yet recorded as breached.
    pub fn next_due_ms(&self) -> Result<Option<i64>, ProjectorError> {
        for kv in self.model.scan_prefix([DUE]) {
            let (k, _) = kv?;
            match parse_due_key(&k) {
                Some((due_ms, _, _)) => return Ok(Some(due_ms)),
                None => self.damage.set_aside(&k, "a bad due key"),
            }
        }
        Ok(None)
    }

    /// Records as breaches the running deadlines due before `now_ms` (at most `RECORD_BATCH_MAX` per call;
    /// call again while it returns that many), removes them from the due index, and returns them for the
    /// caller to announce. A node that was down records on start every breach it missed; the record
    /// is the same whenever it is written.
    pub fn record_breaches(&self, now_ms: i64) -> Result<Vec<BreachNotice>, ProjectorError> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut batch = sled::Batch::default();
        let mut notices = Vec::new();
        for kv in self.model.scan_prefix([DUE]).take(RECORD_BATCH_MAX) {
            let (k, _) = kv?;
            let Some((due_ms, child, deadline_key)) = parse_due_key(&k) else {
                self.damage.set_aside(&k, "a bad due key");
                batch.remove(k.to_vec());
                continue;
            };
            if due_ms >= now_ms {
                break;
            }
            batch.remove(k.to_vec());
            let Some(deadline) = self
                .deadlines_of(&child)?
                .deadlines
                .into_iter()
                .find(|d| d.key() == deadline_key && d.is_running())
            else {
                continue; // an index entry outlived its deadline: drop it
            };
            batch.insert(breach_key(&child, &deadline_key), deadline.encode_to_vec());
            notices.push(BreachNotice { child, deadline });
        }
        self.model.apply_batch(batch)?;
        Ok(notices)
    }

    /// Records every breach due before `now_ms`, batch after batch (a rebuild or an export evaluates at the
    /// moment it runs, as the node's timer does); returns how many it recorded.
    pub fn record_all_breaches(&self, now_ms: i64) -> Result<usize, ProjectorError> {
        self.record_all_breaches_announcing(now_ms, |_| {})
    }

    /// [`Projector::record_all_breaches`], handing each batch's notices to `recorded` (the node's timer
    /// tells watchers). Stale index entries are dropped without a notice, so it goes on while anything is
    /// still due, not while batches come back full.
    pub fn record_all_breaches_announcing(
        &self,
        now_ms: i64,
        mut recorded: impl FnMut(Vec<BreachNotice>),
    ) -> Result<usize, ProjectorError> {
        let mut total = 0;
        loop {
            let notices = self.record_breaches(now_ms)?;
            total += notices.len();
            recorded(notices);
            if self.next_due_ms()?.is_none_or(|due| due >= now_ms) {
                return Ok(total);
            }
        }
    }

    /// Every deadline of `child`, as its facts decide them.
    pub fn deadlines_of(&self, child: &ChildId) -> Result<ChildDeadlines, ProjectorError> {
        let key = deadlines_key(child);
        match self.model.get(&key)? {
            None => Ok(ChildDeadlines::default()),
            Some(v) => Ok(ChildDeadlines::decode(v.as_ref()).unwrap_or_else(|e| {
                self.damage.set_aside(&key, e);
                ChildDeadlines::default()
            })),
        }
    }

    /// Up to `limit` recorded breaches, in (child, rule, start event) order, after the breach record whose key
    /// is `after` (a page token: [`Projector::breaches_page`] returns the key of the last record it looked
    /// at, `None` when no record follows). A page costs what it holds, however many breaches there are.
    #[allow(clippy::type_complexity)]
    pub fn breaches_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<BreachNotice>, Option<Vec<u8>>), ProjectorError> {
        use std::ops::Bound;
        let start = match after {
            Some(key) if key.first() == Some(&BREACHES) => Bound::Excluded(key.to_vec()),
            _ => Bound::Included(vec![BREACHES]),
        };
        let end = Bound::Excluded(vec![BREACHES + 1]);
        let mut out = Vec::new();
        let mut last = None;
        for kv in self.model.range::<Vec<u8>, _>((start, end)) {
            if out.len() == limit {
                return Ok((out, last));
            }
            let (k, v) = kv?;
            last = Some(k.to_vec());
            out.extend(self.breach_record(&k, &v));
        }
        Ok((out, None))
    }

    /// A stored breach record read back; a damaged one is set aside.
    fn breach_record(&self, k: &[u8], v: &[u8]) -> Option<BreachNotice> {
        let Some(child) = k.get(1..17).and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
            self.damage.set_aside(k, "a short breach key");
            return None;
        };
        match StoredDeadline::decode(v) {
            Ok(deadline) => Some(BreachNotice {
                child: ChildId::from_bytes(child),
                deadline,
            }),
            Err(e) => {
                self.damage.set_aside(k, e);
                None
            }
        }
    }

    /// Every recorded breach, in (child, rule, start event) order; only `child`'s when given.
    pub fn breaches(&self, child: Option<&ChildId>) -> Result<Vec<BreachNotice>, ProjectorError> {
        let prefix = child.map_or_else(|| vec![BREACHES], breaches_prefix);
        let mut out = Vec::new();
        for kv in self.model.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.extend(self.breach_record(&k, &v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_due_time_and_parse_back() {
        let c = ChildId::from_bytes([3; 16]);
        let mut keys = [
            due_key(10, &c, "T02/e"),
            due_key(-5, &c, "T01/e"),
            due_key(1_800_000_000_000, &c, "T03/e"),
        ];
        keys.sort();
        assert_eq!(parse_due_key(&keys[0]), Some((-5, c, "T01/e".into())));
        assert_eq!(
            parse_due_key(&keys[2]),
            Some((1_800_000_000_000, c, "T03/e".into()))
        );
    }
}
