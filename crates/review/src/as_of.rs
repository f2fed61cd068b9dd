//! As-of reconstruction: what an agency could see about a child at a past moment — the question every case
//! review asks. Either the agency streams are projected into a throwaway store up to the messages the server
//! had stored by then (`Until::StoredAt`, [`reconstruct`]), or read models that hold the whole history are
//! read as they stood then (`Projector::facts_at`, [`Reconstruction::held`]: facts carry the time the bus
//! stored them and identity links keep what they moved, so the moment is a filter on the child's facts and
//! a question costs what the child's history costs). Either way the child's facts, identity links and
//! sharing state are the ones a node held at that moment; each fact is then decided exactly as a query at that moment would decide it
//! (`view::child_view`), with the policy in force then and the moment as the request time.
//!
//! The child's statutory deadlines as they stood then (`deadlines_at`) come from the deadline projection's
//! own code on the facts held then that had occurred by then, evaluated at the moment: open, met (how
//! early), breached (since when, how late) — and a reader is shown only those whose start fact it could
//! see then (`Reconstruction::deadlines`). Likewise the child's multi-agency signals as they stood then
//! (`signals_at`, the signal projection's own `derive_until`): when each first fired and by which rule, for
//! a reader the rule addressed and the policy then entitled to signals, with the references to the facts
//! each cites, as the reader was given them, and how many of those facts it could not read then
//! (`Reconstruction::signals`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_nats::jetstream;
use halcyon_policy::{ChildState, Fact as PolicyFact, Policy, Principal, Purpose, Request, decide};
use halcyon_projector::deadlines::{Ending, occurrences};
use halcyon_projector::signals::{ChildSignals, StoredSignal, derive_until};
use halcyon_projector::{
    Fact, Identifier, Projector, ProjectorError, SharingState, SignalSpec, StoredDeadline,
};
use halcyon_schema::pb;
use halcyon_schema::{AgencyId, Category, ChildId};
use halcyon_timescales::{BreachEnd, Lateness, Margin, Status, Timescales, evaluate};

use crate::rebuild::{RebuildError, Until, project_streams};
use halcyon_projector::disclose::{Asker, Disclosure, child_view};

/// The read models as they stood at a moment: a temporary store the streams were projected into up to the
/// moment ([`reconstruct`]), or read models that hold the whole history, read as they stood then
/// ([`Reconstruction::held`]).
#[derive(Debug)]
pub struct Reconstruction {
    source: Source,
    /// The moment (Unix ms): messages stored at or before it are in, later ones are not.
    pub at_ms: i64,
    /// Messages applied from all agency streams: those stored by the moment for a replay, every message the
    /// read models hold for [`Reconstruction::held`].
    pub messages: u64,
}

#[derive(Debug)]
enum Source {
    /// Projected up to the moment; dropped with the reconstruction.
    Replayed(Arc<Projector>),
    /// The whole history, filtered to the moment (`Projector::facts_at`); deadlines are derived in a
    /// throwaway store holding only the child's.
    Held { store: Arc<Projector> },
}

/// What one principal could see of one child at the moment.
#[derive(Debug, Clone)]
pub struct AsOfView {
    pub child: ChildId,
    /// Facts about the child the node held then, seen or not.
    pub facts_held: usize,
    /// The view a query at that moment would have answered (facts, withheld counts by rule, policy version).
    pub view: pb::ChildView,
    pub disclosure: Disclosure,
    /// The child's sharing state then, as it concerned the principal's agency.
    pub state: ChildState,
}

/// Projects every agency stream up to the messages stored at or before `at_ms`, quarantining events
/// dated more than `future_tolerance_ms` after they were stored (as the deployment's nodes do).
pub async fn reconstruct(
    js: &jetstream::Context,
    at_ms: i64,
    future_tolerance_ms: i64,
) -> Result<Reconstruction, RebuildError> {
    let projector = Arc::new(Projector::temporary()?.with_future_tolerance_ms(future_tolerance_ms));
    let messages = project_streams(js, &projector, &Until::StoredAt(at_ms), &|_, _| {}).await?;
    Ok(Reconstruction {
        source: Source::Replayed(projector),
        at_ms,
        messages,
    })
}

impl Reconstruction {
    /// The moment `at_ms` in read models that hold the history through it (a node's, or a review store kept
    /// current with `project_streams`): each question costs what the child's facts cost, not the history.
    pub fn held(store: Arc<Projector>, at_ms: i64) -> Self {
        let messages = store.checkpoints().values().sum();
        Self {
            source: Source::Held { store },
            at_ms,
            messages,
        }
    }

