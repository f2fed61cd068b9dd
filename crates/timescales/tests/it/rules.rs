//! Every rule of docs/domain.md §3 (and the local MASH example) with a met case and a breached case, table
//! driven (issue 8, must show 1); then T13's expiry, and what each rule-file feature does: conditions,
//! stop events, restarts, recurring reviews, scopes.

use crate::common;

use std::sync::LazyLock;

use common::{HOUR_MS, at, end_of, fact, fact_by, fact_when};
use halcyon_timescales::{
    BreachEnd, Calendar, Condition, Deadline, Evaluation, Occurrence, Resolution, RuleSet, Status,
    StopReason, Timescales, evaluate, format_ms,
};

/// England's statutory rules and the local example, on the England and Wales calendar.
static TIMESCALES: LazyLock<Timescales> = LazyLock::new(|| {
    let rules = RuleSet::england().merge(RuleSet::local_example()).unwrap();
    Timescales::new(Calendar::england_and_wales(), rules).unwrap()
});

fn eval(facts: &[Occurrence], now_ms: i64) -> Evaluation {
    evaluate(&TIMESCALES, facts, now_ms)
}

/// The first deadline of `rule`.
fn first<'a>(evaluation: &'a Evaluation, rule: &str) -> &'a Deadline {
    evaluation
        .of_rule(rule)
        .next()
        .unwrap_or_else(|| panic!("no {rule} deadline in {:#?}", evaluation.deadlines))
}

/// One row of the table: the facts that start the clock under test, its due time, and an end event on
/// time and late, with the margins expected.
struct Row {
    rule: &'static str,
    given: Vec<Occurrence>,
    due: &'static str,
    end: fn(i64) -> Occurrence,
    on_time_ms: i64,
    early_units: i64,
    late_ms: i64,
    late_units: i64,
}

fn police(event_type: &str, at_ms: i64) -> Occurrence {
    fact_by("police-tv", "pp-1", event_type, at_ms)
}

fn check_request(rag: Condition, at_ms: i64) -> Occurrence {
    fact_by("mash-oxon", "m-1", "AgencyCheckRequested", at_ms)
        .with(rag)
        .with_counterpart("police-tv")
}

fn check_response(at_ms: i64) -> Occurrence {
    fact_by("police-tv", "p-9", "AgencyCheckResponded", at_ms).with_counterpart("mash-oxon")
}

