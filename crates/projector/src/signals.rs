//! The signal projection ("joining the dots", ARCHITECTURE.md, docs/domain.md §7): each child's multi-agency
//! signals derived from its facts with `halcyon-signals`, beside its views and deadlines, with the outcome
//! recipients recorded for each (`SignalOutcomeRecorded`).
//!
//! A signal record names its rule, the facts that raised it by reference (agency, stream, sequence, event
//! id, occurred at — never their content), when it first fired (the occurred-at of the fact that completed
//! it) and its latest outcome. It depends only on the child's set of facts, so a rebuild writes the same
//! bytes, and the signals as of a moment are those of the facts that had occurred by then
//! ([`derive_until`]).
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `S` | child (16) | every signal of the child, in (fired at, rule) order (`ChildSignals`) |
//!
//! A signal's name is stable (`halcyon_signals::identify`): the fact that completed it when it first
//! fired, in the order facts arrived, so a fact recorded late that changes which fact completes the
//! pattern does not rename it; a signal that absorbs another (a late fact made them one) lists its name in
//! `replaces`. An outcome counts only when it names a signal of the same child (or one it absorbed) and its
//! agency is one the signal's rule addresses (an agency of a recipient kind, or the lead authority); the
//! latest such outcome, in fact order, is the signal's outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use halcyon_schema::pb::event::Kind;
use halcyon_schema::{AgencyKind, ChildId, Registry};
use halcyon_signals::{Identified, Observation, SignalRules, identify};
use prost::Message;
use tokio::sync::broadcast;

use crate::error::ProjectorError;
use crate::fact::Fact;
use crate::model::{Derived, ReadModel, Writes};
use crate::state::SharingState;
use crate::store::Projector;

pub use crate::keys::SIGNALS;

/// The originator a signal is decided as: Halcyon itself, never a registered agency, so the policy's
/// category cells decide (an agency's "own records" rule never applies to a signal).
pub const SIGNAL_ORIGINATOR: &str = "halcyon";

/// Signal notices kept for a slow listener before it is told it fell behind.
pub const NOTICES_BUFFERED_MAX: usize = 1024;

/// A fact a signal cites, by reference.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignalFact {
    #[prost(string, tag = "1")]
    pub agency_id: String,
    #[prost(string, tag = "2")]
    pub stream: String,
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
    #[prost(string, tag = "4")]
    pub event_id: String,
    #[prost(int64, tag = "5")]
    pub at_ms: i64,
}

/// The latest outcome recorded for a signal.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignalOutcome {
    /// `halcyon.v1.SignalOutcome`.
    #[prost(int32, tag = "1")]
    pub outcome: i32,
    #[prost(string, tag = "2")]
    pub agency_id: String,
    #[prost(string, tag = "3")]
    pub recorded_by: String,
    /// The `SignalOutcomeRecorded` fact (its reason stays in the fact, read under the policy).
    #[prost(message, optional, tag = "4")]
    pub fact: Option<SignalFact>,
}

/// One signal as the facts alone decide it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StoredSignal {
    #[prost(string, tag = "1")]
    pub rule_id: String,
    /// The occurred-at of the fact that completed it.
    #[prost(int64, tag = "2")]
    pub fired_at_ms: i64,
    /// In (occurred at, agency, stream, sequence) order; the last completed it.
    #[prost(message, repeated, tag = "3")]
    pub facts: Vec<SignalFact>,
    #[prost(message, optional, tag = "4")]
    pub outcome: Option<SignalOutcome>,
    /// Set when a cited fact was corrected or entered in error and the rule no longer fires on what remains.
    #[prost(message, optional, tag = "5")]
    pub withdrawn: Option<SignalWithdrawal>,
    /// Its stable name (`halcyon_signals::identify`): `<rule>/<event id of the fact that completed it when
    /// it first fired>`, kept when a fact recorded late changes which fact completes it.
    #[prost(string, tag = "6")]
    pub name: String,
    /// Names of signals of the same rule it absorbed (a late fact made them one), oldest first: an outcome
    /// recorded against one of them counts for it.
    #[prost(string, repeated, tag = "7")]
    pub replaces: Vec<String>,
}

/// Why a signal stands withdrawn: the cited fact that no longer holds and the correction that withdrew it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignalWithdrawal {
    #[prost(string, tag = "1")]
    pub withdrawn_event_id: String,
    #[prost(string, tag = "2")]
    pub correction_event_id: String,
    /// When the bus stored the correction.
    #[prost(int64, tag = "3")]
    pub withdrawn_at_ms: i64,
}