    /// The child an identifier denoted then, if any fact about it had been stored.
    pub fn child(&self, id: &Identifier) -> Result<Option<ChildId>, ProjectorError> {
        let child = match &self.source {
            Source::Replayed(projector) => projector.resolve(id)?,
            Source::Held { store } => store.resolve_at(id, self.at_ms)?,
        };
        Ok((!self.facts(&child)?.is_empty()).then_some(child))
    }

    /// A child's facts as held then, in (occurred at, agency, sequence) order.
    pub fn facts(&self, child: &ChildId) -> Result<Vec<Fact>, ProjectorError> {
        match &self.source {
            Source::Replayed(projector) => projector.facts(child),
            Source::Held { store } => store.facts_at(child, self.at_ms),
        }
    }

    /// A store to derive one child's deadlines in: the replay's own, or a throwaway one.
    fn deadline_store(&self) -> Result<Arc<Projector>, ProjectorError> {
        match &self.source {
            Source::Replayed(projector) => Ok(projector.clone()),
            Source::Held { .. } => Ok(Arc::new(Projector::temporary()?)),
        }
    }

    /// What `principal` could have seen of `child` for `purpose` at the moment, under `policy` (the one in
    /// force then). `None` if nothing about the child had been stored by then.
    pub fn could_see(
        &self,
        policy: &Policy,
        registry: &halcyon_schema::Registry,
        principal: &Principal,
        purpose: Purpose,
        child: ChildId,
    ) -> Result<Option<AsOfView>, ProjectorError> {
        let facts = self.facts(&child)?;
        if facts.is_empty() {
            return Ok(None);
        }
        let (view, disclosure) = child_view(
            &Asker {
                policy,
                registry,
                principal,
                purpose,
                break_glass: None,
                now_ms: self.at_ms,
            },
            child,
            &facts,
        );
        let state = SharingState::derive(&facts).for_agency_in(&principal.agency, registry);
        Ok(Some(AsOfView {
            child,
            facts_held: facts.len(),
            view,
            disclosure,
            state,
        }))
    }

    /// `child`'s deadlines as they stood at the moment (`deadlines_at`), only those `seen`'s reader may
    /// know of: the ones whose start fact it could see then, more than as a flag.
    pub fn deadlines(
        &self,
        timescales: &Timescales,
        seen: &AsOfView,
    ) -> Result<Vec<DeadlineThen>, ProjectorError> {
        let facts = self.facts(&seen.child)?;
        let store = self.deadline_store()?;
        let all = deadlines_at(&store, timescales, seen.child, &facts, self.at_ms)?;
        let visible: BTreeSet<&str> = seen.view.facts.iter().map(|f| f.event_id.as_str()).collect();
        let beyond_flag: BTreeSet<&str> = seen
            .view
            .facts
            .iter()
            .filter(|f| halcyon_projector::disclose::tells_deadline(f))
            .map(|f| f.event_id.as_str())
            .collect();
        Ok(visible_deadlines(all, &visible, &beyond_flag))
    }
}

/// Where a deadline stood at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Running, not yet due.
    Open,
    /// Met on time.
    Met,
    /// Running past its due time: breached, not yet met.
    Breached,
    /// Breached, then met late.
    MetLate,
    /// Stopped (or superseded) before it fell due.
    Stopped,
    /// Breached, then stopped (or superseded).
    StoppedLate,
    /// An expiry clock (T13): running, or run out. Never a breach.
    Expiry,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Open => "open",
            Standing::Met => "met",
            Standing::Breached => "breached",
            Standing::MetLate => "met late",
            Standing::Stopped => "stopped",
            Standing::StoppedLate => "stopped late",
            Standing::Expiry => "expiry",
        }
    }

    /// Whether the deadline had been breached by the moment.
    pub fn is_breach(self) -> bool {
        matches!(
            self,
            Standing::Breached | Standing::MetLate | Standing::StoppedLate
        )
    }
}

/// One deadline of a child as it stood at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineThen {
    /// As the deadline projection stored it from the facts up to the moment (rule, start fact, due time,
    /// how it ended). `ended_by` is cleared when the reader may not see the fact that ended it.
    pub deadline: StoredDeadline,
    pub rule_name: String,
    /// `1 working day`.
    pub limit: String,
    pub standing: Standing,
    /// How long was left (open), how early (met), how late (breached: to the moment, or to the fact that
    /// closed it), in the rule's unit; `None` for an expiry clock or a stop.
    pub margin: Option<Margin>,
    /// How late a breached deadline was, as a person counts it in the rule's unit (`2 days`, `1 working
    /// day`): to the moment, or to the fact that closed it. `None` unless breached.
    pub lateness: Option<Lateness>,
    /// When it was first breached: the first millisecond after its due time, from its breach record.
    pub first_breached_ms: Option<i64>,
}

