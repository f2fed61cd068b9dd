//! The multi-agency chronology of a child, as a case review needs it: every fact in time order with its
//! originating agency and category, for each agency *from when it could see it*, the accesses to the
//! child's record, the statutory deadlines breached and the signals fired — with who could know of each, and
//! from when. The model only: `halcyon audit chronology` renders it as text, CSV or one HTML page.
//!
//! The facts come from the streams, not from a node: the agency streams are projected into a throwaway
//! store (`project_streams`, the path of `rebuild` and as-of reconstruction), so no node has to be stopped
//! or trusted, the identity links and ordering are the projector's own, and an as-of moment gives the
//! chronology as it stood then. Visibility is the standing view of each registered agency (purpose
//! safeguarding, as `ViewSpec` derives it): walking the child's facts in (occurred at, agency, sequence)
//! order, the views are derived again once per change of the child's sharing state, and an agency "could
//! see" a fact from the moment the fact occurred or the moment the change that entitled it occurred (until a
//! later change withdrew it). Each derivation is decided with the policy in force at its moment (the policy
//! history, as `audit as-of` decides with the policy in force at the moment asked about): the moments of
//! the time axis are when facts occurred, so a fact's visibility is decided with the policy in force when it
//! occurred, and the views are derived again at each moment a new policy came into force, which can entitle
//! an agency to facts it could not see before or withdraw them. Before the history's first policy came into
//! force nobody could see anything through Halcyon. Every entry names the policy in force when it
//! occurred, every period of visibility the one in force when it began. Accesses are the AUDIT stream's
//! records about the child.
//!
//! Statutory deadline breaches are marked on the time axis when they first happened (the first moment after
//! the due time), with the rule, the start fact, how late and what closed them: the child's deadlines as
//! they stood at the as-of moment (or now), derived by the deadline projection's own code
//! (`as_of::deadlines_at`, as `audit as-of` shows them). An agency could know of a breach once it could see
//! the start fact. Multi-agency signals are marked when they first fired (`as_of::signals_at`, the signal
//! projection's own derivation), citing facts by their number in the chronology, with the agencies that
//! could receive each and from when: addressed by the rule (its kind, or the lead authority then) and
//! entitled by the policy in force then to the signal category (safeguarding) on the child's sharing state
//! then.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_nats::jetstream;
use halcyon_bus::BusError;
use halcyon_policy::{AgencyKind, PolicyHistory, Principal, Purpose, Role};
use halcyon_projector::{
    Fact, Identifier, Projector, ProjectorError, SharingState, SignalSpec, StoredSignal, ViewSpec,
};
use halcyon_schema::convert::timestamp_millis;
use halcyon_schema::pb;
use halcyon_schema::{AgencyId, Category, ChildId, EventKindExt, Registry};
use halcyon_timescales::Timescales;

use crate::access_trail::{LocatedRecord, access_records};
use crate::as_of::{DeadlineThen, Standing, deadlines_at, signal_permit, signals_at};
use crate::rebuild::{Progress, RebuildError, Until, project_streams};
pub use crate::replay::ChildMatch;

