//! The sled store: applying batches of messages exactly once, and reading facts, identities, checkpoints
//! and quarantine back.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use halcyon_schema::pb::event::Kind;
use halcyon_schema::validate::{CLOCK_TOLERANCE_MS, ValidEnvelope, check_times};
use halcyon_schema::{
    AgencyId, ChildId, NhsNumber, Problem, Upn, parse_event_subject, pb, validate_envelope,
};
use prost::Message;
use tokio::sync::watch;

use crate::error::ProjectorError;
pub use crate::fact::Fact;
use crate::keys;
use crate::model::{Derived, ReadModel, Writes};
use crate::quarantine::QuarantineRecord;
use crate::view::{ChildViews, ViewSpec};

/// One message from an agency stream, as the bus delivered it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub sequence: u64,
    pub subject: String,
    pub payload: Bytes,
    pub stored_at_ms: i64,
}

/// What a fact is stored as: where it came from and the envelope exactly as published (its bytes, never
/// decoded and encoded again; read back by [`decode_fact`]).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredFactRaw {
    #[prost(string, tag = "1")]
    stream: String,
    #[prost(uint64, tag = "2")]
    sequence: u64,
    #[prost(int64, tag = "3")]
    stored_at_ms: i64,
    #[prost(bytes = "bytes", tag = "4")]
    envelope: Bytes,
}

/// sled's page cache unless a node is told otherwise (`--sled-cache-mb`).
pub const SLED_CACHE_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;

/// An identifier a child can be looked up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    Nhs(NhsNumber),
    Upn(Upn),
    Local { agency: AgencyId, local_id: String },
}

impl Identifier {
    /// Its key in the identity index.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Nhs(n) => format!("nhs:{n}"),
            Self::Upn(u) => format!("upn:{u}"),
            Self::Local { agency, local_id } => format!("local:{agency}:{local_id}"),
        }
    }

    /// The child this identifier denotes unless a link event says otherwise.
    pub(crate) fn derived_child(&self) -> ChildId {
        match self {
            Self::Nhs(n) => ChildId::from_nhs(n),
            Self::Upn(u) => ChildId::from_upn(u),
            Self::Local { agency, local_id } => ChildId::from_local(agency, local_id),
        }
    }
}

/// What one `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub projected: u64,
    pub quarantined: u64,
    /// Events whose id had already been projected (re-sent after the dedupe window).
    pub duplicates: u64,
    /// Messages at or below the checkpoint (already applied before).
    pub skipped: u64,
    /// Children whose facts changed.
    pub children: BTreeSet<ChildId>,
    /// Facts projected by this batch: (child, event id), in stream order.
    pub new_facts: Vec<(ChildId, String)>,
}

type KeyValue = (Vec<u8>, Vec<u8>);

/// What re-applying one quarantined event did ([`Projector::reapply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reapplied {
    /// It passes now and was projected at its place in its stream.
    Projected,
    /// It passes now, but its event id was already projected from another message: recorded as a duplicate.
    Duplicate,
    /// It still fails: its quarantine record stays, with these reasons.
    StillRefused(Vec<Problem>),
    /// It was not (or no longer) quarantined on this node: nothing done.
    NotQuarantined,
}

/// Children whose views `derive_views` derives in one sled batch.
pub const VIEW_CHUNK: usize = 256;
/// Below twice this many children a chunk is derived on one thread (a thread costs more than it saves).
const DERIVE_SPLIT_MIN: usize = 16;

/// Writes pending for one batch, readable before they are applied.
struct Overlay<'a> {
    tree: &'a sled::Tree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Self {
            tree,
            pending: BTreeMap::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        match self.pending.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// Every (key, value) under `prefix`, pending writes included.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, sled::Error> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self
            .pending
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Calls `each` with every (key, value) under `prefix`, pending writes included, until it returns false.
    fn for_each_under(
        &self,
        prefix: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Result<bool, ProjectorError>,
    ) -> Result<(), ProjectorError> {
        for (k, v) in self
            .pending
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            if let Some(v) = v
                && !each(k, v)?
            {
                return Ok(());
            }
        }
        for kv in self.tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            // Pending writes replace (or remove) what the tree holds, and were visited above.
            if !self.pending.contains_key(k.as_ref()) && !each(&k, &v)? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.pending {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}

/// A batch of messages from one stream, decoded, checked and encoded for storage without the store or its
/// writer lock, so the next batch can be made ready while the previous one is applied
/// (`Projector::apply_prepared`). Nothing here depends on what the store holds.
#[derive(Debug)]
pub struct Prepared {
    stream: String,
    messages: Vec<Ready>,
    /// The digest of the last message's payload, kept with the checkpoint ([`message_digest`]).
    last_digest: Option<[u8; 32]>,
}

/// One message made ready.
#[derive(Debug)]
struct Ready {
    sequence: u64,
    checked: Checked,
}

#[derive(Debug)]
enum Checked {
    /// The record and its stored (JSON) form.
    Quarantined(Box<QuarantineRecord>, Vec<u8>),
    Valid(Box<ValidFact>),
}

/// What the store needs of a valid event.
#[derive(Debug)]
struct ValidFact {
    event_id: halcyon_schema::EventId,
    /// The identifier the fact is filed under (`primary_identifier`).
    identifier: Identifier,
    /// The link an `IdentifierLinked` event makes.
    link: Option<pb::IdentifierLinked>,
    /// An event the store checks against what it holds before applying it (a correction, an identity
    /// repair), with its subject for the quarantine record if it is refused.
    checked_by_store: Option<(StoreCheck, String)>,
    occurred_ms: i64,
    /// When the bus stored it.
    stored_at_ms: i64,
    agency: AgencyId,
    /// The `StoredFactRaw` as written: the envelope bytes as published.
    stored: Vec<u8>,
    /// Where the fact goes, when that does not depend on the store (filed by NHS number).
    filed: Option<Filed>,
}

/// What the store checks and does for an event beyond filing it.
#[derive(Debug)]
enum StoreCheck {
    Correction(Box<pb::RecordCorrected>),
    Unlink(pb::IdentifierUnlinked),
    Supersede(NhsNumber),
}

/// The child a fact is filed under, its key, and the hash of its key prefix (`Projector::moments`).
#[derive(Debug)]
struct Filed {
    child: ChildId,
    key: Vec<u8>,
    moment: u64,
}

impl Filed {
    fn new(child: ChildId, occurred_ms: i64, agency: &AgencyId, sequence: u64) -> Self {
        let key = keys::fact(&child, occurred_ms, agency.as_str(), sequence);
        Self {
            moment: moment_hash(keys::fact_sequence_prefix(&key)),
            child,
            key,
        }
    }
}

impl Prepared {
    /// Decodes and checks `messages` (consecutive, from `stream`) as the projector must; an event's times
    /// may lie at most `acceptance.future_tolerance_ms` after the time the bus stored it, and its schema
    /// version be at most `acceptance.schema_version_max` ([`Projector::acceptance`]).
    pub fn new(stream: &str, incoming: &[Incoming], acceptance: Acceptance) -> Self {
        let messages = incoming
            .iter()
            .map(|m| Ready {
                sequence: m.sequence,
                checked: ready(stream, m, acceptance),
            })
            .collect();
        Self {
            stream: stream.to_owned(),
            messages,
            last_digest: messages_last_digest(incoming),
        }
    }

