//! Loading rule files: the shipped files are valid and hold every row of docs/domain.md §3, and broken files are
//! rejected with the file, the line of the problem and a reason a person can act on.

use std::path::Path;

use halcyon_schema::convert::EVENT_TYPE_NAMES;
use halcyon_timescales::{
    Calendar, Condition, Repeat, RuleSet, Scope, Start, TimescaleError, Timescales, Unit,
};

/// A small valid file; each test breaks one thing in it.
const BASE: &str = r#"version = "test-1"
calendar = "england-and-wales"

[[rule]]
id = "R1"
name = "referral decision"
start = "ReferralReceived"
end = "ReferralDecisionRecorded"
limit = 1
unit = "working-days"
scope = "case"
source = "made up for the test"

[[rule]]
id = "R2"
name = "first review"
start = "InitialConferenceHeld"
start_when = "plan_made"
end = "ReviewConferenceHeld"
stop = [{ event = "ChildProtectionPlanEnded" }]
limit = 3
unit = "calendar-months"
scope = "case"
source = "made up for the test"

[[rule]]
id = "R3"
name = "later reviews"
start_after = ["R2", "R3"]
start_when = "plan_continues"
end = "ReviewConferenceHeld"
limit = 6
unit = "calendar-months"
scope = "case"
source = "made up for the test"
"#;

fn line_of(src: &str, needle: &str) -> usize {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the file"));
    src[..at].matches('\n').count() + 1
}

/// `BASE` with `from` replaced by `to` (which must occur once).
fn broken(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once in BASE");
    BASE.replacen(from, to, 1)
}

/// Loads `src`, expecting a rejection on the line holding `at` whose reason contains `reason`.
fn rejected(src: &str, at: &str, reason: &str) -> TimescaleError {
    let err = RuleSet::from_toml(src, "broken.toml").unwrap_err();
    assert_eq!(err.file, "broken.toml");
    assert_eq!(err.line, line_of(src, at), "wrong line for {reason:?}: {err}");
    assert!(err.column >= 1, "{err}");
    assert!(err.reason.contains(reason), "expected {reason:?} in: {err}");
    assert!(
        err.to_string()
            .starts_with(&format!("broken.toml:{}:{}: ", err.line, err.column)),
        "{err}"
    );
    err
}

// ---------------------------------------------------------------------------------------------------------
// The shipped files.

#[test]
fn the_base_file_loads() {
    let rules = RuleSet::from_toml(BASE, "base.toml").unwrap();
    assert_eq!(rules.versions(), ["test-1"]);
    assert_eq!(rules.rules().len(), 3);
    let r3 = rules.get("R3").unwrap();
    assert_eq!(r3.start, Start::After(vec!["R2".into(), "R3".into()]));
    assert_eq!(r3.start_when, Some(Condition::PlanContinues));
    assert_eq!(
        (r3.file.as_str(), r3.line),
        ("base.toml", line_of(BASE, "id = \"R3\"") - 1)
    );
}