/// What a chronology is built from, besides the streams.
#[derive(Debug, Clone)]
pub struct ChronologyRequest<'a> {
    pub child: ChildMatch,
    /// `None`: everything the streams hold.
    pub as_of_ms: Option<i64>,
    pub registry: &'a Registry,
    /// Which policy was in force when: each moment of the chronology is decided with the one in force then
    /// (`PolicyHistory::single` to decide everything with one file).
    pub policies: &'a PolicyHistory,
    pub timescales: &'a Timescales,
    pub signal_spec: &'a SignalSpec,
    /// Events that occurred later than they were recorded by more than this are quarantined, as a node does.
    pub future_tolerance_ms: i64,
    /// The moment the chronology is generated (the end of its time axis without an as-of moment).
    pub now_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChronologyError {
    #[error("projecting the streams: {0}")]
    Streams(#[from] RebuildError),
    #[error("reading the AUDIT stream: {0}")]
    Audit(#[from] BusError),
    #[error(transparent)]
    ReadModels(#[from] ProjectorError),
    #[error("no facts about that child in the streams ({read} events read){}", if *.as_of { " by the as-of moment" } else { "" })]
    NoFacts { read: u64, as_of: bool },
}

/// Reads the agency streams (to `as_of_ms`) and the AUDIT stream, and builds the chronology of the child.
pub async fn reconstruct(
    js: &jetstream::Context,
    request: &ChronologyRequest<'_>,
    progress: Progress<'_>,
) -> Result<Chronology, ChronologyError> {
    let projector = Arc::new(Projector::temporary()?.with_future_tolerance_ms(request.future_tolerance_ms));
    let until = request.as_of_ms.map_or(Until::End, Until::StoredAt);
    let read = project_streams(js, &projector, &until, progress).await?;
    let child = match &request.child {
        ChildMatch::Nhs(nhs) => projector.resolve(&Identifier::Nhs(nhs.clone()))?,
        ChildMatch::Id(id) => *id,
    };
    let facts = projector.facts(&child)?;
    if facts.is_empty() {
        return Err(ChronologyError::NoFacts {
            read,
            as_of: request.as_of_ms.is_some(),
        });
    }
    let accesses = access_records(js)
        .await?
        .into_iter()
        .filter_map(|r| access_about(r, child))
        .filter(|a| request.as_of_ms.is_none_or(|t| a.at_ms <= t))
        .collect();
    build(request, &projector, child, &facts, accesses)
}

/// The chronology of the child from read models that hold the history (a review store kept current, or a
/// node's): the child's facts as they stood at the as-of moment (`Projector::facts_at`) and its access
/// records from the index of the access log, so it costs what the child's history costs. Gives what
/// [`reconstruct`] gives from the streams.
pub fn reconstruct_held(
    store: &Projector,
    request: &ChronologyRequest<'_>,
) -> Result<Chronology, ChronologyError> {
    let at_ms = request.as_of_ms.unwrap_or(i64::MAX);
    let child = match &request.child {
        ChildMatch::Nhs(nhs) => store.resolve_at(&Identifier::Nhs(nhs.clone()), at_ms)?,
        ChildMatch::Id(id) => *id,
    };
    let facts = store.facts_at(&child, at_ms)?;
    if facts.is_empty() {
        return Err(ChronologyError::NoFacts {
            read: store.checkpoints().values().sum(),
            as_of: request.as_of_ms.is_some(),
        });
    }
    let selection = halcyon_projector::access_index::AccessSelection {
        child: Some(child),
        to_ms: request.as_of_ms,
        ..Default::default()
    };
    let accesses = crate::access_trail::indexed_records(store, &selection)?
        .into_iter()
        .filter_map(|r| access_about(r, child))
        .collect();
    build(request, &Projector::temporary()?, child, &facts, accesses)
}

/// The chronology of `child` from its facts and accesses; its deadlines are derived in `deadline_store` (a
/// store without a deadline model of its own).
fn build(
    request: &ChronologyRequest<'_>,
    deadline_store: &Projector,
    child: ChildId,
    facts: &[Fact],
    accesses: Vec<Access>,
) -> Result<Chronology, ChronologyError> {
    let until_ms = request.as_of_ms.unwrap_or(request.now_ms);
    let deadlines = deadlines_at(deadline_store, request.timescales, child, facts, until_ms)?;
    let signals = signals_at(request.signal_spec, facts, until_ms);
    let views = PolicyViews::for_facts(request.policies, request.registry, facts, until_ms);
    Ok(Chronology::build(
        &views,
        request.registry,
        child,
        facts,
        accesses,
        request.as_of_ms,
        request.now_ms,
    )
    .with_breaches(&deadlines)
    .with_signals(&views, request.signal_spec, facts, &signals.signals, until_ms))
}

/// A policy the chronology was decided with, and from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMark {
    pub version: String,
    /// The name of the file it was loaded from (without its folder).
    pub file: String,
    /// When it came into force; `None`: always (one policy file forced, `PolicyHistory::single`).
    pub in_force_from_ms: Option<i64>,
}

/// The policies in force over a stretch of time, oldest first, each with the view specification its
/// decisions are made with: what a chronology decides each moment with.
#[derive(Debug, Clone)]
pub struct PolicyViews {
    marks: Vec<PolicyMark>,
    /// `i64::MIN` for a policy in force always.
    from_ms: Vec<i64>,
    specs: Vec<ViewSpec>,
    /// Every registered agency, in id order.
    agencies: Vec<(AgencyId, AgencyKind)>,
}

impl PolicyViews {
    /// The policies of `history` in force at some moment from `from_ms` to `until_ms`.
    pub fn new(history: &PolicyHistory, registry: &Registry, from_ms: i64, until_ms: i64) -> Self {
        let entries = history.entries();
        let mut views = Self {
            marks: Vec::new(),
            from_ms: Vec::new(),
            specs: Vec::new(),
            agencies: registry.iter().map(|a| (a.id.clone(), a.kind)).collect(),
        };
        for (i, e) in entries.iter().enumerate() {
            let ended_before = entries
                .get(i + 1)
                .is_some_and(|next| next.in_force_from_ms <= from_ms);
            if ended_before || e.in_force_from_ms > until_ms {
                continue;
            }
            views.marks.push(PolicyMark {
                version: e.policy.version().to_owned(),
                file: std::path::Path::new(e.policy.file_name())
                    .file_name()
                    .map_or_else(
                        || e.policy.file_name().to_owned(),
                        |n| n.to_string_lossy().into_owned(),
                    ),
                in_force_from_ms: (e.in_force_from_ms != i64::MIN).then_some(e.in_force_from_ms),
            });
            views.from_ms.push(e.in_force_from_ms);
            views
                .specs
                .push(ViewSpec::new(Arc::new(e.policy.clone()), registry));
        }
        views
    }

    /// The policies in force from the first of `facts` (in time order) to `until_ms` or the last of them.
    pub fn for_facts(history: &PolicyHistory, registry: &Registry, facts: &[Fact], until_ms: i64) -> Self {
        let first = facts.first().map_or(until_ms, Fact::occurred_ms);
        let last = facts.last().map_or(until_ms, Fact::occurred_ms);
        Self::new(history, registry, first.min(until_ms), until_ms.max(last))
    }

    /// The policy (index into [`PolicyViews::marks`]) in force at `at_ms`; `None` before the first.
    pub fn at(&self, at_ms: i64) -> Option<usize> {
        self.from_ms.partition_point(|from| *from <= at_ms).checked_sub(1)
    }

    /// The views' specification under policy `i`.
    pub fn spec(&self, i: usize) -> &ViewSpec {
        &self.specs[i]
    }

    pub fn marks(&self) -> &[PolicyMark] {
        &self.marks
    }

    /// The moments a policy came into force after `after_ms`, with the policy, in time order.
    fn coming_into_force_after(&self, after_ms: i64) -> impl Iterator<Item = (i64, usize)> + '_ {
        self.from_ms
            .iter()
            .enumerate()
            .filter(move |(_, from)| **from > after_ms)
            .map(|(i, from)| (*from, i))
    }
}

/// One agency's lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub agency: String,
    /// The registry's name, or the id for an agency that is not registered.
    pub name: String,
}