fn table() -> Vec<Row> {
    vec![
        // A referral on Christmas Eve 2026: Christmas, the weekend and the Boxing Day substitute skipped.
        Row {
            rule: "T01",
            given: vec![fact("ReferralReceived", at("2026-12-24", 10, 0))],
            due: "2026-12-29T23:59:59.999Z",
            end: |t| fact("ReferralDecisionRecorded", t),
            on_time_ms: at("2026-12-29", 16, 0),
            early_units: 0,
            late_ms: at("2026-12-30", 9, 0),
            late_units: 1,
        },
        // Friday 27 December 2024 + 1 working day = Monday 30th; late over New Year's Day.
        Row {
            rule: "T02",
            given: vec![fact("ReferralReceived", at("2024-12-27", 9, 0))],
            due: "2024-12-30T23:59:59.999Z",
            end: |t| fact("ReferralAcknowledged", t),
            on_time_ms: at("2024-12-27", 15, 0),
            early_units: 1,
            late_ms: at("2025-01-02", 11, 0),
            late_units: 2,
        },
        // 45 working days across Christmas and New Year.
        Row {
            rule: "T03",
            given: vec![fact("ReferralReceived", at("2026-11-02", 12, 0))],
            due: "2027-01-07T23:59:59.999Z",
            end: |t| fact("AssessmentCompleted", t),
            on_time_ms: at("2027-01-07", 17, 0),
            early_units: 0,
            late_ms: at("2027-01-11", 9, 0),
            late_units: 2,
        },
        // A section 47 strategy discussion on Maundy Thursday 2026: Good Friday and Easter Monday skipped.
        Row {
            rule: "T04",
            given: vec![fact_when(
                "StrategyDiscussionHeld",
                at("2026-04-02", 14, 0),
                Condition::Section47Decided,
            )],
            due: "2026-04-27T23:59:59.999Z",
            end: |t| fact("InitialConferenceHeld", t),
            on_time_ms: at("2026-04-24", 10, 0),
            early_units: 1,
            late_ms: at("2026-04-28", 10, 0),
            late_units: 1,
        },
        // Across the 2027 Christmas substitutes and the 2028 New Year substitute; late on a Saturday.
        Row {
            rule: "T05",
            given: vec![fact_when(
                "InitialConferenceHeld",
                at("2027-12-20", 11, 0),
                Condition::PlanMade,
            )],
            due: "2028-01-06T23:59:59.999Z",
            end: |t| fact("CoreGroupMeetingHeld", t),
            on_time_ms: at("2027-12-31", 10, 0),
            early_units: 3,
            late_ms: at("2028-01-08", 10, 0), // Saturday: a limit of 12 (Monday 10th) would have been met
            late_units: 2,
        },
        // 30 November + 3 months = 29 February 2028 (clamped, leap year).
        Row {
            rule: "T07",
            given: vec![fact_when(
                "InitialConferenceHeld",
                at("2027-11-30", 10, 0),
                Condition::PlanMade,
            )],
            due: "2028-02-29T23:59:59.999Z",
            end: |t| fact("ReviewConferenceHeld", t),
            on_time_ms: at("2028-02-29", 12, 0),
            early_units: 0,
            late_ms: at("2028-03-01", 9, 0),
            late_units: 1,
        },
        // The review on 31 August 2027 continues the plan and starts T08: + 6 months = 29 February 2028.
        Row {
            rule: "T08",
            given: vec![
                fact_when(
                    "InitialConferenceHeld",
                    at("2027-02-26", 10, 0),
                    Condition::PlanMade,
                ),
                fact_when(
                    "ReviewConferenceHeld",
                    at("2027-08-31", 10, 0),
                    Condition::PlanContinues,
                ),
            ],
            due: "2028-02-29T23:59:59.999Z",
            end: |t| fact("ReviewConferenceHeld", t),
            on_time_ms: at("2027-12-15", 10, 0),
            early_units: 2,
            late_ms: at("2028-04-01", 10, 0),
            late_units: 2,
        },
        // 72 hours exactly, across the clocks going forward (UTC does not notice).
        Row {
            rule: "T12",
            given: vec![police("PoliceProtectionStarted", at("2026-03-28", 22, 0))],
            due: "2026-03-31T22:00:00.000Z",
            end: |t| police("PoliceProtectionEnded", t),
            on_time_ms: at("2026-03-31", 20, 30),
            early_units: 1,
            late_ms: at("2026-04-01", 1, 30),
            late_units: 4,
        },
        // The police close the episode; the local authority's interview meets it (child scope).
        Row {
            rule: "T14",
            given: vec![police("MissingEpisodeClosed", at("2026-12-31", 20, 0))],
            due: "2027-01-03T20:00:00.000Z",
            end: |t| fact("ReturnHomeInterviewCompleted", t),
            on_time_ms: at("2027-01-02", 9, 0),
            early_units: 35,
            late_ms: at("2027-01-04", 9, 0),
            late_units: 13,
        },
        Row {
            rule: "T15",
            given: vec![fact("LookedAfterPeriodStarted", at("2026-12-18", 15, 0))],
            due: "2027-01-20T23:59:59.999Z",
            end: |t| fact("LookedAfterReviewHeld", t),
            on_time_ms: at("2027-01-14", 10, 0),
            early_units: 4,
            late_ms: at("2027-01-22", 10, 0),
            late_units: 2,
        },
        // The first review (itself late for T15) starts T16: 31 January + 3 months = 30 April.
        Row {
            rule: "T16",
            given: vec![
                fact("LookedAfterPeriodStarted", at("2026-12-18", 15, 0)),
                fact("LookedAfterReviewHeld", at("2027-01-31", 10, 0)),
            ],
            due: "2027-04-30T23:59:59.999Z",
            end: |t| fact("LookedAfterReviewHeld", t),
            on_time_ms: at("2027-04-30", 18, 0),
            early_units: 0,
            late_ms: at("2027-05-01", 10, 0),
            late_units: 1,
        },
        Row {
            rule: "T17",
            given: vec![
                fact("LookedAfterPeriodStarted", at("2026-12-18", 15, 0)),
                fact("LookedAfterReviewHeld", at("2027-01-14", 10, 0)),
                fact("LookedAfterReviewHeld", at("2027-04-30", 10, 0)),
            ],
            due: "2027-10-30T23:59:59.999Z",
            end: |t| fact("LookedAfterReviewHeld", t),
            on_time_ms: at("2027-09-15", 10, 0),
            early_units: 1,
            late_ms: at("2027-11-02", 10, 0),
            late_units: 1,
        },
        // The start event is awaiting the catalogue; the rule works once facts carry it.
        Row {
            rule: "T19",
            given: vec![fact("SeriousIncidentIdentified", at("2026-12-23", 9, 0))],
            due: "2027-01-04T23:59:59.999Z",
            end: |t| fact("SeriousIncidentNotified", t),
            on_time_ms: at("2027-01-04", 9, 0),
            early_units: 0,
            late_ms: at("2027-01-05", 9, 0),
            late_units: 1,
        },
        // Across Easter 2027.
        Row {
            rule: "T20",
            given: vec![fact("SeriousIncidentNotified", at("2027-03-24", 12, 0))],
            due: "2027-04-16T23:59:59.999Z",
            end: |t| fact("RapidReviewCompleted", t),
            on_time_ms: at("2027-04-15", 12, 0),
            early_units: 1,
            late_ms: at("2027-04-19", 8, 0),
            late_units: 1,
        },
        // Local rules: MASH agency checks, answered by the agency asked.
        Row {
            rule: "MASH-RED",
            given: vec![check_request(Condition::RagRed, at("2026-06-10", 9, 0))],
            due: "2026-06-10T11:00:00.000Z",
            end: check_response,
            on_time_ms: at("2026-06-10", 10, 15),
            early_units: 0,
            late_ms: at("2026-06-10", 11, 20),
            late_units: 1,
        },
        Row {
            rule: "MASH-AMBER",
            given: vec![check_request(Condition::RagAmber, at("2026-06-10", 9, 0))],
            due: "2026-06-10T15:00:00.000Z",
            end: check_response,
            on_time_ms: at("2026-06-10", 12, 0),
            early_units: 3,
            late_ms: at("2026-06-10", 17, 0),
            late_units: 2,
        },
        Row {
            rule: "MASH-GREEN",
            given: vec![check_request(Condition::RagGreen, at("2026-06-12", 16, 0))],
            due: "2026-06-13T16:00:00.000Z",
            end: check_response,
            on_time_ms: at("2026-06-13", 15, 0),
            early_units: 1,
            late_ms: at("2026-06-15", 9, 0),
            late_units: 41,
        },
    ]
}

