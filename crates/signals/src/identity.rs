//! What a signal is called, and what became of the ones it absorbed.
//!
//! Whether and when a signal fires depends only on the set of facts, in the order they occurred
//! ([`crate::evaluate`]). Its name must not: a recipient records an outcome against a signal by name, and a
//! fact recorded late (a missing episode reported days after it happened) can change which fact completes a
//! pattern, and so the name a signal would get from its completing fact. So a signal is named when it
//! first appeared, in the order the facts arrived: `<rule>/<event id of the fact that completed it then>`,
//! and keeps that name while the facts that raised it keep raising it (it shares a cited fact with what it
//! was). When a late fact makes two signals of a rule one, the one that keeps its name lists the other's in
//! `replaces`. A name names one signal: a new signal whose completing fact's name another already holds is
//! `<rule>/<event id>~2` (then `~3`…).
//!
//! Pure: the same facts with the same arrival times give the same names, so a rebuild names every signal as
//! the live node did. Facts that arrive in the order they occurred give each signal its completing fact's
//! name, without replaying anything.

use std::collections::BTreeSet;

use std::sync::Arc;

use crate::evaluate::{Signal, evaluate_sorted};
use crate::indicator::Observation;
use crate::rule::{Rule, SignalRules};

/// Late arrivals replayed to name a child's signals, at most (the most recent ones): a child whose indicator
/// facts mostly arrive out of order costs two evaluations per replayed arrival, not per fact.
pub const LATE_REPLAYED_MAX: usize = 64;

/// A signal with its stable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub signal: Signal,
    /// `<rule>/<event id>`: the name it was first given.
    pub id: String,
    /// Names of earlier signals of the same rule that this one absorbed, oldest first.
    pub replaces: Vec<String>,
}

/// The signals the facts that had occurred by `until_ms` raise ([`crate::evaluate_until`], same order),
/// each with its stable name.
pub fn identify(rules: &SignalRules, observations: &[Observation], until_ms: i64) -> Vec<Identified> {
    let mut arrived: Vec<&Observation> = observations.iter().filter(|o| o.at_ms <= until_ms).collect();
    arrived.sort_by(|a, b| a.arrival_key().cmp(&b.arrival_key()));
    // The same event given twice is one fact: its first arrival.
    let mut seen = BTreeSet::new();
    arrived.retain(|o| seen.insert(o.event_id.as_str()));
    // Where a fact arrived that occurred before one already there: the moments names can change.
    let mut latest = None;
    let mut late: Vec<usize> = Vec::new();
    for (k, o) in arrived.iter().enumerate() {
        match latest {
            Some(l) if o.order_key() < l => late.push(k),
            _ => latest = Some(o.order_key()),
        }
    }
    // Each late arrival costs two evaluations of the rules that read it: replay the last few only. Before
    // them the names are those the facts as they then stood give (each signal its completing fact's). A
    // rule that does not read the late fact raises the same signals with it as without it, and names carried
    // over facts that arrived in order are each signal's own, so only the rules reading it are stepped.
    let late = &late[late.len().saturating_sub(LATE_REPLAYED_MAX)..];
    let mut known: Vec<Identified> = Vec::new();
    // The facts that had arrived by a moment, in the order they occurred (what evaluation reads).
    let mut in_order: Vec<&Observation> = Vec::with_capacity(arrived.len());
    fn occurred<'a>(prefix: &[&'a Observation], in_order: &mut Vec<&'a Observation>) {
        in_order.clear();
        in_order.extend(prefix.iter().copied());
        in_order.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    }
    for &k in late {
        let reading: Vec<&Arc<Rule>> = rules
            .rules()
            .iter()
            .filter(|r| r.kind.reads(arrived[k]))
            .collect();
        if reading.is_empty() {
            continue;
        }
        for prefix in [&arrived[..k], &arrived[..=k]] {
            occurred(prefix, &mut in_order);
            let now = evaluate_sorted(reading.iter().copied(), &in_order);
            let (stepped, others): (Vec<Identified>, Vec<Identified>) = std::mem::take(&mut known)
                .into_iter()
                .partition(|i| reading.iter().any(|r| r.id == i.signal.rule.id));
            known = others;
            known.extend(carry(&stepped, now));
        }
    }
    occurred(&arrived, &mut in_order);
    carry(&known, evaluate_sorted(rules.rules().iter(), &in_order))
}

