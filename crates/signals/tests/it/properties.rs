//! Properties of the evaluation over random histories: the order facts are given in never changes the
//! signals; a fact outside a rule's window never completes a pattern with facts on the other side of it;
//! the facts up to T raise exactly the signals that had fired by T.

use halcyon_signals::{Indicator, Observation, SignalRules, evaluate, evaluate_until};
use proptest::prelude::*;

const DAY: i64 = 86_400_000;
const AGENCIES: [&str; 4] = ["police-sy", "school-oakwood", "health-rgh-ed", "csc-rotherham"];

fn history() -> impl Strategy<Value = Vec<Observation>> {
    prop::collection::vec(
        (
            0i64..120 * DAY,
            0usize..4,
            prop::sample::select(Indicator::ALL.to_vec()),
        ),
        0..24,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (at, agency, indicator))| {
                let agency = AGENCIES[agency];
                Observation::new(
                    &format!("e{i}"),
                    at,
                    agency,
                    &format!("EVENTS_{agency}"),
                    i as u64 + 1,
                )
                .with(indicator)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_order_of_facts_never_changes_the_signals(facts in history(), seed in any::<u64>()) {
        let rules = SignalRules::england();
        let mut shuffled = facts.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(evaluate(&rules, &facts), evaluate(&rules, &shuffled));
    }

    #[test]
    fn every_cited_fact_is_inside_the_window_of_the_one_that_completed_it(facts in history()) {
        let rules = SignalRules::england();
        for s in evaluate(&rules, &facts) {
            let completed = s.completed_by().at_ms;
            prop_assert_eq!(completed, s.fired_at_ms);
            for f in &s.facts {
                prop_assert!(f.at_ms <= completed && completed - f.at_ms <= s.rule.window_ms(), "{:?}", s);
            }
        }
    }

    #[test]
    fn a_fact_beyond_the_window_never_triggers(facts in history(), gap_days in 43i64..200) {
        // Move a late fact beyond every window of every earlier fact: no signal may cite both sides.
        let rules = SignalRules::england();
        let late: Vec<Observation> = facts
            .iter()
            .map(|o| Observation { at_ms: o.at_ms + 120 * DAY + gap_days * DAY, event_id: format!("late-{}", o.event_id), sequence: o.sequence + 1000, ..o.clone() })
            .take(1)
            .collect();
        let mut all = facts.clone();
        all.extend(late.iter().cloned());
        for s in evaluate(&rules, &all) {
            let cites_late = s.facts.iter().any(|f| f.event_id.starts_with("late-"));
            let cites_early = s.facts.iter().any(|f| !f.event_id.starts_with("late-"));
            prop_assert!(!(cites_late && cites_early), "{:?}", s);
        }
    }

    #[test]
    fn the_facts_up_to_t_raise_exactly_the_signals_fired_by_t(facts in history(), t in 0i64..120 * DAY) {
        let rules = SignalRules::england();
        let by_t: Vec<_> = evaluate(&rules, &facts).into_iter().filter(|s| s.fired_at_ms <= t).collect();
        prop_assert_eq!(evaluate_until(&rules, &facts, t), by_t);
    }
}