#[test]
fn the_shipped_england_file_holds_every_row_of_domain_section_3() {
    let rules =
        RuleSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/timescales/england.toml"))
            .unwrap();
    let ids: Vec<&str> = rules.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "T01", "T02", "T03", "T04", "T05", "T07", "T08", "T12", "T13", "T14", "T15", "T16", "T17", "T19",
            "T20"
        ]
    );
    assert_eq!(rules.calendar_id(), "england-and-wales");
    // The table, as docs/domain.md §3 writes it.
    let table: [(&str, &str, Option<&str>, u32, Unit); 15] = [
        (
            "T01",
            "ReferralReceived",
            Some("ReferralDecisionRecorded"),
            1,
            Unit::WorkingDays,
        ),
        (
            "T02",
            "ReferralReceived",
            Some("ReferralAcknowledged"),
            1,
            Unit::WorkingDays,
        ),
        (
            "T03",
            "ReferralReceived",
            Some("AssessmentCompleted"),
            45,
            Unit::WorkingDays,
        ),
        (
            "T04",
            "StrategyDiscussionHeld",
            Some("InitialConferenceHeld"),
            15,
            Unit::WorkingDays,
        ),
        (
            "T05",
            "InitialConferenceHeld",
            Some("CoreGroupMeetingHeld"),
            10,
            Unit::WorkingDays,
        ),
        (
            "T07",
            "InitialConferenceHeld",
            Some("ReviewConferenceHeld"),
            3,
            Unit::CalendarMonths,
        ),
        (
            "T08",
            "after T07, T08",
            Some("ReviewConferenceHeld"),
            6,
            Unit::CalendarMonths,
        ),
        (
            "T12",
            "PoliceProtectionStarted",
            Some("PoliceProtectionEnded"),
            72,
            Unit::Hours,
        ),
        ("T13", "EmergencyProtectionOrderMade", None, 8, Unit::CalendarDays),
        (
            "T14",
            "MissingEpisodeClosed",
            Some("ReturnHomeInterviewCompleted"),
            72,
            Unit::Hours,
        ),
        (
            "T15",
            "LookedAfterPeriodStarted",
            Some("LookedAfterReviewHeld"),
            20,
            Unit::WorkingDays,
        ),
        (
            "T16",
            "after T15",
            Some("LookedAfterReviewHeld"),
            3,
            Unit::CalendarMonths,
        ),
        (
            "T17",
            "after T16, T17",
            Some("LookedAfterReviewHeld"),
            6,
            Unit::CalendarMonths,
        ),
        (
            "T19",
            "SeriousIncidentIdentified",
            Some("SeriousIncidentNotified"),
            5,
            Unit::WorkingDays,
        ),
        (
            "T20",
            "SeriousIncidentNotified",
            Some("RapidReviewCompleted"),
            15,
            Unit::WorkingDays,
        ),
    ];
    for (id, start, end, limit, unit) in table {
        let rule = rules.get(id).unwrap();
        let shown = match &rule.start {
            Start::Event(e) => e.clone(),
            Start::After(ids) => format!("after {}", ids.join(", ")),
        };
        assert_eq!(shown, start, "{id}");
        assert_eq!(rule.end.as_deref(), end, "{id}");
        assert_eq!((rule.limit, rule.unit), (limit, unit), "{id}");
        assert!(!rule.source.is_empty(), "{id}");
        assert!(rule.line > 0, "{id}");
    }
    // Conditions as data.
    assert_eq!(
        rules.get("T04").unwrap().start_when,
        Some(Condition::Section47Decided)
    );
    assert_eq!(rules.get("T04").unwrap().repeat, Repeat::Restart);
    assert_eq!(rules.get("T05").unwrap().start_when, Some(Condition::PlanMade));
    assert_eq!(rules.get("T14").unwrap().scope, Scope::Child);
    // Rows resting on secondary sources say so.
    let checked: Vec<&str> = rules
        .rules()
        .iter()
        .filter(|r| r.check)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(checked, ["T04", "T05", "T07", "T13", "T20"]);
    // T19's start event is not in the catalogue yet, and the rule says so.
    let t19 = rules.get("T19").unwrap();
    assert!(!EVENT_TYPE_NAMES.contains(&"SeriousIncidentIdentified"));
    assert!(
        t19.awaiting_catalogue
            .as_deref()
            .unwrap()
            .contains("SeriousIncidentIdentified")
    );
    assert!(
        rules
            .rules()
            .iter()
            .filter(|r| r.id != "T19")
            .all(|r| r.awaiting_catalogue.is_none())
    );
}