/// Names `now` from `before`: each signal of `now` keeps the name of the signal of its rule it shares the
/// most cited facts with (the earliest named, on a tie), else takes its completing fact's; a signal of
/// `before` that none keeps is recorded as replaced by the one of its rule that shares a fact with it.
fn carry(before: &[Identified], now: Vec<Signal>) -> Vec<Identified> {
    fn cited(s: &Signal) -> BTreeSet<&str> {
        s.facts.iter().map(|f| f.event_id.as_str()).collect()
    }
    let before_cited: Vec<BTreeSet<&str>> = before.iter().map(|b| cited(&b.signal)).collect();
    let mut taken = vec![false; before.len()];
    let mut out: Vec<Identified> = Vec::with_capacity(now.len());
    // Whether each of `out` carried its name from `before` (else it took its completing fact's).
    let mut carried: Vec<bool> = Vec::with_capacity(now.len());
    for signal in now {
        let best = {
            let mine = cited(&signal);
            before
                .iter()
                .enumerate()
                .filter(|(j, b)| !taken[*j] && b.signal.rule.id == signal.rule.id)
                .map(|(j, _)| (before_cited[j].intersection(&mine).count(), j))
                .filter(|(shared, _)| *shared > 0)
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        };
        let (id, replaces) = match best {
            Some((_, j)) => {
                taken[j] = true;
                (before[j].id.clone(), before[j].replaces.clone())
            }
            None => (signal.id(), Vec::new()),
        };
        carried.push(best.is_some());
        out.push(Identified { signal, id, replaces });
    }
    // A new signal's own name may be one a signal of `before` holds (it was completed by the same fact and
    // has since come to cite others): a name names one signal, so the newcomer takes the first of
    // `<name>~2`, `<name>~3`… that no signal holds or held: a name a signal replaced still answers to it
    // (an outcome recorded against it counts for the survivor), so it is never given again.
    let held: BTreeSet<String> = before
        .iter()
        .flat_map(|b| std::iter::once(&b.id).chain(&b.replaces))
        .cloned()
        .collect();
    for k in 0..out.len() {
        let clash = !carried[k]
            && (held.contains(&out[k].id)
                || out
                    .iter()
                    .enumerate()
                    .any(|(i, o)| i != k && o.id == out[k].id && (carried[i] || i < k)));
        if clash {
            let base = out[k].id.clone();
            let fresh = (2..)
                .map(|n| format!("{base}~{n}"))
                .find(|n| !held.contains(n) && !out.iter().any(|o| &o.id == n))
                .expect("a free name");
            out[k].id = fresh;
        }
    }
    for (j, gone) in before.iter().enumerate().filter(|(j, _)| !taken[*j]) {
        let into = out.iter_mut().find(|o| {
            o.signal.rule.id == gone.signal.rule.id
                && cited(&o.signal).intersection(&before_cited[j]).count() > 0
        });
        if let Some(into) = into {
            into.replaces.extend(gone.replaces.iter().cloned());
            into.replaces.push(gone.id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::Indicator;

    const DAY: i64 = 86_400_000;

    fn fact(id: &str, day: i64, arrived_day: i64, agency: &str, seq: u64, i: Indicator) -> Observation {
        Observation::new(id, day * DAY, agency, &format!("EVENTS_{agency}"), seq)
            .with(i)
            .arrived(arrived_day * DAY)
    }

    #[test]
    fn facts_arriving_as_they_occur_name_each_signal_by_its_completing_fact() {
        let facts = [
            fact("m1", 0, 0, "police-sy", 1, Indicator::Missing),
            fact("m2", 3, 3, "police-sy", 2, Indicator::Missing),
            fact("a1", 5, 5, "school-oakwood", 1, Indicator::Absence),
            fact("x1", 9, 9, "health-rgh-ed", 1, Indicator::IntoxicationAttendance),
        ];
        let named = identify(&SignalRules::england(), &facts, i64::MAX);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].id, "S02/x1");
        assert!(named[0].replaces.is_empty());
    }

    #[test]
    fn a_backdated_fact_that_completes_the_pattern_earlier_does_not_rename_the_signal() {
        // S02 (three of: repeat missing, absence or exclusion, intoxication or sexual-health attendance,
        // older associates) fired on day 9 at the A&E attendance: "S02/x1". Then an older-associate
        // indicator that occurred on day 4 arrives on day 12: in occurrence order the pattern was complete
        // at the school absence (day 5).
        let facts = [
            fact("m1", 0, 0, "police-sy", 1, Indicator::Missing),
            fact("m2", 3, 3, "police-sy", 2, Indicator::Missing),
            fact("a1", 5, 5, "school-oakwood", 1, Indicator::Absence),
            fact("x1", 9, 9, "health-rgh-ed", 1, Indicator::IntoxicationAttendance),
            fact("o1", 4, 12, "police-sy", 3, Indicator::OlderAssociate),
        ];
        let rules = SignalRules::england();
        let plain = crate::evaluate(&rules, &facts);
        assert_eq!(plain.len(), 1);
        assert_eq!(
            plain[0].id(),
            "S02/a1",
            "completed, in occurrence order, by the absence"
        );
        let named = identify(&rules, &facts, i64::MAX);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].id, "S02/x1", "the name it was given when it first fired");
        assert_eq!(named[0].signal, plain[0]);
    }

    #[test]
    fn two_signals_a_late_fact_joins_are_one_that_names_the_other() {
        // Two S01 signals (concerns from two agencies within 28 days): days 0 and 1, then days 40 and 41.
        // A concern that occurred on day 20 arrives last: the window now chains them... or not; whatever the
        // evaluation decides, every name it held before is either kept or listed as replaced.
        let facts = [
            fact("c1", 0, 0, "police-sy", 1, Indicator::Concern),
            fact("c2", 1, 1, "school-oakwood", 1, Indicator::Concern),
            fact("c3", 40, 40, "police-sy", 2, Indicator::Concern),
            fact("c4", 41, 41, "school-oakwood", 2, Indicator::Concern),
            fact("c5", 20, 50, "health-rgh-ed", 1, Indicator::Concern),
        ];
        let rules = SignalRules::england();
        let before = identify(&rules, &facts[..4], i64::MAX);
        let names: Vec<&str> = before.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(names, ["S01/c2", "S01/c4"]);
        let after = identify(&rules, &facts, i64::MAX);
        for name in names {
            assert!(
                after
                    .iter()
                    .any(|s| s.id == name || s.replaces.iter().any(|r| r == name)),
                "{name} is kept or named as replaced: {after:?}"
            );
        }
        let plain = crate::evaluate(&rules, &facts);
        assert_eq!(
            after.iter().map(|s| &s.signal).collect::<Vec<_>>(),
            plain.iter().collect::<Vec<_>>(),
            "names change nothing about what fires"
        );
    }

    /// S01 concerns: police d0 and d5, school d10 and d12, police d14 as they occurred, then a school
    /// concern of day 3 arriving on day 20.
    fn split_by_a_late_concern() -> [Observation; 6] {
        [
            fact("c1", 0, 0, "police-sy", 1, Indicator::Concern),
            fact("c2", 5, 5, "police-sy", 2, Indicator::Concern),
            fact("c3", 10, 10, "school-oakwood", 1, Indicator::Concern),
            fact("c4", 12, 12, "school-oakwood", 2, Indicator::Concern),
            fact("c5", 14, 14, "police-sy", 3, Indicator::Concern),
            fact("late", 3, 20, "school-oakwood", 3, Indicator::Concern),
        ]
    }

    #[test]
    fn a_late_fact_that_splits_a_signal_gives_the_new_one_a_name_of_its_own() {
        // S01 (concerns from two agencies within 28 days), cited as every concern in the window. As they
        // arrived: police d0 and d5, school d10 → one signal citing all three, "S01/c3"; school d12, police
        // d14 → "S01/c5". Then a school concern of day 3 arrives: in occurrence order S01 now fires at it
        // (police d0, school d3), again at the school's d10 (police d5, school d10), and at d14.
        let facts = split_by_a_late_concern();
        let rules = SignalRules::england();
        let before: Vec<String> = identify(&rules, &facts[..5], i64::MAX)
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(before, ["S01/c3", "S01/c5"]);
        let after = identify(&rules, &facts, i64::MAX);
        let cited: Vec<Vec<&str>> = after
            .iter()
            .map(|s| s.signal.facts.iter().map(|f| f.event_id.as_str()).collect())
            .collect();
        assert_eq!(cited, [vec!["c1", "late"], vec!["c2", "c3"], vec!["c4", "c5"]]);
        let ids: Vec<&str> = after.iter().map(|s| s.id.as_str()).collect();
        let distinct: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "every signal a name of its own: {ids:?}");
        assert!(ids.contains(&"S01/c3") && ids.contains(&"S01/c5"), "{ids:?}");
        // One step of the naming alone, taking the signals in the order they fire: the first new signal
        // shares c1 with "S01/c3" and takes its name; the second is completed by c3, and must not be given
        // "S01/c3" a second time.
        let stepped = carry(
            &identify(&rules, &facts[..5], i64::MAX),
            crate::evaluate(&rules, &facts),
        );
        let ids: Vec<&str> = stepped.iter().map(|s| s.id.as_str()).collect();
        let distinct: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "every signal a name of its own: {ids:?}");
    }

    #[test]
    fn a_new_signal_never_takes_a_name_another_holds() {
        // A signal once completed by c3 ("S01/c3") that has come to cite c1 and a late fact, and a new
        // signal completed by c3: the first keeps its name, the newcomer gets one of its own.
        let facts = split_by_a_late_concern();
        let rules = SignalRules::england();
        let now = crate::evaluate(&rules, &facts);
        assert_eq!(now[1].id(), "S01/c3", "the second is completed by c3");
        let before = vec![Identified {
            signal: now[0].clone(),
            id: "S01/c3".into(),
            replaces: Vec::new(),
        }];
        let named = carry(&before, now);
        let ids: Vec<&str> = named.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["S01/c3", "S01/c3~2", "S01/c5"]);
    }

    #[test]
    fn a_new_signal_never_takes_a_name_a_survivor_answers_to() {
        // "S01/c3" was absorbed into "S01/c1" (an outcome recorded against S01/c3 counts for it); a new
        // signal completed by c3 must not be "S01/c3" again.
        let facts = split_by_a_late_concern();
        let rules = SignalRules::england();
        let now = crate::evaluate(&rules, &facts);
        assert_eq!(now[1].id(), "S01/c3");
        let before = vec![Identified {
            signal: now[0].clone(),
            id: "S01/c1".into(),
            replaces: vec!["S01/c3".into()],
        }];
        let named = carry(&before, now);
        let ids: Vec<&str> = named.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["S01/c1", "S01/c3~2", "S01/c5"]);
    }

    /// The naming as first written: every rule evaluated again, on a copy of the facts, around each late
    /// arrival. The identification must name every signal as it does.
    fn identify_stepping_every_rule(rules: &SignalRules, observations: &[Observation]) -> Vec<Identified> {
        let mut arrived: Vec<&Observation> = observations.iter().collect();
        arrived.sort_by(|a, b| a.arrival_key().cmp(&b.arrival_key()));
        let mut seen = BTreeSet::new();
        arrived.retain(|o| seen.insert(o.event_id.as_str()));
        let mut latest = None;
        let mut known: Vec<Identified> = Vec::new();
        let named = |k: usize, known: &mut Vec<Identified>| {
            let prefix: Vec<Observation> = arrived[..k].iter().map(|o| (*o).clone()).collect();
            *known = carry(known, crate::evaluate(rules, &prefix));
        };
        for (k, o) in arrived.iter().enumerate() {
            match latest {
                Some(l) if o.order_key() < l => {
                    named(k, &mut known);
                    named(k + 1, &mut known);
                }
                _ => latest = Some(o.order_key()),
            }
        }
        named(arrived.len(), &mut known);
        known
    }

    fn history() -> impl proptest::strategy::Strategy<Value = Vec<Observation>> {
        use proptest::prelude::*;
        const AGENCIES: [&str; 3] = ["police-sy", "school-oakwood", "health-rgh-ed"];
        prop::collection::vec(
            (
                0i64..90,
                0i64..30,
                0usize..3,
                prop::sample::select(Indicator::ALL.to_vec()),
            ),
            0..30,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (day, delay, agency, indicator))| {
                    let agency = AGENCIES[agency];
                    // Arrival: when it occurred, or up to a month later (recorded late).
                    fact(
                        &format!("e{i}"),
                        day,
                        day + delay,
                        agency,
                        i as u64 + 1,
                        indicator,
                    )
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn stepping_only_the_rules_a_late_fact_reads_names_as_stepping_every_rule(facts in history()) {
            let rules = SignalRules::england();
            let named = identify(&rules, &facts, i64::MAX);
            proptest::prop_assert_eq!(&named, &identify_stepping_every_rule(&rules, &facts));
            let ids: BTreeSet<&str> = named.iter().map(|s| s.id.as_str()).collect();
            proptest::prop_assert_eq!(ids.len(), named.len(), "a name names one signal: {:?}", named);
            for s in &named {
                for r in &s.replaces {
                    proptest::prop_assert!(!ids.contains(r.as_str()), "{} is replaced and held: {:?}", r, named);
                }
            }
        }
    }
}