    /// The stream the messages came from.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// How many messages the batch holds.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

fn messages_last_digest(messages: &[Incoming]) -> Option<[u8; 32]> {
    messages.last().map(|m| message_digest(&m.payload))
}

/// The digest a checkpoint keeps of the message it stands at (SHA-256 of the payload as stored), so that a
/// stream that went backwards — restored from an older snapshot, or recreated and written again — is
/// noticed even where its sequence has caught up again.
pub fn message_digest(payload: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(payload).into()
}

fn ready(stream: &str, m: &Incoming, acceptance: Acceptance) -> Checked {
    let valid = match check(m, acceptance) {
        Ok(valid) => valid,
        Err((problems, agency, event_id)) => {
            let record = QuarantineRecord {
                stream: stream.to_owned(),
                sequence: m.sequence,
                subject: m.subject.clone(),
                agency,
                event_id,
                problems,
                stored_at_ms: m.stored_at_ms,
            };
            let value = serde_json::to_vec(&record).expect("quarantine records serialise");
            return Checked::Quarantined(Box::new(record), value);
        }
    };
    let identifier = primary_identifier(&valid).expect("validation requires an identifier");
    let checked_by_store = match valid.kind() {
        Kind::RecordCorrected(c) => Some(StoreCheck::Correction(c.clone())),
        Kind::IdentifierUnlinked(u) => Some(StoreCheck::Unlink(u.clone())),
        Kind::NhsNumberSuperseded(s) => s.superseded_nhs_number.parse().ok().map(StoreCheck::Supersede),
        _ => None,
    }
    .map(|c| (c, m.subject.clone()));
    let link = match valid.kind() {
        Kind::IdentifierLinked(link) => Some(link.clone()),
        Kind::ContactReceived(_)
        | Kind::ReferralReceived(_)
        | Kind::ReferralDecisionRecorded(_)
        | Kind::ReferralAcknowledged(_)
        | Kind::AgencyCheckRequested(_)
        | Kind::AgencyCheckResponded(_)
        | Kind::AssessmentStarted(_)
        | Kind::AssessmentCompleted(_)
        | Kind::StrategyDiscussionHeld(_)
        | Kind::Section47EnquiryStarted(_)
        | Kind::Section47EnquiryConcluded(_)
        | Kind::InitialConferenceHeld(_)
        | Kind::ChildProtectionPlanStarted(_)
        | Kind::CategoryChanged(_)
        | Kind::ChildProtectionPlanEnded(_)
        | Kind::CoreGroupMeetingHeld(_)
        | Kind::ReviewConferenceHeld(_)
        | Kind::LookedAfterPeriodStarted(_)
        | Kind::LookedAfterPeriodEnded(_)
        | Kind::LookedAfterReviewHeld(_)
        | Kind::PoliceProtectionStarted(_)
        | Kind::PoliceProtectionEnded(_)
        | Kind::EmergencyProtectionOrderMade(_)
        | Kind::MissingEpisodeReported(_)
        | Kind::MissingEpisodeClosed(_)
        | Kind::ReturnHomeInterviewCompleted(_)
        | Kind::AttendanceConcernRecorded(_)
        | Kind::ExclusionRecorded(_)
        | Kind::HealthAttendanceRecorded(_)
        | Kind::PoliceIntelligenceRecorded(_)
        | Kind::ExploitationIndicatorRecorded(_)
        | Kind::ConcernRecorded(_)
        | Kind::InvolvementStarted(_)
        | Kind::InvolvementEnded(_)
        | Kind::ConsentRecorded(_)
        | Kind::ConsentWithdrawn(_)
        | Kind::ConsentExemptionRecorded(_)
        | Kind::ShareDecisionRecorded(_)
        | Kind::OriginatorApprovalGranted(_)
        | Kind::RecordCorrected(_)
        | Kind::SeriousIncidentNotified(_)
        | Kind::RapidReviewCompleted(_)
        | Kind::BreakGlassReviewed(_)
        | Kind::SignalOutcomeRecorded(_)
        | Kind::IdentifierUnlinked(_)
        | Kind::NhsNumberSuperseded(_) => None,
    };
    let stored = StoredFactRaw {
        stream: stream.to_owned(),
        sequence: m.sequence,
        stored_at_ms: m.stored_at_ms,
        envelope: m.payload.clone(),
    };
    let filed = match &identifier {
        id @ Identifier::Nhs(_) => Some(Filed::new(
            id.derived_child(),
            valid.occurred_at_ms,
            &valid.agency,
            m.sequence,
        )),
        _ => None,
    };
    Checked::Valid(Box::new(ValidFact {
        event_id: valid.event_id,
        identifier,
        link,
        checked_by_store,
        occurred_ms: valid.occurred_at_ms,
        stored_at_ms: m.stored_at_ms,
        agency: valid.agency,
        stored: stored.encode_to_vec(),
        filed,
    }))
}

/// What a projector accepts beyond an envelope's own validity. Every node and rebuild of a deployment must
/// use the same values, as for the policy: otherwise they would project different facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acceptance {
    /// How far an event's times may lie after the time the bus stored it.
    pub future_tolerance_ms: i64,
    /// The newest envelope schema version the deployment has enabled. A rolling upgrade where nodes move
    /// first keeps it at the version before until every node runs the new build, so that all nodes judge
    /// every envelope alike; envelopes quarantined meanwhile are re-applied with `halcyon quarantine
    /// reapply` once it is raised.
    pub schema_version_max: u32,
}

/// The read models of one node.
#[derive(Debug)]
pub struct Projector {
    /// One writer at a time: a batch reads what earlier batches wrote (event ids, identity links).
    pub(crate) writer: std::sync::Mutex<()>,
    db: sled::Db,
    pub(crate) model: sled::Tree,
    positions: watch::Sender<BTreeMap<String, u64>>,
    /// How far the derived read models (views, deadlines, signals) are current: the positions applied when
    /// the last derivation pass began ([`Self::derive_views`]). Read your writes waits on it
    /// ([`Self::wait_for_derived`]).
    derived: watch::Sender<BTreeMap<String, u64>>,
    /// Hashes of the key prefixes (child, occurred at, agency) facts are stored under, so that the search
    /// for a re-sent event's first copy (a sled range scan, which copies a whole leaf) is made only where a
    /// fact may be. Loaded from the fact keys by the first `apply`; a stale or colliding entry costs only a
    /// scan. Locked under `writer`.
    moments: std::sync::Mutex<Option<HashSet<u64>>>,
    /// Records that could not be read back, set aside (see `damage.rs`).
    pub(crate) damage: crate::damage::Damage,
    /// How far an event's times may lie after the time the bus stored it before it is quarantined as
    /// future-dated. Every node and rebuild of a deployment must use the same value, as for the policy.
    future_tolerance_ms: i64,
    /// The newest envelope schema version this deployment has enabled (see [`Acceptance`]).
    schema_version_max: u32,
    /// The read models derived with a child's views, in the same batch: deadlines, signals (see
    /// [`ReadModel`]).
    models: Vec<Arc<dyn ReadModel>>,
    /// The AUDIT sequence the access index has reached (`access_index.rs`).
    pub(crate) access_indexed: watch::Sender<u64>,
    /// Some NHS number was superseded (`NhsNumberSuperseded`): facts filed by NHS number consult the
    /// identity index (otherwise a number denotes its own child, with no read).
    superseded: std::sync::atomic::AtomicBool,
}