#[test]
fn every_rule_is_met_on_time_and_breached_late() {
    let table = table();
    // Every rule with an end event is in the table (T13 expires instead: its own test below).
    let mut covered: Vec<&str> = table.iter().map(|r| r.rule).collect();
    covered.sort_unstable();
    let mut all: Vec<&str> = TIMESCALES
        .rules()
        .rules()
        .iter()
        .filter(|r| !r.is_expiry())
        .map(|r| r.id.as_str())
        .collect();
    all.sort_unstable();
    assert_eq!(covered, all);

    for row in &table {
        let id = row.rule;
        let later = row.late_ms + 30 * 24 * HOUR_MS;

        // Met on time.
        let mut facts = row.given.clone();
        facts.push((row.end)(row.on_time_ms));
        let evaluation = eval(&facts, later);
        let d = first(&evaluation, id);
        assert_eq!(format_ms(d.due_at_ms), row.due, "{id} due");
        assert!(!d.beyond_calendar, "{id}");
        match &d.status {
            Status::Met { by, early } => {
                assert_eq!(by.at_ms, row.on_time_ms, "{id}");
                assert_eq!(early.units, row.early_units, "{id} early by {early}");
                assert_eq!(early.ms, d.due_at_ms - row.on_time_ms, "{id}");
                assert_eq!(early.unit, d.rule.unit);
            }
            other => panic!("{id}: expected met, got {other:?}"),
        }

        // Met late: breached, and resolved.
        let mut facts = row.given.clone();
        facts.push((row.end)(row.late_ms));
        let evaluation = eval(&facts, later);
        let d = first(&evaluation, id);
        match &d.status {
            Status::Breached {
                late,
                resolution: Some(Resolution::MetLate(by)),
            } => {
                assert_eq!(by.at_ms, row.late_ms, "{id}");
                assert_eq!(late.units, row.late_units, "{id} late by {late}");
                assert_eq!(late.ms, row.late_ms - d.due_at_ms, "{id}");
            }
            other => panic!("{id}: expected breached and met late, got {other:?}"),
        }
        assert_eq!(d.breached_at_ms(), Some(d.due_at_ms + 1));

        // No end event: open until the due time, breached from the millisecond after.
        let open = eval(&row.given, first(&evaluation, id).due_at_ms);
        assert!(first(&open, id).is_open(), "{id}: {:?}", first(&open, id).status);
        let breached = eval(&row.given, row.late_ms);
        match &first(&breached, id).status {
            Status::Breached {
                late,
                resolution: None,
            } => assert_eq!(late.units, row.late_units, "{id}"),
            other => panic!("{id}: expected breached and still open, got {other:?}"),
        }
    }
}

