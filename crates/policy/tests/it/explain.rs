//! `explain` prints the decision and the rule path behind it, for a permit and for a deny.

use crate::common;

use common::given;
use halcyon_policy::{AgencyKind, Category, Involvement, Policy, decide};

#[test]
fn explain_prints_the_rule_path_of_a_permit() {
    let policy = Policy::england();
    let ask = given(AgencyKind::Police, Category::STRATEGY_S47)
        .involved(Involvement::StrategyParticipant)
        .s47_started();
    let text = ask.explain(&policy);
    let gate_line = policy.gates()[0].line();
    let cell_line = policy
        .cell(Category::STRATEGY_S47, AgencyKind::Police)
        .unwrap()
        .line();
    let expected = [
        "PERMIT D4.police.pushed (policy england-2026.4)".to_owned(),
        "  pushed, full, basis law enforcement, DPA 2018 Part 3 and Schedule 8".to_owned(),
        "  relationship relied on: strategy-participant".to_owned(),
        "rule path:".to_owned(),
        "  1. request: police-asking (police, practitioner) asks for D4 recorded by csc-originating, for safeguarding".to_owned(),
        "  2. break-glass: not claimed".to_owned(),
        "  3. own: no, csc-originating recorded it".to_owned(),
        "  4. purpose: safeguarding is allowed for D4 (strategy discussion and s47)".to_owned(),
        format!("  5. cell: D4.police.pushed (line {cell_line}, sharing table \"P (participant)\"): mode pushed"),
        "  6. role: practitioner is served".to_owned(),
        format!("  7. gate gate.s47-or-plan (line {gate_line}): open (s47-started)"),
        "  8. relationship: holds strategy-participant".to_owned(),
        "  9. consent: not needed".to_owned(),
        "  10. permit: pushed, full, basis law enforcement, DPA 2018 Part 3 and Schedule 8".to_owned(),
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "\n{text}");
    // `decide` does not build the path; `explain` does.
    assert!(decide(&policy, &ask.request()).path().is_empty());
}

#[test]
fn explain_prints_the_rule_path_of_a_deny() {
    let policy = Policy::england();
    let ask = given(AgencyKind::Police, Category::STRATEGY_S47).involved(Involvement::StrategyParticipant);
    let text = ask.explain(&policy);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "DENY gate.s47-or-plan (policy england-2026.4)");
    assert!(
        lines[1].starts_with(
            "  reason: strategy discussion, section 47, conference and plan records are shared only once"
        ),
        "{text}"
    );
    assert!(
        lines[1].ends_with("(the gate opens after: s47-started, plan-active, plan-ended)"),
        "{text}"
    );
    let gate_line = policy.gates()[0].line();
    assert!(
        lines.contains(&format!("  7. gate gate.s47-or-plan (line {gate_line}): shut").as_str()),
        "{text}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("  8. deny: strategy discussion"),
        "{text}"
    );
    assert!(
        !text.contains("relationship:"),
        "stops at the first refusal:\n{text}"
    );
}

#[test]
fn explain_marks_break_glass_and_owner_notification() {
    let policy = Policy::england();
    let glass = given(AgencyKind::School, Category::MISSING)
        .break_glass("collapsed at school", 5)
        .explain(&policy);
    assert!(
        glass.contains("BREAK-GLASS: permitted on a break-glass, flagged for review"),
        "{glass}"
    );
    assert!(
        glass.contains("break-glass stands in (flagged for review)"),
        "{glass}"
    );
    let flag = given(AgencyKind::HealthUnscheduled, Category::STATUS_FLAG).explain(&policy);
    assert!(
        flag.contains("the owning agency is notified of this view"),
        "{flag}"
    );
    assert!(
        flag.contains("relationship: not needed (standing entitlement)"),
        "{flag}"
    );
}
