//! Properties of the calendar and of evaluation over random inputs: working days never land on a weekend
//! or bank holiday, adding N then M is adding N + M, a deadline is never before its start, and a breach,
//! once seen, is never unseen by a caller who asks again later.

use crate::common;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use common::{HOUR_MS, day};
use halcyon_timescales::calendar::{self, add_months};
use halcyon_timescales::{
    Calendar, Condition, Lateness, Occurrence, RuleSet, Status, Timescales, Unit, due_at_ms, evaluate,
};
use proptest::prelude::*;
use proptest::sample::select;
use time::{Date, Duration, Weekday};

static CALENDAR: LazyLock<Calendar> = LazyLock::new(Calendar::england_and_wales);
static TIMESCALES: LazyLock<Timescales> = LazyLock::new(|| {
    let rules = RuleSet::england().merge(RuleSet::local_example()).unwrap();
    Timescales::new(Calendar::england_and_wales(), rules).unwrap()
});

/// A date in the covered years, far enough from the end that 600 working days stay covered.
fn covered_date() -> impl Strategy<Value = Date> {
    (0i64..(365 * 4)).prop_map(|n| day("2024-01-01") + Duration::days(n))
}

/// Any date in a wide range around the covered years.
fn any_date() -> impl Strategy<Value = Date> {
    (-20_000i64..20_000).prop_map(|n| day("2026-01-01") + Duration::days(n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn adding_working_days_never_lands_on_a_weekend_or_bank_holiday(d in covered_date(), n in 1u32..600) {
        let due = CALENDAR.add_working_days(d, n);
        prop_assert!(CALENDAR.covers(due));
        prop_assert!(!matches!(due.weekday(), Weekday::Saturday | Weekday::Sunday), "{d} + {n} = {due}");
        prop_assert!(CALENDAR.holiday(due).is_none(), "{d} + {n} = {due}, a bank holiday");
        prop_assert!(due > d);
        prop_assert_eq!(CALENDAR.working_days_between(d, due), n);
    }

    #[test]
    fn adding_n_then_m_working_days_is_adding_n_plus_m(d in any_date(), n in 0u32..400, m in 0u32..400) {
        prop_assert_eq!(
            CALENDAR.add_working_days(CALENDAR.add_working_days(d, n), m),
            CALENDAR.add_working_days(d, n + m)
        );
    }

    #[test]
    fn adding_working_days_agrees_with_counting_day_by_day(d in any_date(), n in 0u32..60) {
        let mut at = d;
        let mut left = n;
        while left > 0 {
            at = at.next_day().unwrap();
            if CALENDAR.is_working_day(at) {
                left -= 1;
            }
        }
        prop_assert_eq!(CALENDAR.add_working_days(d, n), at);
    }

    #[test]
    fn months_clamp_and_never_overshoot(d in any_date(), n in 0u32..200) {
        let to = add_months(d, n);
        let months = (to.year() - d.year()) * 12 + i32::from(u8::from(to.month())) - i32::from(u8::from(d.month()));
        prop_assert_eq!(months, n as i32);
        prop_assert!(to.day() <= d.day());
        prop_assert!(to.day() == d.day() || to.day() == time::util::days_in_month(to.month(), to.year()));
        prop_assert!(add_months(d, n + 1) > to);
    }

    #[test]
    fn a_deadline_is_never_before_its_start(
        start_ms in -4_000_000_000_000i64..8_000_000_000_000,
        unit in select(Unit::ALL.to_vec()),
        limit in 1u32..2_000,
    ) {
        let limit = limit.min(unit.limit_max());
        let due = due_at_ms(&CALENDAR, unit, limit, start_ms);
        prop_assert!(due >= start_ms);
        if unit == Unit::Hours {
            prop_assert_eq!(due, start_ms + i64::from(limit) * HOUR_MS);
        } else {
            prop_assert_eq!(due, calendar::end_of_day_ms(calendar::date_of_ms(due)), "end of a day");
            prop_assert!(calendar::date_of_ms(due) > calendar::date_of_ms(start_ms));
        }
    }
}

/// The event types the rules use, with the conditions they may carry.
const EVENTS: &[(&str, &[Condition])] = &[
    ("ReferralReceived", &[]),
    (
        "ReferralDecisionRecorded",
        &[Condition::DecisionWithoutAssessment],
    ),
    ("ReferralAcknowledged", &[]),
    ("AssessmentCompleted", &[]),
    ("StrategyDiscussionHeld", &[Condition::Section47Decided]),
    ("InitialConferenceHeld", &[Condition::PlanMade]),
    ("CoreGroupMeetingHeld", &[]),
    ("ReviewConferenceHeld", &[Condition::PlanContinues]),
    ("ChildProtectionPlanEnded", &[]),
    ("PoliceProtectionStarted", &[]),
    ("PoliceProtectionEnded", &[]),
    ("EmergencyProtectionOrderMade", &[Condition::OrderExtended]),
    ("MissingEpisodeClosed", &[]),
    ("ReturnHomeInterviewCompleted", &[]),
    ("LookedAfterPeriodStarted", &[]),
    ("LookedAfterReviewHeld", &[]),
    ("LookedAfterPeriodEnded", &[]),
    ("SeriousIncidentNotified", &[]),
    ("RapidReviewCompleted", &[]),
    (
        "AgencyCheckRequested",
        &[Condition::RagRed, Condition::RagAmber, Condition::RagGreen],
    ),
    ("AgencyCheckResponded", &[]),
];

/// A random history for one child: up to 40 facts over two years, from two agencies and cases.
fn history() -> impl Strategy<Value = Vec<Occurrence>> {
    let start = calendar::start_of_day_ms(day("2026-01-01"));
    prop::collection::vec((0..EVENTS.len(), 0i64..(730 * 24), 0usize..2, any::<u8>()), 0..40).prop_map(
        move |raw| {
            let mut facts: Vec<Occurrence> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (e, hours, who, bits))| {
                    let (event_type, conditions) = EVENTS[e];
                    let (agency, other) = [("la-oxon", "police-tv"), ("police-tv", "la-oxon")][who];
                    let mut o = Occurrence::new(
                        format!("e{i}"),
                        start + hours * HOUR_MS,
                        event_type,
                        agency,
                        format!("case-{who}"),
                    )
                    .with_counterpart(other);
                    for (k, c) in conditions.iter().enumerate() {
                        if bits & (1 << k) != 0 {
                            o = o.with(*c);
                        }
                    }
                    o
                })
                .collect();
            facts.sort_by_key(|o| o.at_ms);
            facts
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_deadline_is_consistent_with_the_moment_asked_about(facts in history(), now_h in 0i64..(800 * 24)) {
        let now = calendar::start_of_day_ms(day("2026-01-01")) + now_h * HOUR_MS;
        let evaluation = evaluate(&TIMESCALES, &facts, now);
        for d in &evaluation.deadlines {
            prop_assert!(d.due_at_ms >= d.started_by.at_ms, "{d}");
            prop_assert!(d.started_by.at_ms <= now, "{d}");
            match &d.status {
                Status::Open { remaining } => {
                    prop_assert!(now <= d.due_at_ms);
                    prop_assert_eq!(remaining.ms, d.due_at_ms - now);
                    prop_assert!(remaining.units <= i64::from(d.rule.limit));
                }
                Status::Met { by, early } => {
                    prop_assert!(by.at_ms <= d.due_at_ms && by.at_ms <= now);
                    prop_assert!(early.units <= i64::from(d.rule.limit));
                }
                Status::Breached { late, .. } => {
                    prop_assert!(now > d.due_at_ms);
                    prop_assert!(late.ms > 0 && late.units >= 1, "{d}");
                    // The words agree with the machine-readable count wherever the units are the same.
                    match (d.rule.unit, d.lateness) {
                        (Unit::WorkingDays, Some(Lateness::WorkingDays(n)))
                        | (Unit::CalendarDays, Some(Lateness::Days(n))) => prop_assert_eq!(n, late.units, "{}", d),
                        (Unit::CalendarMonths, Some(Lateness::Days(n))) => prop_assert!(n >= 1, "{d}"),
                        (Unit::Hours, Some(Lateness::Minutes(m))) => {
                            prop_assert_eq!((m + 59) / 60, late.units, "{}", d);
                        }
                        (unit, lateness) => prop_assert!(false, "{d}: {unit} worded as {lateness:?}"),
                    }
                }
                Status::Stopped { by, .. } => prop_assert!(by.at_ms <= d.due_at_ms),
                Status::Expired => prop_assert!(d.rule.is_expiry() && now > d.due_at_ms),
            }
        }
        prop_assert_eq!(&evaluation, &evaluate(&TIMESCALES, &facts, now), "deterministic");
    }

    #[test]
    fn a_breach_once_seen_is_never_unseen(facts in history(), a_h in 0i64..(800 * 24), b_h in 0i64..(800 * 24)) {
        let base = calendar::start_of_day_ms(day("2026-01-01"));
        let (earlier, later) = (base + a_h.min(b_h) * HOUR_MS, base + a_h.max(b_h) * HOUR_MS);
        let first = evaluate(&TIMESCALES, &facts, earlier);
        let again: BTreeMap<String, _> = evaluate(&TIMESCALES, &facts, later)
            .deadlines
            .into_iter()
            .map(|d| (d.key(), d))
            .collect();
        for d in &first.deadlines {
            // Every deadline is still there, due at the same time.
            let Some(later_d) = again.get(&d.key()) else {
                return Err(TestCaseError::fail(format!("{} disappeared", d.key())));
            };
            prop_assert_eq!(later_d.due_at_ms, d.due_at_ms);
            // A breach stays a breach, from the same moment.
            if d.is_breached() {
                prop_assert!(later_d.is_breached(), "{} was breached, now {:?}", d.key(), later_d.status);
                prop_assert_eq!(later_d.breached_at_ms(), d.breached_at_ms());
            }
            // What was settled stays settled.
            if !d.is_open() && !d.is_breached() {
                prop_assert_eq!(&later_d.status, &d.status);
            }
        }
        // A caller that was down between the two moments finds every breach that began in between.
        let missed = again.values().filter(|d| d.breached_at_ms().is_some_and(|b| b > earlier && b <= later));
        for d in missed {
            let was = first.deadlines.iter().find(|x| x.key() == d.key());
            prop_assert!(was.is_none_or(|x| x.is_open()), "{} breached in between", d.key());
        }
    }
}