#[test]
fn t13_an_emergency_protection_order_expires_rather_than_breaches() {
    let order = police("EmergencyProtectionOrderMade", at("2026-12-28", 15, 0));
    let facts = vec![order.clone()];
    let open = eval(&facts, at("2027-01-05", 23, 0));
    let d = first(&open, "T13");
    assert_eq!(format_ms(d.due_at_ms), "2027-01-05T23:59:59.999Z");
    match &d.status {
        Status::Open { remaining } => assert_eq!(remaining.ms, 59 * 60_000 + 59_999),
        other => panic!("expected open, got {other:?}"),
    }
    let expired = eval(&facts, at("2027-01-06", 0, 0));
    assert_eq!(first(&expired, "T13").status, Status::Expired);
    assert_eq!(expired.breached().count(), 0, "an expiry is not a breach");
    // A further order replaces the running clock.
    let renewed = vec![
        order,
        police("EmergencyProtectionOrderMade", at("2027-01-04", 10, 0)),
    ];
    let evaluation = eval(&renewed, at("2027-01-06", 0, 0));
    let clocks: Vec<&Deadline> = evaluation.of_rule("T13").collect();
    assert!(matches!(
        &clocks[0].status,
        Status::Stopped {
            reason: StopReason::Superseded,
            ..
        }
    ));
    assert!(clocks[1].is_open());
    assert_eq!(format_ms(clocks[1].due_at_ms), "2027-01-12T23:59:59.999Z");
}

// ---------------------------------------------------------------------------------------------------------
// The clock is the caller's: breaches appear without new facts, and asking later catches up.