impl Projector {
    /// Opens (or creates) the read models in `path`.
    pub fn open(path: &Path) -> Result<Self, ProjectorError> {
        Self::open_with_cache(path, SLED_CACHE_BYTES_DEFAULT)
    }

    /// [`Projector::open`] with sled's page cache held to `cache_bytes` (sled's own default is 1 GiB,
    /// which a node would fill and keep).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, ProjectorError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|source| ProjectorError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Self::with_db(db)
    }

    /// Read models that vanish when dropped (tests, benchmarks, as-of reconstruction).
    pub fn temporary() -> Result<Self, ProjectorError> {
        Self::with_db(
            sled::Config::new()
                .temporary(true)
                .cache_capacity(SLED_CACHE_BYTES_DEFAULT)
                .open()?,
        )
    }

    fn with_db(db: sled::Db) -> Result<Self, ProjectorError> {
        let model = db.open_tree("model")?;
        let mut positions = BTreeMap::new();
        for kv in model.scan_prefix([keys::CHECKPOINT]) {
            let (k, v) = kv?;
            let stream = String::from_utf8_lossy(&k[1..]).into_owned();
            positions.insert(stream, keys::decode_u64(&v[..v.len().min(8)]).unwrap_or_default());
        }
        let (positions, _) = watch::channel(positions);
        let (derived, _) = watch::channel(BTreeMap::new());
        // Stores from before the access index kept only flag checks, in a tree the index replaces (and fills
        // again from AUDIT).
        db.drop_tree("flag-accesses")?;
        let (access_indexed, _) = watch::channel(crate::access_index::stored_position(&db)?);
        let superseded = model
            .scan_prefix(keys::identity("nhs:"))
            .next()
            .transpose()?
            .is_some();
        Ok(Self {
            superseded: std::sync::atomic::AtomicBool::new(superseded),
            access_indexed,
            writer: std::sync::Mutex::new(()),
            db,
            model,
            positions,
            derived,
            moments: std::sync::Mutex::new(None),
            damage: crate::damage::Damage::default(),
            future_tolerance_ms: CLOCK_TOLERANCE_MS,
            schema_version_max: halcyon_schema::SCHEMA_VERSION,
            models: Vec::new(),
        })
    }

    /// Quarantines events whose times lie more than `ms` after the time the bus stored them (default
    /// [`CLOCK_TOLERANCE_MS`]).
    pub fn with_future_tolerance_ms(mut self, ms: i64) -> Self {
        self.future_tolerance_ms = ms;
        self
    }

    /// See [`Projector::with_future_tolerance_ms`].
    pub fn future_tolerance_ms(&self) -> i64 {
        self.future_tolerance_ms
    }

    /// Quarantines envelopes of a schema version newer than `version` (default: the newest this build
    /// knows), as a node of the release before would: see [`Acceptance::schema_version_max`].
    pub fn with_schema_version_max(mut self, version: u32) -> Self {
        self.schema_version_max = version;
        self
    }

    /// What this projector accepts beyond the envelope's own validity.
    pub fn acceptance(&self) -> Acceptance {
        Acceptance {
            future_tolerance_ms: self.future_tolerance_ms,
            schema_version_max: self.schema_version_max,
        }
    }

    /// Derives `model` with every child's views from now on, in the same batch (`with_deadlines`,
    /// `with_signals`).
    pub fn with_model(mut self, model: Arc<dyn ReadModel>) -> Self {
        self.models.push(model);
        self
    }

    /// The registered read model of type `M`, if any.
    pub fn model<M: ReadModel>(&self) -> Option<&M> {
        self.models.iter().find_map(|m| m.as_any().downcast_ref::<M>())
    }

    /// Derives and stores per-agency views with `spec` from now on.
    pub fn with_views(self, spec: ViewSpec) -> Self {
        self.with_model(Arc::new(spec))
    }

    /// The last sequence applied from `stream` (0: nothing yet).
    pub fn checkpoint(&self, stream: &str) -> u64 {
        self.positions.borrow().get(stream).copied().unwrap_or(0)
    }

    /// The digest of the message at `stream`'s checkpoint ([`message_digest`]), if the checkpoint keeps one
    /// (checkpoints written before digests were kept do not).
    pub fn checkpoint_digest(&self, stream: &str) -> Result<Option<[u8; 32]>, ProjectorError> {
        Ok(self
            .model
            .get(keys::checkpoint(stream))?
            .and_then(|v| v.get(8..40).and_then(|d| d.try_into().ok())))
    }

    pub fn checkpoints(&self) -> BTreeMap<String, u64> {
        self.positions.borrow().clone()
    }

    pub fn subscribe_positions(&self) -> watch::Receiver<BTreeMap<String, u64>> {
        self.positions.subscribe()
    }

    /// Waits until every `(stream, sequence)` has been applied and the read models derived from it — the
    /// facts, and the views, deadlines and signals of every child they changed — or fails after `timeout`.
    /// What a query carrying positions waits for: its answer then reflects the caller's writes everywhere,
    /// once the pass covering them is done (no fixed sleep; a pass starts up to the node's settle time after
    /// a batch). A projector with no derived models waits for the facts alone.
    pub async fn wait_for_derived(
        &self,
        wanted: &[(String, u64)],
        timeout: Duration,
    ) -> Result<(), ProjectorError> {
        if self.models.is_empty() {
            return self.wait_for(wanted, timeout).await;
        }
        wait_until(&self.derived, wanted, timeout, |stream, derived| {
            format!("applied {}, derived {derived}", self.checkpoint(stream))
        })
        .await
    }

    /// Waits until every `(stream, sequence)` has been applied, or fails after `timeout`.
    pub async fn wait_for(&self, wanted: &[(String, u64)], timeout: Duration) -> Result<(), ProjectorError> {
        wait_until(&self.positions, wanted, timeout, |_, at| format!("at {at}")).await
    }

    /// Applies a batch of consecutive messages from one stream, with that stream's checkpoint, atomically.
    /// Messages at or below the checkpoint are skipped, so a redelivered batch changes nothing.
    pub fn apply(&self, stream: &str, messages: &[Incoming]) -> Result<ApplyOutcome, ProjectorError> {
        self.apply_prepared(Prepared::new(stream, messages, self.acceptance()))
    }

    /// Applies a batch made ready by `Prepared::new`, with its stream's checkpoint, atomically (as `apply`).
    /// Only what depends on the store (the checkpoint, event ids already projected, identity links) is
    /// decided here, under the writer lock.
    pub fn apply_prepared(&self, prepared: Prepared) -> Result<ApplyOutcome, ProjectorError> {
        let Prepared {
            stream,
            messages,
            last_digest,
        } = prepared;
        let stream = stream.as_str();
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut last = self.checkpoint(stream);
        // Streams deny deletes, so sequences are contiguous: a gap means messages were skipped in transit.
        if let Some(first) = messages.iter().map(|m| m.sequence).find(|s| *s > last)
            && first != last + 1
        {
            return Err(ProjectorError::Gap {
                stream: stream.to_owned(),
                expected: last + 1,
                got: first,
            });
        }
        let mut moments = self.moments_loaded()?;
        let moments = moments.as_mut().expect("loaded");
        let mut overlay = Overlay::new(&self.model);
        let mut outcome = ApplyOutcome::default();
        let n_messages = messages.len();
        let batch_end = messages.last().map(|m| m.sequence);
        for m in messages {
            if m.sequence <= last {
                outcome.skipped += 1;
                continue;
            }
            last = m.sequence;
            self.apply_one(stream, m, &mut overlay, moments, &mut outcome)?;
        }
        if outcome.skipped as usize == n_messages {
            return Ok(outcome);
        }
        if !self.models.is_empty() {
            // Views are derived later, once per child however many batches touched it (`derive_views`);
            // the list of children to derive is written with the facts, so a crash cannot lose it.
            if !outcome.children.is_empty() {
                let children: Vec<u8> = outcome.children.iter().flat_map(|c| *c.as_bytes()).collect();
                overlay.put(keys::position(keys::STALE_VIEWS, stream, last), children);
            }
        }
        let mut checkpoint = last.to_be_bytes().to_vec();
        if let Some(digest) = last_digest
            && batch_end == Some(last)
        {
            checkpoint.extend_from_slice(&digest);
        }
        overlay.put(keys::checkpoint(stream), checkpoint);
        self.model.apply_batch(overlay.into_batch())?;
        self.positions.send_modify(|p| {
            p.insert(stream.to_owned(), last);
        });
        Ok(outcome)
    }

    /// The fact moments (see `moments`), loaded from the fact keys on first use. Call with the writer lock.
    fn moments_loaded(&self) -> Result<std::sync::MutexGuard<'_, Option<HashSet<u64>>>, ProjectorError> {
        let mut moments = self
            .moments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if moments.is_none() {
            *moments = Some(self.fact_moments()?);
        }
        Ok(moments)
    }

    /// Re-checks quarantined events with what this build and its [`Acceptance`] know now (after an upgrade,
    /// or once a deployment raised its schema version), and projects each that passes at its own place in
    /// its stream, as it would have been projected on arrival: its quarantine record is removed and its
    /// child's views are marked for derivation (`derive_views`). One that still fails keeps its record,
    /// with today's reasons. `messages` are the quarantined messages of `stream` as the stream holds them.
    /// Idempotent: a message with no quarantine record is left alone, so a second run projects nothing.
    pub fn reapply(
        &self,
        stream: &str,
        messages: &[Incoming],
    ) -> Result<Vec<(u64, Reapplied)>, ProjectorError> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut moments = self.moments_loaded()?;
        let moments = moments.as_mut().expect("loaded");
        let acceptance = self.acceptance();
        let mut overlay = Overlay::new(&self.model);
        let mut results = Vec::with_capacity(messages.len());
        let mut children = BTreeSet::new();
        for m in messages {
            let key = keys::position(keys::QUARANTINE, stream, m.sequence);
            if overlay.get(&key)?.is_none() {
                results.push((m.sequence, Reapplied::NotQuarantined));
                continue;
            }
            let prepared = Ready {
                sequence: m.sequence,
                checked: ready(stream, m, acceptance),
            };
            if let Checked::Quarantined(record, value) = &prepared.checked {
                overlay.put(key, value.clone());
                results.push((m.sequence, Reapplied::StillRefused(record.problems.clone())));
                continue;
            }
            overlay.remove(key.clone());
            let mut outcome = ApplyOutcome::default();
            self.apply_one(stream, prepared, &mut overlay, moments, &mut outcome)?;
            let result = if outcome.quarantined > 0 {
                // Refused by what the store knows (a correction of another agency's fact, say).
                let record: QuarantineRecord = overlay
                    .get(&key)?
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .ok_or_else(|| corrupt(&key, "a quarantine record just written cannot be read"))?;
                Reapplied::StillRefused(record.problems)
            } else if outcome.duplicates > 0 {
                Reapplied::Duplicate
            } else {
                Reapplied::Projected
            };
            children.extend(outcome.children);
            results.push((m.sequence, result));
        }
        if !children.is_empty() && !self.models.is_empty() {
            let list: Vec<u8> = children.iter().flat_map(|c| *c.as_bytes()).collect();
            let last = messages.last().map_or(0, |m| m.sequence);
            overlay.put(
                keys::position(keys::STALE_VIEWS, &format!("reapplied:{stream}"), last),
                list,
            );
        }
        self.model.apply_batch(overlay.into_batch())?;
        Ok(results)
    }

    /// Derives the views of every child whose facts changed since its views were last derived: reads the
    /// lists the batches left, derives each child once (`VIEW_CHUNK` children per sled batch, the writer
    /// lock held per chunk so ingest goes on between chunks), then removes the lists it read. Returns how
    /// many children it derived (0: all current). A crash part-way leaves the lists, so the work is redone;
    /// views depend only on each child's set of facts, so when and how often this runs changes nothing in
    /// the result.
    pub fn derive_views(&self) -> Result<usize, ProjectorError> {
        if self.models.is_empty() {
            return Ok(0);
        }
        // Every batch applied by now left its list of changed children in the same sled batch as its
        // checkpoint, so the lists read below cover these positions (and perhaps more).
        let covered = self.checkpoints();
        let mut lists = Vec::new();
        let mut children = BTreeSet::new();
        for kv in self.model.scan_prefix([keys::STALE_VIEWS]) {
            let (marker, list) = kv?;
            if list.len() % 16 != 0 {
                return Err(corrupt(
                    &marker,
                    "a stale-view list that is not 16-byte child ids",
                ));
            }
            children.extend(
                list.chunks_exact(16)
                    .map(|c| ChildId::from_bytes(c.try_into().expect("16 bytes"))),
            );
            lists.push(marker);
        }
        let children: Vec<ChildId> = children.into_iter().collect();
        for chunk in children.chunks(VIEW_CHUNK) {
            let _writer = self
                .writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut batch = sled::Batch::default();
            let mut derived: Vec<Vec<Derived>> = self.models.iter().map(|_| Vec::new()).collect();
            for per_model in self.read_and_derive(chunk)? {
                for ((writes, d), derived) in per_model.into_iter().zip(&mut derived) {
                    writes.apply_to(&mut batch);
                    derived.push(d);
                }
            }
            self.model.apply_batch(batch)?;
            for (model, derived) in self.models.iter().zip(derived) {
                model.announce(derived);
            }
        }
        if !lists.is_empty() {
            let mut batch = sled::Batch::default();
            for marker in lists {
                batch.remove(marker);
            }
            self.model.apply_batch(batch)?;
        }
        self.derived.send_modify(|d| {
            for (stream, sequence) in covered {
                let at = d.entry(stream).or_default();
                *at = (*at).max(sequence);
            }
        });
        Ok(children.len())
    }

    /// Every model's derivation of each child, in `children`'s order. Both cores share the work: reading and
    /// decoding facts and deriving the models are pure reads of the store, so the order of the writes that
    /// follow, and so the read models, are the same as from one thread.
    fn read_and_derive(&self, children: &[ChildId]) -> Result<Vec<Vec<(Writes, Derived)>>, ProjectorError> {
        let one = |part: &[ChildId]| {
            part.iter()
                .map(|child| {
                    let facts = self.facts(child)?;
                    self.models
                        .iter()
                        .map(|model| {
                            let mut writes = Writes::default();
                            let derived = model.derive(&self.model, &mut writes, child, &facts)?;
                            Ok((writes, derived))
                        })
                        .collect::<Result<Vec<_>, ProjectorError>>()
                })
                .collect::<Result<Vec<_>, ProjectorError>>()
        };
        if children.len() < 2 * DERIVE_SPLIT_MIN {
            return one(children);
        }
        let (first, second) = children.split_at(children.len() / 2);
        std::thread::scope(|scope| {
            let second = scope.spawn(|| one(second));
            let mut all = one(first)?;
            all.extend(
                second
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            );
            Ok(all)
        })
    }

    /// Derives views until none is stale (after a rebuild, before an export); returns how many it derived.
    pub fn derive_all_views(&self) -> Result<usize, ProjectorError> {
        let mut total = 0;
        loop {
            match self.derive_views()? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Whether some child's views await derivation.
    pub fn views_stale(&self) -> Result<bool, ProjectorError> {
        Ok(self
            .model
            .scan_prefix([keys::STALE_VIEWS])
            .next()
            .transpose()?
            .is_some())
    }

    fn apply_one(
        &self,
        stream: &str,
        m: Ready,
        overlay: &mut Overlay<'_>,
        moments: &mut HashSet<u64>,
        outcome: &mut ApplyOutcome,
    ) -> Result<(), ProjectorError> {
        let valid = match m.checked {
            Checked::Valid(valid) => *valid,
            Checked::Quarantined(record, value) => {
                tracing::warn!(stream, sequence = m.sequence, reasons = %record.reasons(), "event quarantined");
                overlay.put(keys::position(keys::QUARANTINE, stream, m.sequence), value);
                outcome.quarantined += 1;
                return Ok(());
            }
        };
        let superseded = self.superseded.load(std::sync::atomic::Ordering::Acquire);
        let Filed { child, key, moment } = match valid.filed {
            // An NHS number denotes its own child unless it was superseded (then the index says which).
            Some(filed) if !superseded => filed,
            _ => Filed::new(
                resolve_in(overlay, &valid.identifier)?,
                valid.occurred_ms,
                &valid.agency,
                m.sequence,
            ),
        };
        // A re-send (after the stream's dedupe window) is filed under the same child, time and agency as
        // its first copy, so the facts under that key prefix (almost always none) are all there is to check.
        let maybe_copy = !moments.insert(moment);
        if maybe_copy
            && let Some(first) = projected_copy(overlay, keys::fact_sequence_prefix(&key), &valid.event_id)?
        {
            tracing::debug!(
                stream,
                sequence = m.sequence,
                "event id already projected; recorded as duplicate"
            );
            overlay.put(keys::position(keys::DUPLICATE, stream, m.sequence), first);
            outcome.duplicates += 1;
            return Ok(());
        }
        if let Some((check, subject)) = &valid.checked_by_store {
            let at = (valid.stored_at_ms, m.sequence);
            let refused = match check {
                StoreCheck::Correction(c) => self
                    .correction_refused(overlay, &child, stream, m.sequence, &valid.agency, c)?
                    .map(|r| ("event.record_corrected.corrected_event_id", r)),
                StoreCheck::Unlink(u) => self
                    .unlink(overlay, child, &valid.agency, u, at, moments, outcome)?
                    .map(|r| ("event.identifier_unlinked", r)),
                StoreCheck::Supersede(old) => self
                    .supersede(overlay, child, &valid.agency, old, at, moments, outcome)?
                    .map(|r| ("event.nhs_number_superseded.superseded_nhs_number", r)),
            };
            if let Some((field, reason)) = refused {
                let record = QuarantineRecord {
                    stream: stream.to_owned(),
                    sequence: m.sequence,
                    subject: subject.clone(),
                    agency: Some(valid.agency.to_string()),
                    event_id: Some(valid.event_id.to_string()),
                    problems: vec![halcyon_schema::validate::Problem::Invalid {
                        field: field.into(),
                        reason,
                    }],
                    stored_at_ms: valid.stored_at_ms,
                };
                tracing::warn!(stream, sequence = m.sequence, reasons = %record.reasons(), "event refused by the store; quarantined");
                let value = serde_json::to_vec(&record).expect("quarantine records serialise");
                overlay.put(keys::position(keys::QUARANTINE, stream, m.sequence), value);
                outcome.quarantined += 1;
                return Ok(());
            }
        }
        if let Some(link) = &valid.link {
            let at = (valid.stored_at_ms, m.sequence);
            self.link(overlay, child, link, at, moments, outcome)?;
        }
        overlay.put(key, valid.stored);
        outcome.projected += 1;
        outcome.children.insert(child);
        outcome.new_facts.push((child, valid.event_id.to_string()));
        Ok(())
    }

    /// Why a correction (published by `agency` at `stream`/`sequence`, filed under `child`) may not be
    /// applied, if it may not: the corrected event must be among the child's facts, recorded by the same
    /// agency, not itself a correction, and a replacement of its kind ([`crate::corrections::refusal`]).
    fn correction_refused(
        &self,
        overlay: &Overlay<'_>,
        child: &ChildId,
        stream: &str,
        sequence: u64,
        agency: &AgencyId,
        correction: &pb::RecordCorrected,
    ) -> Result<Option<String>, ProjectorError> {
        for (key, value) in overlay.scan_prefix(&keys::child_facts_prefix(child))? {
            let target = decode_fact(&key, &value)?;
            if target.envelope.event_id != correction.corrected_event_id {
                continue;
            }
            let this = Fact {
                stream: stream.to_owned(),
                sequence,
                stored_at_ms: 0,
                envelope: pb::Envelope {
                    agency_id: agency.to_string(),
                    ..Default::default()
                },
                corrected: None,
            };
            return Ok(crate::corrections::refusal(&target, &this, correction));
        }
        Ok(Some(format!(
            "corrects event {}, which is not among this child's facts (a correction names the same child as \
             the event it corrects)",
            correction.corrected_event_id
        )))
    }

    /// Undoes a link of the identifiers `unlink` names to `child`: each points again at the child it derives,
    /// and the facts that reached `child` only through it move back there (as a link moves them). Refused
    /// unless `agency` published an `IdentifierLinked` of that identifier about this child: only the agency
    /// that linked an identifier may unlink it (its link is earlier in its own stream, so the check gives the
    /// same answer however the streams are interleaved).
    #[allow(clippy::too_many_arguments)]
    fn unlink(
        &self,
        overlay: &mut Overlay<'_>,
        child: ChildId,
        agency: &AgencyId,
        unlink: &pb::IdentifierUnlinked,
        at: (i64, u64),
        moments: &mut HashSet<u64>,
        outcome: &mut ApplyOutcome,
    ) -> Result<Option<String>, ProjectorError> {
        let mut linked = (false, false);
        for (key, value) in overlay.scan_prefix(&keys::child_facts_prefix(&child))? {
            let fact = decode_fact(&key, &value)?;
            if fact.envelope.agency_id != agency.as_str() {
                continue;
            }
            if let Some(Kind::IdentifierLinked(l)) = fact.kind() {
                linked.0 |= !unlink.upn.is_empty() && l.upn == unlink.upn;
                linked.1 |= !unlink.local_id.is_empty()
                    && l.local_id == unlink.local_id
                    && l.local_agency_id == unlink.local_agency_id;
            }
        }
        if (!unlink.upn.is_empty() && !linked.0) || (!unlink.local_id.is_empty() && !linked.1) {
            return Ok(Some(format!(
                "{agency} linked no such identifier to this child; only the agency that linked an identifier \
                 may unlink it"
            )));
        }
        for (upn, local) in [
            (unlink.upn.as_str(), None),
            (
                "",
                Some((unlink.local_agency_id.as_str(), unlink.local_id.as_str())),
            ),
        ] {
            let one = pb::IdentifierLinked {
                upn: upn.to_owned(),
                local_agency_id: local.map(|l| l.0.to_owned()).unwrap_or_default(),
                local_id: local.map(|l| l.1.to_owned()).unwrap_or_default(),
                reason: String::new(),
            };
            let id = if let Ok(upn) = one.upn.parse::<Upn>() {
                Identifier::Upn(upn)
            } else if let (Ok(agency), false) =
                (one.local_agency_id.parse::<AgencyId>(), one.local_id.is_empty())
            {
                Identifier::Local {
                    agency,
                    local_id: one.local_id.clone(),
                }
            } else {
                continue;
            };
            self.link(overlay, id.derived_child(), &one, at, moments, outcome)?;
        }
        Ok(None)
    }

    /// `child`'s NHS number supersedes `old`: the old number (and every identifier that denoted its child)
    /// denotes `child` from now on, and every fact of the old number's child moves to `child`, keeping where
    /// it was when (`history.rs`). Refused unless `agency` had recorded something about the old number (it
    /// knows both records; its own earlier facts are in its own stream, so the answer does not depend on how
    /// the streams interleave).
    #[allow(clippy::too_many_arguments)]
    fn supersede(
        &self,
        overlay: &mut Overlay<'_>,
        child: ChildId,
        agency: &AgencyId,
        old: &NhsNumber,
        (at_ms, at_sequence): (i64, u64),
        moments: &mut HashSet<u64>,
        outcome: &mut ApplyOutcome,
    ) -> Result<Option<String>, ProjectorError> {
        use crate::history::link_history_key;
        let old_id = Identifier::Nhs(old.clone());
        let from = resolve_in(overlay, &old_id)?;
        if from == child {
            return Ok(None);
        }
        let facts = overlay.scan_prefix(&keys::child_facts_prefix(&from))?;
        let mut known = false;
        let mut decoded = Vec::with_capacity(facts.len());
        for (key, value) in facts {
            let fact = decode_fact(&key, &value)?;
            known |= fact.envelope.agency_id == agency.as_str();
            decoded.push((key, value, fact));
        }
        if !known {
            return Ok(Some(format!(
                "{agency} recorded nothing about the superseded number; only an agency that holds both records \
                 may merge them"
            )));
        }
        // Every identifier that denoted the old record denotes the merged one.
        let mut repointed = vec![old_id];
        for (key, value) in overlay.scan_prefix(&[keys::IDENTITY])? {
            if value == from.as_bytes() {
                let text = String::from_utf8_lossy(&key[1..]).into_owned();
                if let Some(id) = identifier_from_key(&text)
                    && !repointed.contains(&id)
                {
                    repointed.push(id);
                }
            }
        }
        for id in &repointed {
            overlay.put(keys::identity(&id.key()), child.as_bytes().to_vec());
            overlay.put(
                link_history_key(id, at_ms, at_sequence),
                child.as_bytes().to_vec(),
            );
        }
        for (key, value, fact) in decoded {
            move_fact(
                overlay,
                (&key, value),
                &fact,
                (from, child),
                (at_ms, at_sequence),
                moments,
            )?;
        }
        outcome.children.insert(from);
        outcome.children.insert(child);
        self.superseded.store(true, std::sync::atomic::Ordering::Release);
        Ok(None)
    }

    /// Points a UPN or agency-local id at `child`, moving the facts that reached this child only through
    /// that identifier (events without an NHS number). Never triggered by a matching number alone.
    fn link(
        &self,
        overlay: &mut Overlay<'_>,
        child: ChildId,
        link: &pb::IdentifierLinked,
        (at_ms, link_sequence): (i64, u64),
        moments: &mut HashSet<u64>,
        outcome: &mut ApplyOutcome,
    ) -> Result<(), ProjectorError> {
        use crate::history::link_history_key;
        let mut identifiers = Vec::new();
        if let Ok(upn) = link.upn.parse::<Upn>() {
            identifiers.push(Identifier::Upn(upn));
        }
        if let (Ok(agency), false) = (link.local_agency_id.parse::<AgencyId>(), link.local_id.is_empty()) {
            identifiers.push(Identifier::Local {
                agency,
                local_id: link.local_id.clone(),
            });
        }
        for id in identifiers {
            let old = resolve_in(overlay, &id)?;
            overlay.put(keys::identity(&id.key()), child.as_bytes().to_vec());
            overlay.put(
                link_history_key(&id, at_ms, link_sequence),
                child.as_bytes().to_vec(),
            );
            if old == child {
                continue;
            }
            let prefix = keys::child_facts_prefix(&old);
            for (key, value) in overlay.scan_prefix(&prefix)? {
                let fact = decode_fact(&key, &value)?;
                let routed_by_this = fact.envelope.child.as_ref().is_some_and(|c| {
                    c.nhs_number.is_empty()
                        && match &id {
                            Identifier::Upn(u) => c.upn == u.as_str(),
                            Identifier::Local { agency, local_id } => {
                                fact.envelope.agency_id == agency.as_str() && &c.local_id == local_id
                            }
                            Identifier::Nhs(_) => false,
                        }
                });
                if routed_by_this {
                    move_fact(
                        overlay,
                        (&key, value),
                        &fact,
                        (old, child),
                        (at_ms, link_sequence),
                        moments,
                    )?;
                    // Both children's read models change (the destination is not the event's own child when
                    // a link is undone).
                    outcome.children.insert(old);
                    outcome.children.insert(child);
                }
            }
        }
        Ok(())
    }

    /// The hashed key prefixes of every stored fact (`moments`).
    fn fact_moments(&self) -> Result<HashSet<u64>, ProjectorError> {
        let mut moments = HashSet::new();
        for kv in self.model.scan_prefix([keys::FACT]) {
            let (key, _) = kv?;
            moments.insert(moment_hash(keys::fact_sequence_prefix(&key)));
        }
        Ok(moments)
    }

    /// The child an identifier denotes now.
    pub fn resolve(&self, id: &Identifier) -> Result<ChildId, ProjectorError> {
        Ok(resolve_in(&Overlay::new(&self.model), id)?)
    }

    /// A child's facts in (occurred at, agency, sequence) order.
    ///
    /// A fact that cannot be read back is set aside ([`Projector::damaged`]) and left out: the rest of the
    /// child's record still answers.
    pub fn facts(&self, child: &ChildId) -> Result<Vec<Fact>, ProjectorError> {
        let mut facts = Vec::new();
        for kv in self.model.scan_prefix(keys::child_facts_prefix(child)) {
            let (k, v) = kv?;
            match decode_fact(&k, &v) {
                Ok(fact) => facts.push(fact),
                Err(e) => self.damage.set_aside(&k, reason_of(e)),
            }
        }
        Ok(facts)
    }

    /// Every stored fact, child by child (each child's in its order). For reports over a small store (one
    /// agency's stream); a node's whole history is better read child by child.
    pub fn all_facts(&self) -> Result<Vec<Fact>, ProjectorError> {
        let mut facts = Vec::new();
        for kv in self.model.scan_prefix([keys::FACT]) {
            let (k, v) = kv?;
            match decode_fact(&k, &v) {
                Ok(fact) => facts.push(fact),
                Err(e) => self.damage.set_aside(&k, reason_of(e)),
            }
        }
        Ok(facts)
    }

    /// Records that could not be read back since the read models were opened, each set aside with its key
    /// and reason; a rebuild from the streams replaces them.
    pub fn damaged(&self) -> Vec<crate::damage::DamagedRecord> {
        self.damage.records()
    }

    /// What `agency` may see of `child` under its standing entitlements (empty without views).
    pub fn view(
        &self,
        agency: &AgencyId,
        child: &ChildId,
    ) -> Result<Vec<crate::view::ViewEntry>, ProjectorError> {
        let key = keys::views(child);
        let Some(bytes) = self.model.get(&key)? else {
            return Ok(Vec::new());
        };
        match ChildViews::decode(bytes.as_ref()) {
            Ok(views) => Ok(views.entries(agency.as_str())),
            Err(e) => {
                self.damage.set_aside(&key, e);
                Ok(Vec::new())
            }
        }
    }

    /// Quarantined events, all or one publishing agency's, in stream order.
    pub fn quarantine(&self, agency: Option<&AgencyId>) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        let mut out = Vec::new();
        for kv in self.model.scan_prefix([keys::QUARANTINE]) {
            let (k, v) = kv?;
            let record: QuarantineRecord = match serde_json::from_slice(&v) {
                Ok(record) => record,
                Err(e) => {
                    self.damage.set_aside(&k, e);
                    continue;
                }
            };
            if agency.is_none_or(|a| record.agency.as_deref() == Some(a.as_str())) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Counts of projected facts, quarantined and duplicate messages.
    pub fn counts(&self) -> Result<(u64, u64, u64), ProjectorError> {
        let count = |p: u8| -> Result<u64, sled::Error> {
            let mut n = 0;
            for kv in self.model.scan_prefix([p]) {
                kv?;
                n += 1;
            }
            Ok(n)
        };
        Ok((
            count(keys::FACT)?,
            count(keys::QUARANTINE)?,
            count(keys::DUPLICATE)?,
        ))
    }

    /// A deterministic dump of every read model: one line per record, in key order, as hex. Two nodes (or a
    /// node and a rebuild) that projected the same events produce byte-identical exports.
    pub fn export(&self, out: &mut dyn Write) -> Result<(), ProjectorError> {
        for kv in self.model.iter() {
            let (k, v) = kv?;
            writeln!(
                out,
                "{} {} {}",
                k[0] as char,
                hex::encode(&k[1..]),
                hex::encode(&v)
            )?;
        }
        Ok(())
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), ProjectorError> {
        self.db.flush()?;
        Ok(())
    }

    /// The sled database (for the trees beside the read models, e.g. `crate::access_index`).
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Where the read models' bytes go: for each key prefix ([`keys::PREFIXES`]), its records and the bytes
    /// of their keys and values, and the same for the trees beside the read models (by name).
    pub fn bytes_by_prefix(&self) -> Result<Vec<(String, u64, u64)>, ProjectorError> {
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for kv in self.model.iter() {
            let (k, v) = kv?;
            let name = keys::PREFIXES
                .iter()
                .find(|(p, _)| *p == k[0])
                .map_or_else(|| format!("{:?}", k[0] as char), |(_, what)| (*what).to_owned());
            let e = by.entry(name).or_default();
            e.0 += 1;
            e.1 += (k.len() + v.len()) as u64;
        }
        for name in self.db.tree_names() {
            if name.as_ref() == b"model" || name.as_ref() == b"__sled__default" {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            let e = by
                .entry(format!("tree {}", String::from_utf8_lossy(&name)))
                .or_default();
            for kv in tree.iter() {
                let (k, v) = kv?;
                e.0 += 1;
                e.1 += (k.len() + v.len()) as u64;
            }
        }
        Ok(by
            .into_iter()
            .map(|(name, (n, bytes))| (name, n, bytes))
            .collect())
    }

    pub fn size_on_disk(&self) -> Result<u64, ProjectorError> {
        Ok(self.db.size_on_disk()?)
    }
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> ProjectorError {
    ProjectorError::Corrupt {
        key: hex::encode(key),
        reason: e.to_string(),
    }
}

/// Reads a stored fact back: the wrapper, then the envelope from the bytes exactly as published, with the
/// same decoder (and so the same limits: prost's recursion limit of 100 nested messages or groups, the
/// payload size NATS allowed) that validated it before it was stored. What was accepted can always be
/// read: nothing wraps the envelope's own nesting in an extra level.
pub(crate) fn decode_fact(key: &[u8], value: &[u8]) -> Result<Fact, ProjectorError> {
    let stored = StoredFactRaw::decode(value).map_err(|e| corrupt(key, e))?;
    if stored.envelope.is_empty() {
        return Err(corrupt(key, "fact without envelope"));
    }
    // Stored as published; read as the current shape (an older accepted version upcast).
    let envelope =
        halcyon_schema::upcast(pb::Envelope::decode(stored.envelope).map_err(|e| corrupt(key, e))?);
    Ok(Fact {
        stream: stored.stream,
        sequence: stored.sequence,
        stored_at_ms: stored.stored_at_ms,
        envelope,
        corrected: None,
    })
}

/// The reason of a read error, for the damage list.
pub(crate) fn reason_of(e: ProjectorError) -> String {
    match e {
        ProjectorError::Corrupt { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Moves one stored fact (`key`, `value`, decoded as `fact`) from one child to another by an identity
/// change made at `at` (stored time, stream sequence), keeping where it was filed when, so that a child's
/// facts as they stood before can be told (`history.rs`): where it was filed first, if it never moved before,
/// and where now.
fn move_fact(
    overlay: &mut Overlay<'_>,
    (key, value): (&[u8], Vec<u8>),
    fact: &Fact,
    (from, to): (ChildId, ChildId),
    (at_ms, at_sequence): (i64, u64),
    moments: &mut HashSet<u64>,
) -> Result<(), sled::Error> {
    use crate::history::{move_key, move_value, moved_key, moves_prefix};
    let moves = moves_prefix(&fact.stream, fact.sequence);
    if overlay.scan_prefix(&moves)?.is_empty() {
        overlay.put(
            move_key(&fact.stream, fact.sequence, fact.stored_at_ms, 0),
            move_value(&from, key),
        );
    }
    overlay.put(
        move_key(&fact.stream, fact.sequence, at_ms, at_sequence),
        move_value(&to, key),
    );
    overlay.put(moved_key(&from, &fact.stream, fact.sequence), Vec::new());
    overlay.put(moved_key(&to, &fact.stream, fact.sequence), Vec::new());
    let moved = prefix_swapped(key, &to);
    moments.insert(moment_hash(keys::fact_sequence_prefix(&moved)));
    overlay.remove(key.to_vec());
    overlay.put(moved, value);
    Ok(())
}

/// The identifier an identity-index key names (`Identifier::key`).
fn identifier_from_key(key: &str) -> Option<Identifier> {
    if let Some(n) = key.strip_prefix("nhs:") {
        return n.parse().ok().map(Identifier::Nhs);
    }
    if let Some(u) = key.strip_prefix("upn:") {
        return u.parse().ok().map(Identifier::Upn);
    }
    let (agency, local_id) = key.strip_prefix("local:")?.split_once(':')?;
    Some(Identifier::Local {
        agency: agency.parse().ok()?,
        local_id: local_id.to_owned(),
    })
}

/// The same fact key under another child.
fn prefix_swapped(key: &[u8], child: &ChildId) -> Vec<u8> {
    let mut k = keys::child_facts_prefix(child);
    k.extend_from_slice(&key[17..]);
    k
}

fn resolve_in(overlay: &Overlay<'_>, id: &Identifier) -> Result<ChildId, sled::Error> {
    Ok(match overlay.get(&keys::identity(&id.key()))? {
        Some(bytes) if bytes.len() == 16 => ChildId::from_bytes(bytes.try_into().expect("16 bytes")),
        _ => id.derived_child(),
    })
}

/// A fact key prefix (`keys::fact_sequence_prefix`) hashed for `Projector::moments`.
fn moment_hash(prefix: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    prefix.hash(&mut hasher);
    hasher.finish()
}

/// Waits until `positions` reach every `(stream, sequence)` of `wanted`, or fails after `timeout` naming
/// each position not reached, with `describe(stream, where it is)`.
async fn wait_until(
    positions: &watch::Sender<BTreeMap<String, u64>>,
    wanted: &[(String, u64)],
    timeout: Duration,
    describe: impl Fn(&str, u64) -> String,
) -> Result<(), ProjectorError> {
    let at = |p: &BTreeMap<String, u64>, s: &str| p.get(s).copied().unwrap_or(0);
    let mut rx = positions.subscribe();
    if let Ok(Ok(_)) = tokio::time::timeout(
        timeout,
        rx.wait_for(|p| wanted.iter().all(|(s, q)| at(p, s) >= *q)),
    )
    .await
    {
        return Ok(());
    }
    let now = positions.borrow().clone();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(s, q)| at(&now, s) < *q)
        .map(|(s, q)| format!("{s}:{q} ({})", describe(s, at(&now, s))))
        .collect();
    Err(ProjectorError::NotYet {
        waited_ms: timeout.as_millis() as u64,
        missing: missing.join(", "),
    })
}

/// Where the copy of `event_id` already projected under `prefix` (a fact key without its sequence) came
/// from, as a duplicate record's value (stream 0 sequence); pending writes included.
fn projected_copy(
    overlay: &Overlay<'_>,
    prefix: &[u8],
    event_id: &halcyon_schema::EventId,
) -> Result<Option<Vec<u8>>, ProjectorError> {
    let mut found = None;
    overlay.for_each_under(prefix, |key, value| {
        let stored = StoredFactRaw::decode(value).map_err(|e| corrupt(key, e))?;
        let envelope = pb::Envelope::decode(stored.envelope).map_err(|e| corrupt(key, e))?;
        if envelope.event_id.parse::<halcyon_schema::EventId>().ok().as_ref() == Some(event_id) {
            found = Some(keys::position(keys::DUPLICATE, &stored.stream, stored.sequence)[1..].to_vec());
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// The identifier a fact is filed under: the NHS number when the agency gave one, else the UPN, else its
/// own local id.
fn primary_identifier(valid: &ValidEnvelope) -> Option<Identifier> {
    if let Some(nhs) = &valid.nhs {
        return Some(Identifier::Nhs(nhs.clone()));
    }
    if let Some(upn) = &valid.upn {
        return Some(Identifier::Upn(upn.clone()));
    }
    valid.local_id.as_ref().map(|local_id| Identifier::Local {
        agency: valid.agency.clone(),
        local_id: local_id.clone(),
    })
}

type Rejection = (Vec<Problem>, Option<String>, Option<String>);

/// Re-validates a message as the projector must: subject, decoding, envelope, and that the envelope speaks
/// for the agency whose subject it arrived on.
fn check(m: &Incoming, acceptance: Acceptance) -> Result<ValidEnvelope, Rejection> {
    let Acceptance {
        future_tolerance_ms,
        schema_version_max,
    } = acceptance;
    let subject = parse_event_subject(&m.subject);
    let subject_agency = subject.as_ref().ok().map(|(a, _)| a.to_string());
    if m.payload.len() > halcyon_schema::validate::ENVELOPE_BYTES_MAX {
        let problems = vec![Problem::Invalid {
            field: "payload".into(),
            reason: format!(
                "{} bytes, over the limit of {}",
                m.payload.len(),
                halcyon_schema::validate::ENVELOPE_BYTES_MAX
            ),
        }];
        return Err((problems, subject_agency, None));
    }
    let envelope = match pb::Envelope::decode(m.payload.as_ref()) {
        Ok(e) => e,
        Err(e) => {
            let mut problems = vec![Problem::Undecodable {
                reason: e.to_string(),
            }];
            if let Err(e) = &subject {
                problems.push(Problem::BadSubject {
                    reason: e.to_string(),
                });
            }
            return Err((problems, subject_agency, None));
        }
    };
    let event_id = (!envelope.event_id.is_empty()).then(|| envelope.event_id.clone());
    let mut problems = Vec::new();
    match &subject {
        Err(e) => problems.push(Problem::BadSubject {
            reason: e.to_string(),
        }),
        Ok((agency, case)) => {
            if envelope.agency_id != agency.as_str() {
                problems.push(Problem::AgencyMismatch {
                    claimed: envelope.agency_id.clone(),
                    subject_agency: agency.to_string(),
                });
            }
            if envelope.case_id != case.as_str() && !envelope.case_id.is_empty() {
                problems.push(Problem::Invalid {
                    field: "case_id".into(),
                    reason: format!(
                        "envelope says {:?} but the subject says {:?}",
                        envelope.case_id,
                        case.as_str()
                    ),
                });
            }
        }
    }
    match validate_envelope(envelope) {
        Ok(valid) => {
            problems.extend(check_times(
                valid.occurred_at_ms,
                valid.recorded_at_ms,
                m.stored_at_ms,
                future_tolerance_ms,
            ));
            if valid.published_version > schema_version_max {
                problems.push(Problem::UnknownSchemaVersion {
                    version: valid.published_version,
                    known: schema_version_max,
                    oldest: halcyon_schema::SCHEMA_VERSION_OLDEST,
                });
            }
            if problems.is_empty() {
                Ok(valid)
            } else {
                Err((problems, subject_agency, event_id))
            }
        }
        Err(mut more) => {
            problems.append(&mut more);
            Err((problems, subject_agency, event_id))
        }
    }
}
