//! Naming a child's signals (`halcyon_signals::identify`) when its facts arrive out of the order they
//! occurred — an agency back-filling its records, say — beside one evaluation of the same facts. The naming
//! runs under the projector's writer lock, so its cost is ingest held up.

use std::hint::black_box;
use std::time::{Duration, Instant};

use halcyon_signals::{Indicator, Observation, SignalRules, evaluate, identify};

use super::{Report, median};

const DAY: i64 = 86_400_000;

/// `n` indicator facts of one child over three agencies, a few days apart; with `late`, every one arrives
/// after all that occurred after it (in reverse order), the worst case for the naming.
fn child(n: usize, late: bool) -> Vec<Observation> {
    let agencies = ["police-sy", "school-oakwood", "health-rgh-ed"];
    let indicators = [
        Indicator::Missing,
        Indicator::Absence,
        Indicator::IntoxicationAttendance,
        Indicator::Concern,
        Indicator::OlderAssociate,
    ];
    (0..n)
        .map(|i| {
            let agency = agencies[i % agencies.len()];
            let at = i as i64 * 3 * DAY;
            let arrived = if late { (2 * n - i) as i64 * 3 * DAY } else { at };
            Observation::new(
                &format!("e{i}"),
                at,
                agency,
                &format!("EVENTS_{agency}"),
                i as u64 + 1,
            )
            .with(indicators[i % indicators.len()])
            .arrived(arrived)
        })
        .collect()
}

/// Calls per second of `f` within `budget`.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget || calls == 0 {
        f();
        calls += 1;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

pub fn rows(report: &mut Report, rounds: usize) {
    let rules = SignalRules::england();
    let budget = Duration::from_millis(500);
    for n in [100, 500] {
        for (late, what) in [(false, "in_order"), (true, "all_late")] {
            let facts = child(n, late);
            let (mut named, mut evaluated) = (vec![], vec![]);
            for _ in 0..rounds.max(1) {
                named.push(rate(budget, || {
                    black_box(identify(&rules, black_box(&facts), i64::MAX));
                }));
                evaluated.push(rate(budget, || {
                    black_box(evaluate(&rules, black_box(&facts)));
                }));
            }
            report.row(
                &format!("signals.naming.{n}_facts.{what}"),
                median(named),
                "children/s",
                "one_evaluation_of_the_same_facts",
                median(evaluated),
            );
        }
    }
}