#[test]
fn a_referral_with_no_decision_breaches_without_any_further_event() {
    let referral = fact("ReferralReceived", at("2026-12-24", 10, 0));
    let facts = vec![referral];
    let before = eval(&facts, at("2026-12-29", 23, 0));
    let t01 = first(&before, "T01");
    assert!(t01.is_open());
    assert_eq!(before.next_change_ms(), Some(end_of("2026-12-29") + 1));
    // Two working days later, with nothing published in between.
    let after = eval(&facts, at("2026-12-31", 12, 0));
    let t01 = first(&after, "T01");
    match &t01.status {
        Status::Breached {
            late,
            resolution: None,
        } => {
            assert_eq!(late.units, 2);
            assert_eq!(late.to_string(), "2 working days (1 d 12 h)");
        }
        other => panic!("{other:?}"),
    }
    // As a person reads it: Wednesday 30 and Thursday 31 December have passed since the due date.
    assert_eq!(
        t01.lateness.map(|l| l.sentence(BreachEnd::StillOpen)).as_deref(),
        Some("Overdue by 2 working days")
    );
    assert_eq!(t01.breached_at_ms(), Some(at("2026-12-30", 0, 0)));
    assert_eq!(t01.key(), format!("T01/{}", facts[0].event_id));
    // A decision comes on 4 January 2027: late by 3 working days (29th due; 30th, 31st, 4th).
    let mut facts = facts;
    facts.push(fact("ReferralDecisionRecorded", at("2027-01-04", 9, 30)));
    let closed = eval(&facts, at("2027-01-04", 10, 0));
    match &first(&closed, "T01").status {
        Status::Breached {
            late,
            resolution: Some(Resolution::MetLate(by)),
        } => {
            assert_eq!(late.units, 3);
            assert_eq!(by.event_type, "ReferralDecisionRecorded");
        }
        other => panic!("{other:?}"),
    }
    // New Year's Day is a bank holiday: 30 and 31 December and Monday 4 January are the working days late.
    let t01 = first(&closed, "T01");
    assert_eq!(
        t01.lateness.map(|l| l.sentence(BreachEnd::Met)).as_deref(),
        Some("Met 3 working days late")
    );
}

#[test]
fn evaluation_is_as_of_now_deterministic_and_independent_of_input_order() {
    let facts = vec![
        fact("ReferralReceived", at("2026-03-02", 9, 0)),
        fact("ReferralAcknowledged", at("2026-03-02", 11, 0)),
        fact("ReferralDecisionRecorded", at("2026-03-04", 9, 0)),
        fact("AssessmentCompleted", at("2026-04-20", 9, 0)),
    ];
    let now = at("2026-05-01", 0, 0);
    let a = eval(&facts, now);
    assert_eq!(a, eval(&facts, now), "the same inputs give the same answer");
    let mut reversed = facts.clone();
    reversed.reverse();
    assert_eq!(a, eval(&reversed, now), "facts are taken in time order");
    // As of the morning after the referral, the decision (later) is not known yet.
    let then = eval(&facts, at("2026-03-03", 9, 0));
    assert!(first(&then, "T01").is_open());
    assert!(matches!(first(&then, "T02").status, Status::Met { .. }));
    assert!(matches!(first(&a, "T01").status, Status::Breached { .. }));
    assert!(matches!(first(&a, "T03").status, Status::Met { .. }));
}

#[test]
fn a_deadline_beyond_the_calendar_says_so() {
    let late_referral = fact("ReferralReceived", at("2030-12-20", 9, 0));
    let evaluation = eval(&[late_referral], at("2030-12-21", 9, 0));
    assert!(!first(&evaluation, "T01").beyond_calendar);
    assert!(
        first(&evaluation, "T03").beyond_calendar,
        "45 working days reach into 2031"
    );
    assert!(
        first(&evaluation, "T03")
            .to_string()
            .contains("[beyond the bank-holiday calendar]")
    );
}

// ---------------------------------------------------------------------------------------------------------
// Conditions, stops, restarts, recurrence and scope.