impl StoredSignal {
    /// Its stable name, `S02/<event id>`: what `SignalOutcomeRecorded.signal_id` names. (Every record has
    /// one: stores written before names were stored are of an older read-model format, and rebuilt.)
    pub fn id(&self) -> String {
        self.name.clone()
    }

    /// Whether an outcome naming `signal_id` is about this signal (its name, or one it absorbed).
    pub fn answers_to(&self, signal_id: &str) -> bool {
        self.id() == signal_id || self.replaces.iter().any(|r| r == signal_id)
    }
}

/// Every signal of one child (value of an `S` key), and the child's lead authority they were addressed
/// with.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChildSignals {
    #[prost(message, repeated, tag = "1")]
    pub signals: Vec<StoredSignal>,
    /// The children's social care agency holding the child's case, if any (`SharingState::owner`).
    #[prost(string, tag = "2")]
    pub lead_authority: String,
}

/// A signal that fired, or whose outcome changed: for a node to tell its recipients.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalNotice {
    pub child: ChildId,
    pub signal: StoredSignal,
    pub lead_authority: String,
}

/// The rules a projector derives signals with, the agency kinds they address, and the channel that tells a
/// node about new signals.
#[derive(Debug)]
pub struct SignalSpec {
    pub rules: Arc<SignalRules>,
    /// Each registered agency's kind: whose outcome counts.
    kinds: BTreeMap<String, AgencyKind>,
    /// The agency registry: whose area a child is in.
    registry: Arc<Registry>,
    notices: broadcast::Sender<SignalNotice>,
}

impl SignalSpec {
    pub fn new(rules: Arc<SignalRules>, registry: &Registry) -> SignalSpec {
        SignalSpec {
            rules,
            kinds: registry
                .iter()
                .map(|a| (a.id.as_str().to_owned(), a.kind))
                .collect(),
            registry: Arc::new(registry.clone()),
            notices: broadcast::channel(NOTICES_BUFFERED_MAX).0,
        }
    }

    /// The child's sharing state as it concerns `agency` when deciding a signal: with whether the child is
    /// in the agency's area (the relationship `area`, which only the signal category may rely on).
    pub fn state_for(
        &self,
        sharing: &SharingState,
        agency: &halcyon_schema::AgencyId,
    ) -> halcyon_policy::ChildState {
        sharing.for_agency_in(agency, &self.registry)
    }

    pub fn subscribe_notices(&self) -> broadcast::Receiver<SignalNotice> {
        self.notices.subscribe()
    }

    /// Whether `agency` is one `rule_id` addresses, for a child whose lead authority is `lead`.
    pub fn addresses(&self, rule_id: &str, agency: &str, lead: &str) -> bool {
        let (Some(rule), Some(kind)) = (self.rules.get(rule_id), self.kinds.get(agency)) else {
            return false;
        };
        rule.addresses(*kind, !lead.is_empty() && agency == lead)
    }
}

/// The signal rules' input from a child's stored facts: those that indicate anything.
pub fn observations(facts: &[Fact]) -> Vec<Observation> {
    facts
        .iter()
        .filter_map(|f| {
            let kind = f.kind()?;
            let indicators = halcyon_signals::Indicator::of_event(kind);
            (!indicators.is_empty()).then(|| Observation {
                indicators,
                ..Observation::new(
                    &f.envelope.event_id,
                    f.occurred_ms(),
                    &f.envelope.agency_id,
                    &f.stream,
                    f.sequence,
                )
                .arrived(f.stored_at_ms)
            })
        })
        .collect()
}

fn reference(f: &Fact) -> SignalFact {
    SignalFact {
        agency_id: f.envelope.agency_id.clone(),
        stream: f.stream.clone(),
        sequence: f.sequence,
        event_id: f.envelope.event_id.clone(),
        at_ms: f.occurred_ms(),
    }
}

/// Every signal the facts raise, with its outcome.
pub fn derive(spec: &SignalSpec, facts: &[Fact]) -> ChildSignals {
    derive_until(spec, facts, i64::MAX)
}

