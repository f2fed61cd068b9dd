//! The shipped rules on small histories: what fires, what it cites, when, and what does not fire.

use halcyon_signals::{Indicator, Observation, SignalRules, evaluate, evaluate_until};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_772_445_600_000; // Monday 2 March 2026, 10:00 UTC

fn fact(id: &str, day: i64, agency: &str, seq: u64, indicator: Indicator) -> Observation {
    Observation::new(id, T0 + day * DAY, agency, &format!("EVENTS_{agency}"), seq).with(indicator)
}

fn ids(signal: &halcyon_signals::Signal) -> Vec<&str> {
    signal.facts.iter().map(|f| f.event_id.as_str()).collect()
}

#[test]
fn missing_episodes_absence_and_an_intoxication_attendance_within_six_weeks_raise_one_signal() {
    let rules = SignalRules::england();
    let facts = vec![
        fact("m1", 0, "police-sy", 1, Indicator::Missing),
        fact("m2", 10, "police-sy", 2, Indicator::Missing),
        fact("a1", 20, "school-oakwood", 1, Indicator::Absence),
        fact("h1", 30, "health-rgh-ed", 1, Indicator::IntoxicationAttendance),
    ];
    let signals = evaluate(&rules, &facts);
    assert_eq!(signals.len(), 1, "{signals:#?}");
    let s = &signals[0];
    assert_eq!(s.rule.id, "S02");
    assert_eq!(s.id(), "S02/h1");
    assert_eq!(s.fired_at_ms, T0 + 30 * DAY);
    assert_eq!(ids(s), ["m1", "m2", "a1", "h1"]);
    let h1 = s.completed_by();
    assert_eq!(
        (h1.agency_id.as_str(), h1.stream.as_str(), h1.sequence),
        ("health-rgh-ed", "EVENTS_health-rgh-ed", 1)
    );
    // Before the attendance nothing had fired.
    assert!(evaluate_until(&rules, &facts, T0 + 30 * DAY - 1).is_empty());
}

#[test]
fn a_fact_outside_the_window_does_not_count() {
    let rules = SignalRules::england();
    // The first missing episode is 43 days before the attendance: outside S02's 42 days.
    let facts = vec![
        fact("m1", 0, "police-sy", 1, Indicator::Missing),
        fact("m2", 10, "police-sy", 2, Indicator::Missing),
        fact("a1", 20, "school-oakwood", 1, Indicator::Absence),
        fact("h1", 43, "health-rgh-ed", 1, Indicator::IntoxicationAttendance),
    ];
    assert!(evaluate(&rules, &facts).is_empty());
    // Exactly 42 days is inside.
    let mut inside = facts.clone();
    inside[3] = fact("h1", 42, "health-rgh-ed", 1, Indicator::IntoxicationAttendance);
    assert_eq!(evaluate(&rules, &inside).len(), 1);
}

#[test]
fn one_missing_episode_is_not_repeat_and_two_kinds_are_not_enough() {
    let rules = SignalRules::england();
    let facts = vec![
        fact("m1", 0, "police-sy", 1, Indicator::Missing),
        fact("a1", 1, "school-oakwood", 1, Indicator::Absence),
        fact("h1", 2, "health-rgh-ed", 1, Indicator::SexualHealthAttendance),
    ];
    assert!(evaluate(&rules, &facts).is_empty());
}

#[test]
fn concerns_from_two_agencies_raise_s01_citing_the_latest_of_each() {
    let rules = SignalRules::england();
    let facts = vec![
        fact("c1", 0, "school-oakwood", 1, Indicator::Concern),
        fact("c2", 3, "school-oakwood", 2, Indicator::Concern),
        fact("p1", 5, "police-sy", 1, Indicator::PoliceIntelligence),
    ];
    let signals = evaluate(&rules, &facts);
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].id(), "S01/p1");
    assert_eq!(ids(&signals[0]), ["c2", "p1"]);
    // Concerns from one agency only, however many, raise nothing.
    assert!(evaluate(&rules, &facts[..2]).is_empty());
}

#[test]
fn a_pattern_raises_one_signal_and_a_new_one_needs_new_facts() {
    let rules = SignalRules::england();
    let mut facts = vec![
        fact("c1", 0, "school-oakwood", 1, Indicator::Concern),
        fact("p1", 1, "police-sy", 1, Indicator::PoliceIntelligence),
        // More concerns inside the same window do not raise the signal again…
        fact("p2", 2, "police-sy", 2, Indicator::PoliceIntelligence),
    ];
    assert_eq!(evaluate(&rules, &facts).len(), 1);
    // …until another agency's new fact completes a fresh pattern with it.
    facts.push(fact("c3", 4, "school-oakwood", 2, Indicator::Concern));
    let signals = evaluate(&rules, &facts);
    assert_eq!(
        signals.iter().map(|s| s.id()).collect::<Vec<_>>(),
        ["S01/p1", "S01/c3"]
    );
    assert_eq!(ids(&signals[1]), ["p2", "c3"]);
}

#[test]
fn facts_that_indicate_nothing_and_duplicates_change_nothing() {
    let rules = SignalRules::england();
    let base = vec![
        fact("c1", 0, "school-oakwood", 1, Indicator::Concern),
        fact("p1", 1, "police-sy", 1, Indicator::PoliceIntelligence),
    ];
    let mut more = base.clone();
    more.push(Observation::new(
        "x",
        T0,
        "csc-rotherham",
        "EVENTS_csc-rotherham",
        1,
    ));
    more.push(base[1].clone());
    assert_eq!(evaluate(&rules, &base), evaluate(&rules, &more));
}

#[test]
fn recipients_default_to_the_mash_and_the_lead_authority() {
    use halcyon_schema::AgencyKind;
    let rules = SignalRules::england();
    for rule in rules.rules() {
        assert!(rule.addresses(AgencyKind::Mash, false), "{}", rule.id);
        assert!(
            rule.addresses(AgencyKind::ChildrensSocialCare, true),
            "{}",
            rule.id
        );
        assert!(
            !rule.addresses(AgencyKind::ChildrensSocialCare, false),
            "{}",
            rule.id
        );
        assert!(!rule.addresses(AgencyKind::School, false), "{}", rule.id);
    }
    assert_eq!(rules.category().to_string(), "D14");
}