#[test]
fn conditions_decide_whether_a_clock_starts() {
    let facts = vec![
        fact("StrategyDiscussionHeld", at("2026-05-05", 10, 0)), // no section 47
        fact("InitialConferenceHeld", at("2026-05-06", 10, 0)),  // no plan
        fact_by(
            "mash-oxon",
            "m-1",
            "AgencyCheckRequested",
            at("2026-05-06", 10, 0),
        )
        .with_counterpart("police-tv"), // no RAG
    ];
    let evaluation = eval(&facts, at("2026-05-07", 0, 0));
    assert!(evaluation.deadlines.is_empty(), "{:#?}", evaluation.deadlines);
}

#[test]
fn a_decision_without_assessment_stops_the_assessment_clock() {
    let referral = fact("ReferralReceived", at("2026-05-05", 10, 0));
    let nfa = fact_when(
        "ReferralDecisionRecorded",
        at("2026-05-06", 10, 0),
        Condition::DecisionWithoutAssessment,
    );
    let evaluation = eval(&[referral.clone(), nfa], at("2026-09-01", 0, 0));
    assert!(matches!(first(&evaluation, "T01").status, Status::Met { .. }));
    match &first(&evaluation, "T03").status {
        Status::Stopped { by, reason } => {
            assert_eq!(*reason, StopReason::StopEvent);
            assert_eq!(by.event_type, "ReferralDecisionRecorded");
        }
        other => panic!("{other:?}"),
    }
    // A decision to assess leaves it running.
    let s17 = fact("ReferralDecisionRecorded", at("2026-05-06", 10, 0));
    let evaluation = eval(&[referral, s17], at("2026-09-01", 0, 0));
    assert!(first(&evaluation, "T03").is_breached());
}

#[test]
fn a_later_section_47_strategy_discussion_restarts_the_conference_clock() {
    let facts = vec![
        fact_when(
            "StrategyDiscussionHeld",
            at("2026-06-01", 10, 0),
            Condition::Section47Decided,
        ),
        fact_when(
            "StrategyDiscussionHeld",
            at("2026-06-10", 10, 0),
            Condition::Section47Decided,
        ),
        fact("InitialConferenceHeld", at("2026-06-30", 10, 0)),
    ];
    let evaluation = eval(&facts, at("2026-07-31", 0, 0));
    let clocks: Vec<&Deadline> = evaluation.of_rule("T04").collect();
    assert_eq!(clocks.len(), 2);
    // The first would have been due 22 June; it was superseded before then, so it is not a breach.
    assert!(matches!(
        &clocks[0].status,
        Status::Stopped {
            reason: StopReason::Superseded,
            ..
        }
    ));
    // From 10 June, 15 working days is 1 July: met.
    assert_eq!(format_ms(clocks[1].due_at_ms), "2026-07-01T23:59:59.999Z");
    assert!(matches!(clocks[1].status, Status::Met { .. }));
    assert_eq!(evaluation.breached().count(), 0);
}

#[test]
fn review_conferences_recur_until_the_plan_ends() {
    let facts = vec![
        fact_when(
            "InitialConferenceHeld",
            at("2026-01-15", 10, 0),
            Condition::PlanMade,
        ),
        fact("CoreGroupMeetingHeld", at("2026-01-22", 10, 0)),
        fact_when(
            "ReviewConferenceHeld",
            at("2026-04-14", 10, 0),
            Condition::PlanContinues,
        ),
        fact_when(
            "ReviewConferenceHeld",
            at("2026-10-01", 10, 0),
            Condition::PlanContinues,
        ),
        fact("ReviewConferenceHeld", at("2027-03-30", 10, 0)), // the plan ends here
    ];
    let evaluation = eval(&facts, at("2028-01-01", 0, 0));
    let summary: Vec<(String, bool)> = evaluation
        .deadlines
        .iter()
        .map(|d| (d.rule.id.clone(), matches!(d.status, Status::Met { .. })))
        .collect();
    assert_eq!(
        summary,
        [
            ("T05".to_owned(), true),
            ("T07".to_owned(), true),
            ("T08".to_owned(), true),
            ("T08".to_owned(), true),
        ]
    );
    let t08: Vec<&Deadline> = evaluation.of_rule("T08").collect();
    assert_eq!(format_ms(t08[0].due_at_ms), "2026-10-14T23:59:59.999Z");
    assert_eq!(format_ms(t08[1].due_at_ms), "2027-04-01T23:59:59.999Z");
    assert_eq!(evaluation.next_change_ms(), None, "nothing left to run");
}