/// A stretch of time during which an agency could see a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ms: i64,
    /// `None`: still visible at the end of the chronology.
    pub until_ms: Option<i64>,
    /// What entitled the agency from `from_ms`, when not the fact itself.
    pub because: Option<Because>,
    /// The policy (index into `Chronology::policies`) in force when the period began, which decided it.
    pub policy: usize,
}

/// What entitled an agency to a fact it could not see before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Because {
    /// A later fact (index into `facts`) that changed the child's sharing state.
    Fact(usize),
    /// The period's policy coming into force.
    Policy,
}

/// One fact of the chronology.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub occurred_ms: i64,
    /// When the agency's system recorded it, as the envelope says.
    pub recorded_ms: Option<i64>,
    /// When the NATS server stored it: from then on Halcyon held it.
    pub stored_ms: i64,
    pub agency: String,
    pub case_id: String,
    pub category: Option<Category>,
    pub event_type: String,
    pub event_id: String,
    pub stream: String,
    pub sequence: u64,
    /// The policy (index into `Chronology::policies`) in force when it occurred; `None`: none was yet.
    pub policy: Option<usize>,
    /// For each lane (same order as `Chronology::lanes`), when that agency could see this fact.
    pub visible: Vec<Vec<Period>>,
    /// Set when the recording agency corrected this fact (or withdrew it as entered in error) by the
    /// chronology's moment: the entry stands as recorded, struck through from the correction on.
    pub corrected: Option<halcyon_projector::corrections::Correction>,
}

/// One access to the child's record, from the AUDIT stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub at_ms: i64,
    pub agency: String,
    pub role: String,
    pub purpose: String,
    pub method: String,
    pub outcome: String,
    pub facts_disclosed: u32,
    pub facts_withheld: u32,
    pub categories: Vec<Category>,
    pub break_glass: bool,
    pub record_id: String,
    pub audit_sequence: u64,
}

/// A statutory deadline breached, marked when it first was.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// When it was first breached: the first millisecond after its due time.
    pub at_ms: i64,
    /// `T01/<start event id>`.
    pub key: String,
    pub rule_id: String,
    pub rule_name: String,
    /// `1 working day`.
    pub limit: String,
    /// The agency whose deadline it was: the one that recorded the start fact.
    pub agency: String,
    pub case_id: String,
    pub start_event_type: String,
    pub start_event_id: String,
    /// The start fact (index into `facts`).
    pub start_fact: Option<usize>,
    pub due_ms: i64,
    /// `still open`, `met late`, `stopped late`, `superseded late`.
    pub state: String,
    /// How late, as a person counts it in the rule's unit (`2 days`, `1 working day`, `3 hours`): to the
    /// fact that closed it, or to the end of the chronology while open.
    pub late: String,
    /// The breach in words: `met 2 days late`, `stopped 1 working day late`, `overdue by 3 hours`.
    pub late_phrase: String,
    /// The fact that closed it: (event type, event id, occurred at).
    pub closed_by: Option<(String, String, i64)>,
    /// For each lane (same order as `Chronology::lanes`), from when that agency could know of the breach:
    /// from when it was breached or from when the agency could see the start fact, whichever was later.
    pub known: Vec<Option<i64>>,
}