#[test]
fn the_local_example_uses_the_same_format_and_merges_with_the_statutory_rules() {
    let local = RuleSet::local_example();
    let rag: Vec<(&str, u32, Option<Condition>)> = local
        .rules()
        .iter()
        .map(|r| (r.id.as_str(), r.limit, r.start_when))
        .collect();
    assert_eq!(
        rag,
        [
            ("MASH-RED", 2, Some(Condition::RagRed)),
            ("MASH-AMBER", 6, Some(Condition::RagAmber)),
            ("MASH-GREEN", 24, Some(Condition::RagGreen)),
        ]
    );
    assert!(
        local
            .rules()
            .iter()
            .all(|r| r.unit == Unit::Hours && r.scope == Scope::Counterpart)
    );
    let all = RuleSet::england().merge(local).unwrap();
    assert_eq!(all.rules().len(), 18);
    assert_eq!(all.versions(), ["england-2026.1", "local-example-2026.1"]);
    Timescales::new(Calendar::england_and_wales(), all).unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// Broken files.

#[test]
fn a_toml_syntax_error_is_rejected_at_its_line() {
    let src = broken(
        "limit = 3\nunit = \"calendar-months\"",
        "limit = 3\nunit = \"calendar-months",
    );
    let err = RuleSet::from_toml(&src, "broken.toml").unwrap_err();
    assert_eq!(err.line, line_of(&src, "unit = \"calendar-months\n"), "{err}");
}

#[test]
fn an_unknown_unit_is_rejected() {
    let src = broken("unit = \"working-days\"", "unit = \"fortnights\"");
    let err = rejected(&src, "fortnights", "unknown unit \"fortnights\"");
    assert!(
        err.reason
            .contains("working-days, calendar-days, calendar-months, hours"),
        "{err}"
    );
    assert_eq!(err.column, 8, "points at the value: {err}");
}

#[test]
fn an_unknown_event_type_is_rejected_with_a_suggestion() {
    let src = broken("start = \"ReferralReceived\"", "start = \"ReferalReceived\"");
    let err = rejected(
        &src,
        "ReferalReceived",
        "unknown event type \"ReferalReceived\" in `start`",
    );
    assert!(err.reason.contains("did you mean ReferralReceived?"), "{err}");
    let src = broken("end = \"ReferralDecisionRecorded\"", "end = \"DecisionMade\"");
    rejected(
        &src,
        "DecisionMade",
        "unknown event type \"DecisionMade\" in `end`",
    );
    let src = broken("\"ChildProtectionPlanEnded\"", "\"PlanEnded\"");
    rejected(
        &src,
        "PlanEnded",
        "unknown event type \"PlanEnded\" in `stop.event`",
    );
}

#[test]
fn a_duplicate_id_is_rejected_naming_the_first() {
    let src = broken("id = \"R3\"", "id = \"R1\"");
    let err = RuleSet::from_toml(&src, "broken.toml").unwrap_err();
    assert_eq!(
        err.line,
        src.rfind("id = \"R1\"")
            .map(|at| src[..at].matches('\n').count() + 1)
            .unwrap()
    );
    assert!(
        err.reason
            .contains("rule id \"R1\" is used twice (first at line 5)"),
        "{err}"
    );
}

#[test]
fn a_missing_field_is_rejected_at_its_rule() {
    for field in [
        "name = \"referral decision\"\n",
        "limit = 1\n",
        "unit = \"working-days\"\n",
        "scope = \"case\"\nsource = \"made up for the test\"\n\n[[rule]]\nid = \"R2\"",
        "source = \"made up for the test\"\n\n[[rule]]\nid = \"R2\"",
    ] {
        let missing = field.split(' ').next().unwrap();
        let keep = field.split_once('\n').map(|(_, rest)| rest).unwrap();
        let src = broken(field, keep);
        let err = RuleSet::from_toml(&src, "broken.toml").unwrap_err();
        assert!(
            err.reason.contains(&format!("missing field `{missing}`")),
            "{missing}: {err}"
        );
        assert_eq!(err.line, line_of(BASE, "[[rule]]"), "at the rule's header: {err}");
    }
}

#[test]
fn a_rule_without_a_start_or_an_end_is_rejected() {
    let src = broken("start = \"ReferralReceived\"\n", "");
    rejected(&src, "id = \"R1\"", "missing field `start`");
    let src = broken("end = \"ReferralDecisionRecorded\"\n", "");
    rejected(&src, "id = \"R1\"", "missing field `end`");
}

#[test]
fn contradictions_are_rejected() {
    let src = broken(
        "end = \"ReferralDecisionRecorded\"\n",
        "end = \"ReferralDecisionRecorded\"\nexpiry = true\n",
    );
    rejected(
        &src,
        "end = \"ReferralDecisionRecorded\"",
        "an expiry clock has no end event",
    );
    let src = broken(
        "start_after = [\"R2\", \"R3\"]\n",
        "start_after = [\"R2\", \"R3\"]\nstart = \"InitialConferenceHeld\"\n",
    );
    rejected(
        &src,
        "start = \"InitialConferenceHeld\"\nstart_when = \"plan_continues\"",
        "both `start` and `start_after`",
    );
}

#[test]
fn unknown_conditions_scopes_and_repeats_are_rejected() {
    let src = broken("start_when = \"plan_made\"", "start_when = \"plan_approved\"");
    let err = rejected(&src, "plan_approved", "unknown condition \"plan_approved\"");
    assert!(
        err.reason.contains("section47_decided"),
        "lists the known ones: {err}"
    );
    let src = broken(
        "scope = \"case\"\nsource = \"made up for the test\"\n\n[[rule]]\nid = \"R2\"",
        "scope = \"family\"\nsource = \"made up for the test\"\n\n[[rule]]\nid = \"R2\"",
    );
    rejected(&src, "family", "unknown scope \"family\"");
    let src = broken(
        "start_when = \"plan_made\"\n",
        "start_when = \"plan_made\"\nrepeat = \"sometimes\"\n",
    );
    rejected(&src, "sometimes", "unknown repeat \"sometimes\"");
}

#[test]
fn a_condition_on_the_wrong_event_is_rejected() {
    let src = broken("start_when = \"plan_made\"", "start_when = \"section47_decided\"");
    rejected(
        &src,
        "section47_decided",
        "reads StrategyDiscussionHeld, but the rule starts at InitialConferenceHeld",
    );
    let src = broken("start_when = \"plan_continues\"", "start_when = \"plan_made\"\n");
    rejected(
        &src,
        "start_when = \"plan_made\"\n\n",
        "but the clock starts at R2's end event, ReviewConferenceHeld",
    );
    let src = broken(
        "{ event = \"ChildProtectionPlanEnded\" }",
        "{ event = \"ChildProtectionPlanEnded\", when = \"rag_red\" }",
    );
    rejected(
        &src,
        "rag_red",
        "reads AgencyCheckRequested, not ChildProtectionPlanEnded",
    );
}

#[test]
fn start_after_must_name_a_rule_with_an_end_in_the_same_file() {
    let src = broken("start_after = [\"R2\", \"R3\"]", "start_after = [\"R2\", \"R9\"]");
    rejected(
        &src,
        "start_after",
        "starts after \"R9\", which is not a rule in this file",
    );
    let src = broken("end = \"ReviewConferenceHeld\"\nstop", "expiry = true\nstop");
    rejected(&src, "start_after", "R3 starts after R2, which has no end event");
}

#[test]
fn a_limit_out_of_range_is_rejected() {
    let src = broken("limit = 1\n", "limit = 0\n");
    rejected(&src, "limit = 0", "`limit` must be 1 to 2600 working-days, not 0");
    let src = broken("limit = 1\n", "limit = -3\n");
    rejected(&src, "limit = -3", "not -3");
    let src = broken("limit = 6\n", "limit = 600\n");
    rejected(&src, "limit = 600", "must be 1 to 120 calendar-months");
}

#[test]
fn a_check_mark_needs_a_note_and_a_stale_catalogue_mark_is_refused() {
    let src = broken("limit = 1\n", "limit = 1\ncheck = true\n");
    rejected(&src, "id = \"R1\"", "say in `note` what needs checking");
    let src = broken(
        "limit = 1\n",
        "limit = 1\ncheck = true\nnote = \"secondary source only\"\n",
    );
    assert!(
        RuleSet::from_toml(&src, "ok.toml")
            .unwrap()
            .get("R1")
            .unwrap()
            .check
    );
    let src = broken(
        "limit = 1\n",
        "limit = 1\nawaiting_catalogue = \"waiting for an event\"\n",
    );
    rejected(
        &src,
        "awaiting_catalogue",
        "every event it names is in the catalogue",
    );
    // With the mark, an event type the catalogue lacks is accepted; without it, refused.
    let src = broken(
        "end = \"ReferralDecisionRecorded\"\n",
        "end = \"ReferralTriaged\"\nawaiting_catalogue = \"the triage event is proposed\"\n",
    );
    let rules = RuleSet::from_toml(&src, "ok.toml").unwrap();
    assert!(
        rules
            .get("R1")
            .unwrap()
            .awaiting_catalogue
            .as_deref()
            .unwrap()
            .contains("ReferralTriaged")
    );
    let src = broken(
        "end = \"ReferralDecisionRecorded\"\n",
        "end = \"referral triaged\"\nawaiting_catalogue = \"the triage event is proposed\"\n",
    );
    rejected(&src, "referral triaged", "is not an event type name");
}

#[test]
fn an_unknown_field_and_an_empty_file_are_rejected() {
    let src = broken("limit = 1\n", "limit = 1\ndeadline = 3\n");
    rejected(&src, "deadline = 3", "unknown field `deadline`");
    let err = RuleSet::from_toml("version = \"x\"\ncalendar = \"c\"\n", "empty.toml").unwrap_err();
    assert_eq!(err.to_string(), "empty.toml: the file has no [[rule]]");
    let src = broken("version = \"test-1\"", "version = \"  \"");
    rejected(&src, "version", "`version` must not be empty");
}

#[test]
fn merging_refuses_a_taken_id_and_another_calendar() {
    let local = BASE.replace("id = \"R2\"", "id = \"T01\"");
    let local = RuleSet::from_toml(&local.replace("\"R2\", ", "\"T01\", "), "local.toml").unwrap();
    let err = RuleSet::england().merge(local).unwrap_err();
    assert_eq!(err.file, "local.toml");
    assert!(
        err.reason
            .contains("rule id \"T01\" is already used by deploy/timescales/england.toml:"),
        "{err}"
    );

    let scottish = RuleSet::from_toml(&BASE.replace("england-and-wales", "scotland"), "scot.toml").unwrap();
    let err = RuleSet::england().merge(scottish.clone()).unwrap_err();
    assert!(err.reason.contains("for the calendar \"scotland\""), "{err}");
    let err = Timescales::new(Calendar::england_and_wales(), scottish).unwrap_err();
    assert!(
        err.reason.contains("written for the calendar \"scotland\""),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_a_whole_file_error() {
    let err = RuleSet::load(Path::new("/nonexistent/rules.toml")).unwrap_err();
    assert_eq!((err.line, err.column), (0, 0));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/rules.toml: cannot read the rule file"),
        "{err}"
    );
    let err = Calendar::load(Path::new("/nonexistent/cal.toml")).unwrap_err();
    assert!(err.reason.contains("cannot read the calendar file"), "{err}");
}