#[test]
fn a_plan_ending_stops_the_running_review_clock_and_a_breach_stays_a_breach() {
    let start = fact_when(
        "InitialConferenceHeld",
        at("2026-01-15", 10, 0),
        Condition::PlanMade,
    );
    // Ended before the review was due: stopped, no breach.
    let ended = fact("ChildProtectionPlanEnded", at("2026-03-01", 10, 0));
    let evaluation = eval(&[start.clone(), ended], at("2026-12-01", 0, 0));
    assert!(matches!(first(&evaluation, "T07").status, Status::Stopped { .. }));
    // The first core group (due 29 January) never met: breached, then stopped by the plan's end.
    assert!(matches!(
        first(&evaluation, "T05").status,
        Status::Breached {
            resolution: Some(Resolution::Stopped(_, StopReason::StopEvent)),
            ..
        }
    ));
    // Ended after it was due: the breach happened, and it says how it ended.
    let ended = fact("ChildProtectionPlanEnded", at("2026-05-01", 10, 0));
    let evaluation = eval(&[start, ended], at("2026-12-01", 0, 0));
    match &first(&evaluation, "T07").status {
        Status::Breached {
            late,
            resolution: Some(Resolution::Stopped(by, StopReason::StopEvent)),
        } => {
            assert_eq!(late.units, 1, "15 April due, 1 May is within the next month");
            assert_eq!(by.event_type, "ChildProtectionPlanEnded");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn looked_after_reviews_chain_and_stop_when_the_child_leaves_care() {
    let facts = vec![
        fact("LookedAfterPeriodStarted", at("2026-02-02", 10, 0)),
        fact("LookedAfterReviewHeld", at("2026-02-25", 10, 0)), // T15 met; T16 starts
        fact("LookedAfterReviewHeld", at("2026-05-20", 10, 0)), // T16 met; T17 starts
        fact("LookedAfterReviewHeld", at("2026-11-10", 10, 0)), // T17 met; the next T17 starts
        fact("LookedAfterPeriodEnded", at("2027-01-08", 10, 0)), // stops it
    ];
    let evaluation = eval(&facts, at("2028-01-01", 0, 0));
    let ids: Vec<&str> = evaluation.deadlines.iter().map(|d| d.rule.id.as_str()).collect();
    assert_eq!(ids, ["T15", "T16", "T17", "T17"]);
    assert!(matches!(evaluation.deadlines[0].status, Status::Met { .. }));
    assert_eq!(
        format_ms(evaluation.deadlines[1].due_at_ms),
        "2026-05-25T23:59:59.999Z"
    );
    assert_eq!(
        format_ms(evaluation.deadlines[2].due_at_ms),
        "2026-11-20T23:59:59.999Z"
    );
    assert!(matches!(evaluation.deadlines[3].status, Status::Stopped { .. }));
    assert_eq!(evaluation.breached().count(), 0);
}

#[test]
fn case_scope_matches_the_same_case_oldest_first() {
    let facts = vec![
        fact("ReferralReceived", at("2026-06-01", 9, 0)),
        fact("ReferralReceived", at("2026-06-01", 11, 0)),
        fact_by(
            "la-other",
            "case-7",
            "ReferralDecisionRecorded",
            at("2026-06-01", 12, 0),
        ), // another case
        fact("ReferralDecisionRecorded", at("2026-06-02", 12, 0)), // meets the first referral
    ];
    let evaluation = eval(&facts, at("2026-06-05", 0, 0));
    let t01: Vec<&Deadline> = evaluation.of_rule("T01").collect();
    match &t01[0].status {
        Status::Met { by, .. } => assert_eq!(by.at_ms, at("2026-06-02", 12, 0)),
        other => panic!("{other:?}"),
    }
    assert!(
        t01[1].is_breached(),
        "the second referral has no decision of its own"
    );
}

#[test]
fn an_agency_check_is_met_only_by_the_agency_asked() {
    let request = check_request(Condition::RagRed, at("2026-06-10", 9, 0));
    let wrong = fact_by(
        "school-17",
        "s-1",
        "AgencyCheckResponded",
        at("2026-06-10", 9, 30),
    )
    .with_counterpart("mash-oxon");
    let other_requester = fact_by(
        "police-tv",
        "p-9",
        "AgencyCheckResponded",
        at("2026-06-10", 9, 40),
    )
    .with_counterpart("mash-elsewhere");
    let evaluation = eval(
        &[request.clone(), wrong, other_requester],
        at("2026-06-10", 10, 0),
    );
    assert!(first(&evaluation, "MASH-RED").is_open());
    let evaluation = eval(
        &[request, check_response(at("2026-06-10", 9, 50))],
        at("2026-06-10", 10, 0),
    );
    assert!(matches!(
        first(&evaluation, "MASH-RED").status,
        Status::Met { .. }
    ));
    assert_eq!(
        evaluation.of_rule("MASH-AMBER").count(),
        0,
        "only the red rule started"
    );
}

#[test]
fn a_deadline_reads_as_a_sentence() {
    let facts = vec![
        fact("ReferralReceived", at("2026-12-24", 10, 0)),
        fact("ReferralDecisionRecorded", at("2026-12-30", 9, 0)),
    ];
    let evaluation = eval(&facts, at("2027-01-01", 0, 0));
    assert_eq!(
        first(&evaluation, "T01").to_string(),
        "T01 referral decision (1 working day), started by ReferralReceived ReferralReceived@1798106400000 at \
         2026-12-24T10:00:00.000Z, due 2026-12-29T23:59:59.999Z: breached, met 1 working day late by \
         ReferralDecisionRecorded at 2026-12-30T09:00:00.000Z"
    );
}

#[test]
fn hour_margins_read_as_durations() {
    let facts = vec![
        police("PoliceProtectionStarted", at("2026-03-28", 22, 0)),
        police("PoliceProtectionEnded", at("2026-04-01", 1, 30)),
    ];
    let evaluation = eval(&facts, at("2026-04-02", 0, 0));
    let shown = first(&evaluation, "T12").to_string();
    assert!(shown.contains("(72 hours)"), "{shown}");
    assert!(
        shown.contains("breached, met 3 hours 30 minutes late by PoliceProtectionEnded"),
        "{shown}"
    );
    let open = eval(&facts[..1], at("2026-03-30", 12, 15));
    let shown = first(&open, "T12").to_string();
    assert!(shown.ends_with("open, 1 d 9 h 45 min left"), "{shown}");
}

#[test]
fn occurrences_built_from_events_drive_the_rules() {
    use halcyon_schema::pb;
    use halcyon_schema::pb::event::Kind;
    let discussion = Kind::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
        participant_agency_ids: vec!["police-tv".into()],
        section47_decided: true,
        summary: String::new(),
    });
    let conference = Kind::InitialConferenceHeld(pb::InitialConferenceHeld {
        plan_made: true,
        ..Default::default()
    });
    let facts = vec![
        Occurrence::from_event("e1", at("2026-04-02", 14, 0), "la-oxon", "case-1", &discussion),
        Occurrence::from_event("e2", at("2026-04-27", 14, 0), "la-oxon", "case-1", &conference),
    ];
    let evaluation = eval(&facts, at("2026-05-01", 0, 0));
    assert!(matches!(first(&evaluation, "T04").status, Status::Met { .. }));
    assert!(first(&evaluation, "T05").is_open());
    assert!(first(&evaluation, "T07").is_open());
}