/// A multi-agency signal, marked when it first fired.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalMark {
    /// When it first fired: the occurred-at of the fact that completed its pattern.
    pub at_ms: i64,
    /// `S02/<event id of the completing fact>`.
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub rule_kind: String,
    pub window_days: u32,
    /// The facts it cites (indexes into `facts`), in its order; the last completed it.
    pub cited: Vec<usize>,
    /// `reviewed by mash-rotherham`, the latest outcome recorded.
    pub outcome: Option<String>,
    /// For each lane (same order as `Chronology::lanes`), from when that agency could receive it.
    pub known: Vec<Option<i64>>,
}

/// The whole chronology of one child.
#[derive(Debug, Clone, PartialEq)]
pub struct Chronology {
    pub child: ChildId,
    pub nhs_number: Option<String>,
    pub lanes: Vec<Lane>,
    pub facts: Vec<Entry>,
    pub accesses: Vec<Access>,
    /// Deadline breaches, in the order they first happened.
    pub breaches: Vec<Breach>,
    /// Multi-agency signals, in the order they first fired.
    pub signals: Vec<SignalMark>,
    /// The policies in force at some moment of the chronology, oldest first: the first was in force when
    /// the first fact occurred (unless none was yet), each later one came into force at a moment of it.
    pub policies: Vec<PolicyMark>,
    /// `None`: everything the streams held.
    pub as_of_ms: Option<i64>,
    pub generated_ms: i64,
}

/// The lane of operators' reads through the `halcyon` CLI (their records name no agency).
pub const OPERATOR_LANE: &str = "operator-cli";

/// The access an AUDIT record describes, if it is about `child`.
pub fn access_about(located: LocatedRecord, child: ChildId) -> Option<Access> {
    let r = located.record;
    if r.child_id != child.to_string() {
        return None;
    }
    Some(Access {
        at_ms: r.at.as_ref().map(timestamp_millis).unwrap_or_default(),
        purpose: pb::Purpose::try_from(r.purpose)
            .map(|p| wire_name(p.as_str_name(), "PURPOSE_"))
            .unwrap_or_else(|_| "?".into()),
        outcome: pb::AccessOutcome::try_from(r.outcome)
            .map(|o| wire_name(o.as_str_name(), "ACCESS_OUTCOME_"))
            .unwrap_or_else(|_| "?".into()),
        categories: r
            .categories_disclosed
            .iter()
            .filter_map(|c| Category::from_wire(*c))
            .collect(),
        break_glass: r.break_glass_relied_on || !r.break_glass_reason.is_empty(),
        // An operator's read through the CLI names no agency: it has a lane of its own.
        agency: if r.agency_id.is_empty() && r.role == "operator" {
            OPERATOR_LANE.to_owned()
        } else {
            r.agency_id
        },
        role: r.role,
        method: r.method,
        facts_disclosed: r.facts_disclosed,
        facts_withheld: r.facts_withheld,
        record_id: r.record_id,
        audit_sequence: located.sequence,
    })
}