/// The signals as they stood at `until_ms`: raised by the facts that had occurred by then, with the
/// outcomes recorded by then, addressed with the lead authority of then. For `audit as-of` ("when did
/// this first show?"); `facts` are a child's facts in stored order.
pub fn derive_until(spec: &SignalSpec, facts: &[Fact], until_ms: i64) -> ChildSignals {
    let corrected = crate::corrections::effective_until(facts, until_ms);
    let std::borrow::Cow::Owned(corrected_facts) = &corrected else {
        return derive_recorded(spec, facts, until_ms);
    };
    // Corrections: the signals of the corrected facts, and those the facts as recorded raised that cite a
    // fact a correction withdrew and no longer fire, marked withdrawn (kept, so that their recipients are
    // told and a review sees what they were told before).
    let mut out = derive_recorded(spec, corrected_facts, until_ms);
    let withdrawn = crate::corrections::withdrawn(facts);
    let recorded = derive_recorded(spec, facts, until_ms);
    for mut signal in recorded.signals {
        if out.signals.iter().any(|s| s.id() == signal.id()) {
            continue;
        }
        let Some((cited, c)) = signal
            .facts
            .iter()
            .find_map(|f| withdrawn.get(&f.event_id).map(|c| (f.event_id.clone(), c)))
            .filter(|(_, c)| c.occurred_ms <= until_ms)
        else {
            continue;
        };
        signal.withdrawn = Some(SignalWithdrawal {
            withdrawn_event_id: cited,
            correction_event_id: c.correction_event_id.clone(),
            withdrawn_at_ms: c.corrected_at_ms,
        });
        out.signals.push(signal);
    }
    out.signals
        .sort_by(|a, b| (a.fired_at_ms, &a.rule_id, a.id()).cmp(&(b.fired_at_ms, &b.rule_id, b.id())));
    out
}

/// [`derive_until`] of facts read as they are (no correction applied).
fn derive_recorded(spec: &SignalSpec, facts: &[Fact], until_ms: i64) -> ChildSignals {
    let observations = observations(facts);
    // Most children have no fact any rule reads: no signal, and nothing more to fold.
    if observations.is_empty() {
        return ChildSignals::default();
    }
    let lead_authority = SharingState::derive_until(facts, until_ms)
        .owner
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let mut signals: Vec<StoredSignal> = identify(&spec.rules, &observations, until_ms)
        .into_iter()
        .map(
            |Identified {
                 signal: s,
                 id,
                 replaces,
             }| StoredSignal {
                name: id,
                replaces,
                rule_id: s.rule.id.clone(),
                fired_at_ms: s.fired_at_ms,
                facts: s
                    .facts
                    .iter()
                    .map(|f| SignalFact {
                        agency_id: f.agency_id.clone(),
                        stream: f.stream.clone(),
                        sequence: f.sequence,
                        event_id: f.event_id.clone(),
                        at_ms: f.at_ms,
                    })
                    .collect(),
                outcome: None,
                withdrawn: None,
            },
        )
        .collect();
    // Facts are in (occurred at, agency, sequence) order: the last outcome for a signal wins.
    for f in facts.iter().filter(|f| f.occurred_ms() <= until_ms) {
        let Some(Kind::SignalOutcomeRecorded(o)) = f.kind() else {
            continue;
        };
        let Some(signal) = signals.iter_mut().find(|s| s.answers_to(&o.signal_id)) else {
            continue;
        };
        if !spec.addresses(&signal.rule_id, &f.envelope.agency_id, &lead_authority) {
            continue;
        }
        signal.outcome = Some(SignalOutcome {
            outcome: o.outcome,
            agency_id: f.envelope.agency_id.clone(),
            recorded_by: o.recorded_by.trim().to_owned(),
            fact: Some(reference(f)),
        });
    }
    ChildSignals {
        signals,
        lead_authority,
    }
}

pub fn signals_key(child: &ChildId) -> Vec<u8> {
    let mut k = vec![SIGNALS];
    k.extend_from_slice(child.as_bytes());
    k
}

