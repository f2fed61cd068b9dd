//! Evaluation: a child's facts in, the signals they raise out.
//!
//! Facts are considered in (occurred at, agency, stream, sequence, event id) order, never in the order they
//! arrived, so the same set of facts gives the same signals. For each rule, each fact the rule reads is
//! tried as the one that completes a signal: the window is the facts the rule reads that occurred at most
//! `window_days` before it (and are not after it in that order). When the window holds what the rule looks
//! for, a signal fires at that fact's occurred-at, citing the facts it needed: for a multi-agency rule the
//! latest fact of each concerned agency; for a co-occurrence rule the latest `min_count` facts of each group
//! met. After a rule fires, only later facts count towards its next signal, so one pattern raises one
//! signal, and a new one needs new facts.
//!
//! A signal depends only on facts no later than its firing fact, so evaluating the facts up to T gives
//! exactly the signals that had fired by T ([`evaluate_until`]): "when did this first show?".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::indicator::Observation;
use crate::rule::{Rule, RuleKind, SignalRules};

/// A fact a signal cites: where to find it, never what it says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FactRef {
    pub at_ms: i64,
    pub agency_id: String,
    pub stream: String,
    pub sequence: u64,
    pub event_id: String,
}

impl FactRef {
    fn of(o: &Observation) -> FactRef {
        FactRef {
            at_ms: o.at_ms,
            agency_id: o.agency_id.clone(),
            stream: o.stream.clone(),
            sequence: o.sequence,
            event_id: o.event_id.clone(),
        }
    }
}

/// One signal: a rule, when it first fired, and the facts that raised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub rule: Arc<Rule>,
    /// The occurred-at of the fact that completed it.
    pub fired_at_ms: i64,
    /// In (occurred at, agency, stream, sequence, event id) order; the last one completed it.
    pub facts: Vec<FactRef>,
}

impl Signal {
    /// `S02/<event id of the completing fact>`: the same signal has the same id in every evaluation.
    pub fn id(&self) -> String {
        format!("{}/{}", self.rule.id, self.completed_by().event_id)
    }

    pub fn completed_by(&self) -> &FactRef {
        self.facts.last().expect("a signal cites at least one fact")
    }
}

/// Every signal the facts raise, ordered by (fired at, rule id).
pub fn evaluate(rules: &SignalRules, observations: &[Observation]) -> Vec<Signal> {
    evaluate_until(rules, observations, i64::MAX)
}

/// The signals raised by the facts that had occurred by `until_ms`: those that had fired by then.
pub fn evaluate_until(rules: &SignalRules, observations: &[Observation], until_ms: i64) -> Vec<Signal> {
    let mut sorted: Vec<&Observation> = observations.iter().filter(|o| o.at_ms <= until_ms).collect();
    sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    // The same event given twice is one fact.
    let mut seen = BTreeSet::new();
    sorted.retain(|o| seen.insert(o.event_id.as_str()));
    evaluate_sorted(rules.rules().iter(), &sorted)
}

/// The signals of `rules` that `sorted` raise: distinct facts in (occurred at, agency, stream, sequence,
/// event id) order. Ordered as [`evaluate`] orders them.
pub(crate) fn evaluate_sorted<'r>(
    rules: impl Iterator<Item = &'r Arc<Rule>>,
    sorted: &[&Observation],
) -> Vec<Signal> {
    let mut out = Vec::new();
    for rule in rules {
        fire(rule, sorted, &mut out);
    }
    out.sort_by(|a, b| {
        (a.fired_at_ms, &a.rule.id, a.completed_by()).cmp(&(b.fired_at_ms, &b.rule.id, b.completed_by()))
    });
    out
}

fn fire(rule: &Arc<Rule>, sorted: &[&Observation], out: &mut Vec<Signal>) {
    let read: Vec<&Observation> = sorted.iter().copied().filter(|o| rule.kind.reads(o)).collect();
    let window_ms = rule.window_ms();
    // Facts before `floor` were spent by an earlier signal of this rule.
    let mut floor = 0;
    let mut start = 0;
    for i in 0..read.len() {
        let from_ms = read[i].at_ms.saturating_sub(window_ms);
        start = start.max(floor);
        while read[start].at_ms < from_ms {
            start += 1;
        }
        if let Some(cited) = met(&rule.kind, &read[start..=i]) {
            let mut facts: Vec<FactRef> = cited.into_iter().map(FactRef::of).collect();
            facts.sort_by(|a, b| {
                (a.at_ms, &a.agency_id, &a.stream, a.sequence, &a.event_id).cmp(&(
                    b.at_ms,
                    &b.agency_id,
                    &b.stream,
                    b.sequence,
                    &b.event_id,
                ))
            });
            out.push(Signal {
                rule: rule.clone(),
                fired_at_ms: read[i].at_ms,
                facts,
            });
            floor = i + 1;
        }
    }
}

/// The facts that meet the rule within `window` (in order; the last is the candidate completing fact), if
/// it is met.
fn met<'a>(kind: &RuleKind, window: &[&'a Observation]) -> Option<Vec<&'a Observation>> {
    match kind {
        RuleKind::MultiAgency {
            concerns,
            min_agencies,
        } => {
            let mut latest: BTreeMap<&str, &Observation> = BTreeMap::new();
            for o in window.iter().rev() {
                if o.indicators.iter().any(|i| concerns.contains(i)) {
                    latest.entry(o.agency_id.as_str()).or_insert(o);
                }
            }
            (latest.len() >= *min_agencies as usize).then(|| latest.into_values().collect())
        }
        RuleKind::CoOccurrence {
            indicators,
            min_kinds,
        } => {
            let mut cited: BTreeMap<&str, &Observation> = BTreeMap::new();
            let mut kinds_met = 0;
            for group in indicators {
                let latest: Vec<&Observation> = window
                    .iter()
                    .rev()
                    .copied()
                    .filter(|o| group.matches(o))
                    .take(group.min_count as usize)
                    .collect();
                if latest.len() == group.min_count as usize {
                    kinds_met += 1;
                    cited.extend(latest.into_iter().map(|o| (o.event_id.as_str(), o)));
                }
            }
            (kinds_met >= *min_kinds).then(|| cited.into_values().collect())
        }
    }
}