/// `PURPOSE_SAFEGUARDING` → `safeguarding`.
pub fn wire_name(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

impl Chronology {
    /// The chronology of `child` from its facts (in stored order) and the accesses to its record, each
    /// moment decided with the policy of `views` in force then.
    pub fn build(
        views: &PolicyViews,
        registry: &Registry,
        child: ChildId,
        facts: &[Fact],
        accesses: Vec<Access>,
        as_of_ms: Option<i64>,
        generated_ms: i64,
    ) -> Self {
        let mut lanes: Vec<Lane> = views
            .agencies
            .iter()
            .map(|(id, _)| Lane {
                agency: id.to_string(),
                name: registry
                    .get(id)
                    .map(|a| a.name.clone())
                    .unwrap_or_else(|| id.to_string()),
            })
            .collect();
        for agency in facts
            .iter()
            .map(|f| &f.envelope.agency_id)
            .chain(accesses.iter().map(|a| &a.agency))
        {
            if !lanes.iter().any(|l| &l.agency == agency) {
                lanes.push(Lane {
                    agency: agency.clone(),
                    name: agency.clone(),
                });
            }
        }
        let visible = visibility(views, facts, &lanes);
        let corrected = halcyon_projector::corrections::withdrawn(facts);
        let entries = facts
            .iter()
            .zip(visible)
            .map(|(f, visible)| Entry {
                occurred_ms: f.occurred_ms(),
                recorded_ms: f.envelope.recorded_at.as_ref().map(timestamp_millis),
                stored_ms: f.stored_at_ms,
                agency: f.envelope.agency_id.clone(),
                case_id: f.envelope.case_id.clone(),
                category: Category::from_wire(f.envelope.category),
                event_type: f.kind().map(|k| k.type_name()).unwrap_or("(none)").to_owned(),
                event_id: f.envelope.event_id.clone(),
                stream: f.stream.clone(),
                sequence: f.sequence,
                policy: views.at(f.occurred_ms()),
                visible,
                corrected: corrected.get(&f.envelope.event_id).cloned(),
            })
            .collect();
        let nhs_number = facts
            .iter()
            .filter_map(|f| f.envelope.child.as_ref())
            .map(|c| c.nhs_number.clone())
            .find(|n| !n.is_empty());
        let mut accesses = accesses;
        accesses.sort_by_key(|a| (a.at_ms, a.audit_sequence));
        Self {
            child,
            nhs_number,
            lanes,
            facts: entries,
            accesses,
            breaches: Vec::new(),
            signals: Vec::new(),
            policies: views.marks.clone(),
            as_of_ms,
            generated_ms,
        }
    }

    /// The moments a policy came into force after the first fact, with the policy (index into `policies`),
    /// in time order: where the chronology's visibility is decided under a new policy.
    pub fn policy_changes(&self) -> Vec<(i64, usize)> {
        let first_ms = self.facts.first().map_or(i64::MAX, |f| f.occurred_ms);
        self.policies
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.in_force_from_ms.filter(|t| *t > first_ms).map(|t| (t, i)))
            .collect()
    }

    /// Marks the deadlines among `deadlines` that had been breached, when each first was.
    pub fn with_breaches(mut self, deadlines: &[DeadlineThen]) -> Self {
        let by_event: HashMap<&str, usize> = self
            .facts
            .iter()
            .enumerate()
            .map(|(i, f)| (f.event_id.as_str(), i))
            .collect();
        let mut breaches: Vec<Breach> = deadlines
            .iter()
            .filter(|d| d.standing.is_breach())
            .filter_map(|d| {
                let at_ms = d.first_breached_ms?;
                let start = d.deadline.started_by.clone().unwrap_or_default();
                let start_fact = by_event.get(start.event_id.as_str()).copied();
                let known = match start_fact {
                    None => vec![None; self.lanes.len()],
                    Some(i) => self.facts[i]
                        .visible
                        .iter()
                        .map(|periods| {
                            periods
                                .iter()
                                .find(|p| p.until_ms.is_none_or(|u| u > at_ms))
                                .map(|p| p.from_ms.max(at_ms))
                        })
                        .collect(),
                };
                let state = match (d.standing, d.ending()) {
                    (Standing::MetLate, _) => "met late",
                    (_, halcyon_projector::deadlines::Ending::Superseded) => "superseded late",
                    (Standing::StoppedLate, _) => "stopped late",
                    _ => "still open",
                };
                Some(Breach {
                    at_ms,
                    key: d.key(),
                    rule_id: d.deadline.rule_id.clone(),
                    rule_name: d.rule_name.clone(),
                    limit: d.limit.clone(),
                    agency: start.agency_id,
                    case_id: start.case_id,
                    start_event_type: start.event_type,
                    start_event_id: start.event_id,
                    start_fact,
                    due_ms: d.deadline.due_at_ms,
                    state: state.to_owned(),
                    late: d.lateness.map(|l| l.to_string()).unwrap_or_default(),
                    late_phrase: d.late_phrase().unwrap_or_default(),
                    closed_by: d
                        .deadline
                        .ended_by
                        .as_ref()
                        .map(|f| (f.event_type.clone(), f.event_id.clone(), f.at_ms)),
                    known,
                })
            })
            .collect();
        breaches.sort_by(|a, b| (a.at_ms, &a.key).cmp(&(b.at_ms, &b.key)));
        self.breaches = breaches;
        self
    }

    /// Marks `signals` (the child's, from `facts`, up to `until_ms`) when each first fired, with the lanes
    /// whose agency could receive it and from when: the first moment from its firing (the firing, a later
    /// fact that changed the child's sharing state, or a policy coming into force) at which the rule
    /// addressed the agency's standing principal and the policy of `views` in force then entitled it to the
    /// signal category for safeguarding.
    pub fn with_signals(
        mut self,
        views: &PolicyViews,
        signal_spec: &SignalSpec,
        facts: &[Fact],
        signals: &[StoredSignal],
        until_ms: i64,
    ) -> Self {
        let by_event: HashMap<&str, usize> = self
            .facts
            .iter()
            .enumerate()
            .map(|(i, f)| (f.event_id.as_str(), i))
            .collect();
        let kinds: HashMap<&str, AgencyKind> = views
            .agencies
            .iter()
            .map(|(id, kind)| (id.as_str(), *kind))
            .collect();
        debug_assert!(facts.is_sorted_by_key(Fact::occurred_ms), "facts in time order");
        let successive = SharingState::successive(facts);
        let initial = SharingState::default();
        let mut marks = Vec::new();
        for s in signals {
            let Some(rule) = signal_spec.rules.get(&s.rule_id) else {
                continue;
            };
            // The moments the answer can change: the firing, then each later fact and policy.
            let mut moments: Vec<i64> = std::iter::once(s.fired_at_ms)
                .chain(
                    facts
                        .iter()
                        .map(Fact::occurred_ms)
                        .chain(views.coming_into_force_after(s.fired_at_ms).map(|(t, _)| t))
                        .filter(|t| *t > s.fired_at_ms && *t <= until_ms),
                )
                .collect();
            moments.sort_unstable();
            moments.dedup();
            // Facts are in time order, so the state at t is the state after the facts up to t.
            let states: Vec<(i64, &SharingState)> = moments
                .iter()
                .map(|t| {
                    let k = facts.partition_point(|f| f.occurred_ms() <= *t);
                    (*t, if k == 0 { &initial } else { &successive[k - 1] })
                })
                .collect();
            let known = self
                .lanes
                .iter()
                .map(|lane| {
                    let kind = *kinds.get(lane.agency.as_str())?;
                    let agency: halcyon_schema::AgencyId = lane.agency.parse().ok()?;
                    let principal = Principal {
                        agency: agency.clone(),
                        kind,
                        role: if kind == AgencyKind::Mash {
                            Role::MashMember
                        } else {
                            Role::Practitioner
                        },
                    };
                    states.iter().find_map(|(t, state)| {
                        let lead = state.owner.as_ref() == Some(&agency);
                        let policy = views.at(*t)?;
                        (rule.addresses(kind, lead)
                            && signal_permit(
                                &views.spec(policy).policy,
                                signal_spec.rules.category(),
                                &principal,
                                Purpose::Safeguarding,
                                &signal_spec.state_for(state, &agency),
                                *t,
                            )
                            .is_some())
                        .then_some(*t)
                    })
                })
                .collect();
            marks.push(SignalMark {
                at_ms: s.fired_at_ms,
                id: s.id(),
                rule_id: s.rule_id.clone(),
                rule_name: rule.name.clone(),
                rule_kind: rule.kind.as_str().to_owned(),
                window_days: rule.window_days,
                cited: s
                    .facts
                    .iter()
                    .filter_map(|f| by_event.get(f.event_id.as_str()).copied())
                    .collect(),
                outcome: s.outcome.as_ref().map(|o| {
                    let name = pb::SignalOutcome::try_from(o.outcome)
                        .map(|v| wire_name(v.as_str_name(), "SIGNAL_OUTCOME_").replace('_', " "))
                        .unwrap_or_else(|_| "?".into());
                    format!("{name} by {}", o.agency_id)
                }),
                known,
            });
        }
        marks.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        self.signals = marks;
        self
    }
}