impl DeadlineThen {
    /// `T01/<event id>`.
    pub fn key(&self) -> String {
        self.deadline.key()
    }

    /// Whether the deadline was ended by a stop (`Stopped`) or a further start (`Superseded`).
    pub fn ending(&self) -> Ending {
        self.deadline.ending()
    }

    /// For a breach: still open (overdue), or met, stopped or superseded late.
    pub fn breach_end(&self) -> Option<BreachEnd> {
        match (self.standing, self.ending()) {
            (Standing::Breached, _) => Some(BreachEnd::StillOpen),
            (Standing::MetLate, _) => Some(BreachEnd::Met),
            (Standing::StoppedLate, Ending::Superseded) => Some(BreachEnd::Superseded),
            (Standing::StoppedLate, _) => Some(BreachEnd::Stopped),
            _ => None,
        }
    }

    /// A breach in words: `overdue by 1 working day`, `met 2 days late`, `superseded 3 hours late`.
    pub fn late_phrase(&self) -> Option<String> {
        Some(self.lateness?.phrase(self.breach_end()?))
    }
}

/// Every deadline of `child` as it stood at `at_ms`, by the deadline projection's own path: the facts held
/// that had occurred by `at_ms` are derived as a node derives them (`Projector::derive_child_deadlines`),
/// breaches are recorded as the node's timer records them by `at_ms` (`Projector::record_all_breaches`), and the
/// margins are measured by `halcyon_timescales::evaluate` at `at_ms`, as `halcyon deadlines` measures them.
/// Writes the child's deadline keys in `projector`, which must be a throwaway store with no deadline spec
/// of its own (a reconstruction).
pub fn deadlines_at(
    projector: &Projector,
    timescales: &Timescales,
    child: ChildId,
    facts: &[Fact],
    at_ms: i64,
) -> Result<Vec<DeadlineThen>, ProjectorError> {
    let facts: Vec<Fact> = facts
        .iter()
        .filter(|f| f.occurred_ms() <= at_ms)
        .cloned()
        .collect();
    projector.derive_child_deadlines(timescales, &child, &facts)?;
    projector.record_all_breaches(at_ms)?;
    let recorded: BTreeMap<String, StoredDeadline> = projector
        .breaches(Some(&child))?
        .into_iter()
        .map(|n| (n.deadline.key(), n.deadline))
        .collect();
    let evaluation = evaluate(timescales, &occurrences(&facts), at_ms);
    let measured: BTreeMap<String, (&Status, Option<Lateness>)> = evaluation
        .deadlines
        .iter()
        .map(|d| (d.key(), (&d.status, d.lateness)))
        .collect();
    let mut out = Vec::new();
    for d in projector.deadlines_of(&child)?.deadlines {
        let key = d.key();
        let breach = recorded.get(&key);
        let standing = match d.ending() {
            Ending::Expiry => Standing::Expiry,
            Ending::Running if breach.is_some() => Standing::Breached,
            Ending::Running => Standing::Open,
            Ending::Met if d.closed_late() => Standing::MetLate,
            Ending::Met => Standing::Met,
            Ending::Stopped | Ending::Superseded if d.closed_late() => Standing::StoppedLate,
            Ending::Stopped | Ending::Superseded => Standing::Stopped,
        };
        let margin = measured.get(&key).and_then(|(s, _)| match s {
            Status::Open { remaining } if standing == Standing::Open => Some(*remaining),
            Status::Met { early, .. } => Some(*early),
            Status::Breached { late, .. } => Some(*late),
            _ => None,
        });
        let lateness = measured
            .get(&key)
            .and_then(|(_, lateness)| *lateness)
            .filter(|_| standing.is_breach());
        let rule = timescales.rules().get(&d.rule_id);
        out.push(DeadlineThen {
            rule_name: rule.map(|r| r.name.clone()).unwrap_or_default(),
            limit: rule.map(|r| r.limit_text()).unwrap_or_default(),
            standing,
            margin,
            lateness,
            first_breached_ms: breach.map(|b| b.due_at_ms.saturating_add(1)),
            deadline: d,
        });
    }
    Ok(out)
}

/// The deadlines a reader may know of: those whose start fact it could see more than as a flag
/// (`beyond_flag`, by [`halcyon_projector::disclose::tells_deadline`]), as `DeadlineService` shows breaches; the fact that ended one is named only if
/// it could see that too (`visible`, a flag included).
pub fn visible_deadlines(
    deadlines: Vec<DeadlineThen>,
    visible: &BTreeSet<&str>,
    beyond_flag: &BTreeSet<&str>,
) -> Vec<DeadlineThen> {
    deadlines
        .into_iter()
        .filter(|d| {
            d.deadline
                .started_by
                .as_ref()
                .is_some_and(|f| beyond_flag.contains(f.event_id.as_str()))
        })
        .map(|mut d| {
            if d.deadline
                .ended_by
                .as_ref()
                .is_some_and(|f| !visible.contains(f.event_id.as_str()))
            {
                d.deadline.ended_by = None;
            }
            d
        })
        .collect()
}