/// Adds to `batch` the write that makes `child`'s signals those of `facts`; returns the signals that are
/// new or changed (fired, or an outcome recorded), for notices.
pub(crate) fn rederive(
    tree: &sled::Tree,
    batch: &mut Writes,
    spec: &SignalSpec,
    child: &ChildId,
    facts: &[Fact],
) -> Result<Vec<SignalNotice>, ProjectorError> {
    let key = signals_key(child);
    // An old record that cannot be read is replaced by the new derivation.
    let old = match tree.get(&key)? {
        Some(v) => ChildSignals::decode(v.as_ref()).unwrap_or_default(),
        None => ChildSignals::default(),
    };
    let new = derive(spec, facts);
    if new == old || (new.signals.is_empty() && old.signals.is_empty()) {
        return Ok(Vec::new());
    }
    let before: BTreeMap<String, &StoredSignal> = old.signals.iter().map(|s| (s.id(), s)).collect();
    let notices = new
        .signals
        .iter()
        .filter(|s| before.get(&s.id()) != Some(s))
        .map(|s| SignalNotice {
            child: *child,
            signal: s.clone(),
            lead_authority: new.lead_authority.clone(),
        })
        .collect();
    if new.signals.is_empty() {
        batch.remove(key);
    } else {
        batch.insert(key, new.encode_to_vec());
    }
    Ok(notices)
}

/// Signals as a read model: a child's multi-agency signals (`S`).
impl ReadModel for SignalSpec {
    fn prefixes(&self) -> &'static [u8] {
        &[SIGNALS]
    }

    fn derive(
        &self,
        tree: &sled::Tree,
        writes: &mut Writes,
        child: &ChildId,
        facts: &[Fact],
    ) -> Result<Derived, ProjectorError> {
        Ok(Box::new(rederive(tree, writes, self, child, facts)?))
    }

    fn announce(&self, derived: Vec<Derived>) {
        for d in derived {
            if let Ok(notices) = d.downcast::<Vec<SignalNotice>>() {
                for notice in *notices {
                    // No receivers is fine: nobody is listening.
                    let _ = self.notices.send(notice);
                }
            }
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Projector {
    /// Derives and stores each child's signals with `spec` whenever its views are derived.
    pub fn with_signals(self, spec: SignalSpec) -> Self {
        self.with_model(Arc::new(spec))
    }

    /// The signal spec, when this projector derives signals.
    pub fn signal_spec(&self) -> Option<&SignalSpec> {
        self.model::<SignalSpec>()
    }

    /// Every signal of `child`, as its facts decide them.
    pub fn signals_of(&self, child: &ChildId) -> Result<ChildSignals, ProjectorError> {
        let key = signals_key(child);
        match self.model.get(&key)? {
            None => Ok(ChildSignals::default()),
            Some(v) => Ok(ChildSignals::decode(v.as_ref()).unwrap_or_else(|e| {
                self.damage.set_aside(&key, e);
                ChildSignals::default()
            })),
        }
    }

    /// Up to `limit` children's signal records, in child order, after `after`'s (a page token), with the
    /// last child looked at when more may follow. A page costs what it holds, however many children there are.
    #[allow(clippy::type_complexity)]
    pub fn signals_page(
        &self,
        after: Option<&ChildId>,
        limit: usize,
    ) -> Result<(Vec<(ChildId, ChildSignals)>, Option<ChildId>), ProjectorError> {
        use std::ops::Bound;
        let start = match after {
            Some(child) => Bound::Excluded(signals_key(child)),
            None => Bound::Included(vec![SIGNALS]),
        };
        let end = Bound::Excluded(vec![SIGNALS + 1]);
        let (mut out, mut looked_at, mut last) = (Vec::new(), 0, None);
        for kv in self.model.range::<Vec<u8>, _>((start, end)) {
            if looked_at == limit {
                return Ok((out, last));
            }
            let (k, v) = kv?;
            looked_at += 1;
            if let Some(child) = k.get(1..17).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
                last = Some(ChildId::from_bytes(child));
            }
            out.extend(self.signal_record(&k, &v));
        }
        Ok((out, None))
    }

    /// A child's stored signal record read back; a damaged one is set aside.
    fn signal_record(&self, k: &[u8], v: &[u8]) -> Option<(ChildId, ChildSignals)> {
        let Some(child) = k.get(1..17).and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
            self.damage.set_aside(k, "a short signal key");
            return None;
        };
        match ChildSignals::decode(v) {
            Ok(signals) => Some((ChildId::from_bytes(child), signals)),
            Err(e) => {
                self.damage.set_aside(k, e);
                None
            }
        }
    }

    /// Every child's signals, in child order; only `child`'s when given.
    pub fn signals(&self, child: Option<&ChildId>) -> Result<Vec<(ChildId, ChildSignals)>, ProjectorError> {
        let prefix = child.map_or_else(|| vec![SIGNALS], signals_key);
        let mut out = Vec::new();
        for kv in self.model.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.extend(self.signal_record(&k, &v));
        }
        Ok(out)
    }
}