/// Every fact's periods of visibility to every lane's agency, under its standing entitlements, each moment
/// decided with the policy in force then.
///
/// The child's facts are walked in their stored (occurred at, agency, sequence) order. The sharing state
/// after each fact is folded in one pass (`SharingState::successive`). While it and the policy in force stay
/// the same, each decision stays the same, so the views are derived once per run of facts with an unchanged
/// state and policy, on the facts up to the end of the run: n + n·k decisions per agency for n facts and k
/// entitlement changes, where each prefix's state derived afresh cost n² before. When a policy comes into
/// force between facts, the views of the facts before it are derived again under it, at that moment.
fn visibility(views: &PolicyViews, facts: &[Fact], lanes: &[Lane]) -> Vec<Vec<Vec<Period>>> {
    let mut out = vec![vec![Vec::new(); lanes.len()]; facts.len()];
    let by_event: HashMap<&str, usize> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| (f.envelope.event_id.as_str(), i))
        .collect();
    let lane_of: HashMap<&str, usize> = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| (l.agency.as_str(), i))
        .collect();
    // (lane, fact) → when it became visible, because of what, and under which policy.
    let mut open: HashMap<(usize, usize), (i64, Option<Because>, usize)> = HashMap::new();
    // Derives the views of `facts[..held]` at `moment` under the policy in force then (none: nothing is
    // visible); the facts from `new` on are the run's own, visible from when they occurred.
    let mut derive_at = |moment: i64, held: usize, new: usize, because: Because| {
        let policy = views.at(moment);
        let mut now = BTreeSet::new();
        if let Some(policy) = policy {
            let derived = views.spec(policy).derive(&facts[..held]);
            for view in &derived.agencies {
                let Some(&lane) = lane_of.get(view.agency.as_str()) else {
                    continue;
                };
                for entry in derived.entries(view.agency.as_str()) {
                    if let Some(&fact) = by_event.get(entry.event_id.as_str()) {
                        now.insert((lane, fact));
                    }
                }
            }
            for &(lane, fact) in &now {
                open.entry((lane, fact)).or_insert_with(|| {
                    if fact >= new {
                        (facts[fact].occurred_ms(), None, policy)
                    } else {
                        (moment, Some(because), policy)
                    }
                });
            }
        }
        let closed: Vec<(usize, usize)> = open.keys().filter(|k| !now.contains(k)).copied().collect();
        for key in closed {
            let (from_ms, because, policy) = open.remove(&key).expect("open");
            if from_ms < moment {
                out[key.1][key.0].push(Period {
                    from_ms,
                    until_ms: Some(moment),
                    because,
                    policy,
                });
            }
        }
    };
    let states = SharingState::successive(facts);
    let first_ms = facts.first().map_or(i64::MAX, Fact::occurred_ms);
    let mut coming = views.coming_into_force_after(first_ms).peekable();
    let mut run_start = 0;
    for end in 0..facts.len() {
        // A run of facts that leave the sharing state as it was, under one policy, shares one derivation of
        // the views; a correction starts a run of its own (it can withdraw a fact without changing the state).
        if end + 1 < facts.len()
            && states[end + 1] == states[end]
            && !halcyon_projector::corrections::is_correction(&facts[end + 1])
            && views.at(facts[end + 1].occurred_ms()) == views.at(facts[end].occurred_ms())
        {
            continue;
        }
        let moment = facts[run_start].occurred_ms();
        // A policy that came into force before the run (or as it began) decides the facts before it then.
        while let Some((from_ms, _)) = coming.next_if(|(from_ms, _)| *from_ms <= moment) {
            derive_at(from_ms, run_start, run_start, Because::Policy);
        }
        derive_at(moment, end + 1, run_start, Because::Fact(run_start));
        run_start = end + 1;
    }
    for (from_ms, _) in coming {
        derive_at(from_ms, facts.len(), facts.len(), Because::Policy);
    }
    for ((lane, fact), (from_ms, because, policy)) in open {
        out[fact][lane].push(Period {
            from_ms,
            until_ms: None,
            because,
            policy,
        });
    }
    for per_fact in &mut out {
        for periods in per_fact {
            periods.sort_by_key(|p| p.from_ms);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use halcyon_policy::Policy;
    use halcyon_schema::convert::timestamp_from_millis;

    fn fact(sequence: u64, agency: &str, occurred_ms: i64, kind: pb::event::Kind) -> Fact {
        let category = kind.default_category();
        Fact {
            stream: format!("EVENTS_{sequence}"),
            sequence,
            stored_at_ms: occurred_ms + 60_000,
            envelope: pb::Envelope {
                event_id: format!("00000000-0000-7000-8000-00000000000{sequence}"),
                case_id: format!("CASE-{sequence}"),
                agency_id: agency.into(),
                occurred_at: Some(timestamp_from_millis(occurred_ms)),
                category: category.to_pb() as i32,
                child: Some(pb::ChildIdentifiers {
                    nhs_number: "9434765919".into(),
                    ..Default::default()
                }),
                event: Some(pb::Event { kind: Some(kind) }),
                ..Default::default()
            },
            corrected: None,
        }
    }

    #[test]
    fn an_agency_sees_a_fact_from_when_it_occurred_or_from_the_fact_that_entitled_it() {
        use pb::event::Kind;
        let registry = Registry::from_toml(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agencies.toml"),
            )
            .unwrap(),
        )
        .unwrap();
        let views = PolicyViews::new(&PolicyHistory::single(Policy::england()), &registry, 0, i64::MAX);
        let (t1, t2, t3) = (1_000_000, 2_000_000, 3_000_000);
        let facts = vec![
            fact(
                1,
                "school-oakwood",
                t1,
                Kind::AttendanceConcernRecorded(Default::default()),
            ),
            fact(
                2,
                "police-sy",
                t2,
                Kind::MissingEpisodeReported(Default::default()),
            ),
            fact(
                3,
                "csc-rotherham",
                t3,
                Kind::AgencyCheckRequested(Default::default()),
            ),
        ];
        let child = ChildId::from_nhs(&"9434765919".parse().unwrap());
        let c = Chronology::build(&views, &registry, child, &facts, Vec::new(), None, 0);
        assert_eq!(c.lanes.len(), registry.len(), "one lane per registered agency");
        let lane = |agency: &str| c.lanes.iter().position(|l| l.agency == agency).unwrap();
        let attendance = &c.facts[0].visible;
        // Its own agency from when it occurred.
        assert_eq!(
            attendance[lane("school-oakwood")],
            vec![Period {
                from_ms: t1,
                until_ms: None,
                because: None,
                policy: 0
            }]
        );
        // Police once it had a case of its own about the child (D9: missing or exploitation).
        assert_eq!(
            attendance[lane("police-sy")],
            vec![Period {
                from_ms: t2,
                until_ms: None,
                because: Some(Because::Fact(1)),
                policy: 0
            }]
        );
        // The MASH once the referral came to it.
        assert_eq!(
            attendance[lane("mash-rotherham")],
            vec![Period {
                from_ms: t3,
                until_ms: None,
                because: Some(Because::Fact(2)),
                policy: 0
            }]
        );
        assert!(attendance[lane("vol-safe-haven")].is_empty());
        // The views agree with the policy's own derivation on the whole history.
        assert!(c.facts.iter().all(|f| f.policy == Some(0)));
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.policies[0].in_force_from_ms, None, "one file, in force always");
        let views = views.spec(0).derive(&facts);
        for (i, entry) in c.facts.iter().enumerate() {
            for (l, periods) in c.lanes.iter().zip(&entry.visible) {
                let now = views.agencies.iter().any(|a| {
                    a.agency == l.agency
                        && views
                            .entries(&a.agency)
                            .iter()
                            .any(|e| e.event_id == facts[i].envelope.event_id)
                });
                assert_eq!(
                    now,
                    periods.last().is_some_and(|p| p.until_ms.is_none()),
                    "fact {i}, {}",
                    l.agency
                );
            }
        }
    }

    /// The shipped policy under another version (its own `version` line replaced).
    fn england_as(version: &str) -> Policy {
        let src: Vec<String> = halcyon_policy::ENGLAND_TOML
            .lines()
            .map(|l| {
                if l.starts_with("version = ") {
                    format!("version = \"{version}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        Policy::from_toml(&src.join("\n"), version).unwrap()
    }

    #[test]
    fn before_the_first_policy_came_into_force_nobody_could_see_anything() {
        use pb::event::Kind;
        let registry = Registry::from_toml(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agencies.toml"),
            )
            .unwrap(),
        )
        .unwrap();
        let history = PolicyHistory::from_toml(
            "[[policy]]\nfile = \"v1\"\nversion = \"v1\"\nin_force_from = \"1970-01-01T00:33:20Z\"\n",
            "history.toml",
            |v| Ok(england_as(v)),
        )
        .unwrap();
        // The policy came into force at 2,000,000 ms, between the two facts.
        let (t1, t2) = (1_000_000, 3_000_000);
        let facts = vec![
            fact(
                1,
                "school-oakwood",
                t1,
                Kind::AttendanceConcernRecorded(Default::default()),
            ),
            fact(
                2,
                "school-oakwood",
                t2,
                Kind::AttendanceConcernRecorded(Default::default()),
            ),
        ];
        let views = PolicyViews::for_facts(&history, &registry, &facts, 4_000_000);
        let child = ChildId::from_nhs(&"9434765919".parse().unwrap());
        let c = Chronology::build(&views, &registry, child, &facts, Vec::new(), None, 4_000_000);
        let school = c.lanes.iter().position(|l| l.agency == "school-oakwood").unwrap();
        assert_eq!(c.facts[0].policy, None, "no policy was in force when it occurred");
        assert_eq!(c.facts[1].policy, Some(0));
        assert_eq!(
            c.facts[0].visible[school],
            vec![Period {
                from_ms: 2_000_000,
                until_ms: None,
                because: Some(Because::Policy),
                policy: 0
            }],
            "its own fact, from when the policy came into force"
        );
        assert_eq!(c.facts[1].visible[school][0].from_ms, t2);
        assert_eq!(c.policy_changes(), vec![(2_000_000, 0)]);
    }

    #[test]
    fn wire_names_read_as_words() {
        assert_eq!(wire_name("PURPOSE_SAFEGUARDING", "PURPOSE_"), "safeguarding");
    }
}