/// One signal of a child as it stood at the moment, as one reader was entitled to it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalThen {
    /// As the signal projection derives it from the facts that had occurred by then (`derive_until`): its
    /// rule, when it first fired (the occurred-at of the fact that completed it), its latest outcome, and the
    /// references to every fact it cites (agency, stream, sequence, event id, time), as ListSignals gives
    /// them: the references are the signal (D14); what the facts say is not.
    pub signal: StoredSignal,
    /// `S02/<event id of the completing fact>`, whatever the reader could see.
    pub id: String,
    pub rule_name: String,
    /// `multi-agency-concern`, `co-occurrence`.
    pub rule_kind: String,
    pub window_days: u32,
    /// Cited facts whose content the reader could not read then (its view did not show them).
    pub facts_withheld: usize,
    /// The policy rule that entitled the reader to the signal.
    pub permitted_by: String,
}

/// The policy rule under which `policy` lets `principal` receive signals (of the signal `category`) about a
/// child in sharing state `state`, for `purpose`, at `now_ms`; `None` if it does not. Decided as a fact of no
/// agency, as `SignalService` decides it, so no agency's "own records" rule applies. Whether a signal's rule
/// addresses the principal (`Rule::addresses`) is the other half of receiving it.
pub fn signal_permit(
    policy: &Policy,
    category: Category,
    principal: &Principal,
    purpose: Purpose,
    state: &ChildState,
    now_ms: i64,
) -> Option<String> {
    let originator: AgencyId = halcyon_projector::signals::SIGNAL_ORIGINATOR
        .parse()
        .expect("a valid agency id");
    let fact = PolicyFact::new(category, originator);
    let decision = decide(
        policy,
        &Request {
            principal,
            purpose,
            fact: &fact,
            state,
            break_glass: None,
            now_ms,
        },
    );
    decision.is_permit().then(|| decision.rule().to_owned())
}

/// Every signal of `child` as it stood at `at_ms`: the signal projection's own derivation on the facts that
/// had occurred by then (`signals::derive_until`), with the lead authority of then.
pub fn signals_at(spec: &SignalSpec, facts: &[Fact], at_ms: i64) -> ChildSignals {
    derive_until(spec, facts, at_ms)
}

impl Reconstruction {
    /// `seen.child`'s signals as they stood at the moment, only those `principal` was entitled to then —
    /// the rule addresses it (its agency kind, or it was the lead authority) and `policy`, the one in force
    /// then, grants it the signal category for `purpose` on the child's sharing state then — each with its
    /// references to every fact it cites, and a count of those the reader could not read then.
    pub fn signals(
        &self,
        spec: &SignalSpec,
        policy: &Policy,
        principal: &Principal,
        purpose: Purpose,
        seen: &AsOfView,
    ) -> Result<Vec<SignalThen>, ProjectorError> {
        let facts = self.facts(&seen.child)?;
        let then = signals_at(spec, &facts, self.at_ms);
        let visible: BTreeSet<&str> = seen.view.facts.iter().map(|f| f.event_id.as_str()).collect();
        let lead = then.lead_authority == principal.agency.as_str();
        // The child's sharing state as it stood then, placed by the registry (area, the MASH referral's
        // area, the lead authority): from the same facts the signals of then come from.
        let state = spec.state_for(
            &halcyon_projector::SharingState::derive_until(&facts, self.at_ms),
            &principal.agency,
        );
        let Some(permitted_by) = signal_permit(
            policy,
            spec.rules.category(),
            principal,
            purpose,
            &state,
            self.at_ms,
        ) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for signal in then.signals {
            let Some(rule) = spec.rules.get(&signal.rule_id) else {
                continue;
            };
            if !rule.addresses(principal.kind, lead) {
                continue;
            }
            let id = signal.id();
            // A signal's references to the facts it cites are part of the signal (D14), as ListSignals
            // gives them; what each fact says stays under its own category, counted here when it could not
            // be read.
            let unreadable = signal
                .facts
                .iter()
                .filter(|f| !visible.contains(f.event_id.as_str()))
                .count();
            out.push(SignalThen {
                id,
                rule_name: rule.name.clone(),
                rule_kind: rule.kind.as_str().to_owned(),
                window_days: rule.window_days,
                facts_withheld: unreadable,
                permitted_by: permitted_by.clone(),
                signal,
            });
        }
        Ok(out)
    }
}
