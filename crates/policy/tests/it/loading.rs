//! Loading and checking policy files: the shipped file is valid, and broken files are rejected with the
//! file, the line and column of the problem, and a reason a person can act on.

use std::path::Path;

use halcyon_policy::{Policy, PolicyError, check, check_source};

/// A small valid file; each test breaks one thing in it.
const BASE: &str = r#"version = "test-1"

[own]
basis = "public-task"

[roles]
default = ["practitioner"]

[break_glass]
max_minutes = 60
basis = "vital-interests"

[category.D4]
name = "strategy discussion and s47"
purposes = ["safeguarding", "statutory_review"]

[category.D7]
name = "sexual health"
purposes = ["safeguarding"]
restricted = true

[[gate]]
id = "gate.s47"
categories = ["D4"]
open_after_any = ["s47-started"]
reason = "only once a section 47 enquiry has started"

[[cell]]
category = "D4"
recipient = "police"
mode = "pushed"
relationship = ["strategy-participant"]
basis = "law-enforcement"
projection = "full"

[[cell]]
category = "D7"
recipient = "health-community"
mode = "originator-approval"
basis = "public-task"
projection = "full"
"#;

/// The 1-based line of the first occurrence of `needle` in `src`.
fn line_of(src: &str, needle: &str) -> usize {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the file"));
    src[..at].matches('\n').count() + 1
}

/// The 1-based line of the last occurrence of `needle` in `src`.
fn last_line_of(src: &str, needle: &str) -> usize {
    let at = src
        .rfind(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the file"));
    src[..at].matches('\n').count() + 1
}

/// `BASE` with `from` replaced by `to` (which must occur once).
fn broken(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "{from:?} must occur once in BASE");
    BASE.replace(from, to)
}

/// Loads `src`, expecting a rejection on the line holding `at` whose reason contains `reason`.
fn rejected(src: &str, at: &str, reason: &str) -> PolicyError {
    let err = Policy::from_toml(src, "broken.toml")
        .map(|p| p.summary())
        .unwrap_err();
    assert_eq!(err.file, "broken.toml");
    assert_eq!(err.line, line_of(src, at), "wrong line for {reason:?}: {err}");
    assert!(err.column >= 1, "{err}");
    assert!(err.reason.contains(reason), "expected {reason:?} in: {err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("broken.toml:{}:{}: ", err.line, err.column)),
        "{shown}"
    );
    err
}

#[test]
fn the_base_file_and_the_shipped_file_are_valid() {
    let policy = Policy::from_toml(BASE, "base.toml").unwrap();
    assert_eq!(policy.version(), "test-1");
    assert_eq!(policy.cells().count(), 2);
    let summary =
        check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policy/england.toml")).unwrap();
    assert!(
        summary.contains("policy england-2026.4 (England) is valid"),
        "{summary}"
    );
    assert!(summary.contains("120 cells"), "{summary}");
    assert_eq!(Policy::england().version(), "england-2026.4");
}

#[test]
fn a_toml_syntax_error_is_rejected_at_its_line() {
    let src = broken("basis = \"law-enforcement\"", "basis = \"law-enforcement");
    rejected(&src, "basis = \"law-enforcement", "");
}

#[test]
fn an_unknown_category_is_rejected() {
    let src = broken("category = \"D7\"", "category = \"D15\"");
    rejected(&src, "category = \"D15\"", "unknown data category \"D15\"");
    let src = broken("[category.D7]", "[category.D77]");
    rejected(&src, "[category.D77]", "unknown data category \"D77\"");
}

#[test]
fn only_childrens_social_care_may_rely_on_being_the_lead_authority() {
    let src = broken(
        "relationship = [\"strategy-participant\"]",
        "relationship = [\"lead-authority\"]",
    );
    rejected(
        &src,
        "relationship = [\"lead-authority\"]",
        "only children's social care cells may rely on lead-authority",
    );
}

#[test]
fn the_area_relationship_is_for_signals_only() {
    let src = broken(
        "relationship = [\"strategy-participant\"]",
        "relationship = [\"area\"]",
    );
    rejected(
        &src,
        "relationship = [\"area\"]",
        "area is for multi-agency signals (D14) only",
    );
}

#[test]
fn an_unknown_recipient_kind_is_rejected() {
    let src = broken("recipient = \"police\"", "recipient = \"constabulary\"");
    let err = rejected(
        &src,
        "recipient = \"constabulary\"",
        "unknown agency kind \"constabulary\"",
    );
    assert!(
        err.reason.contains("youth-justice"),
        "the reason lists the known kinds: {err}"
    );
}

#[test]
fn an_unknown_mode_is_rejected() {
    let src = broken("mode = \"pushed\"", "mode = \"sometimes\"");
    let err = rejected(&src, "mode = \"sometimes\"", "unknown mode \"sometimes\"");
    assert_eq!(err.column, 8, "points at the value: {err}");
}

#[test]
fn an_unknown_purpose_is_rejected() {
    let src = broken(
        "purposes = [\"safeguarding\", \"statutory_review\"]",
        "purposes = [\"safeguarding\", \"marketing\"]",
    );
    rejected(&src, "\"marketing\"", "unknown purpose \"marketing\"");
}

#[test]
fn a_cell_granted_twice_with_different_modes_is_rejected() {
    let second = "\n[[cell]]\ncategory = \"D4\"\nrecipient = \"police\"\nmode = \"query\"\nrelationship = [\"own-case\"]\nbasis = \"law-enforcement\"\nprojection = \"summary\"\n";
    let src = format!("{BASE}{second}");
    let err = rejected(
        &src,
        "mode = \"query\"",
        "granted twice with different modes: query here and pushed at line",
    );
    assert!(
        err.reason
            .contains(&format!("line {}", line_of(BASE, "[[cell]]"))),
        "names the first grant: {err}"
    );
    // Twice with the same mode is rejected too: one box, one rule.
    let again = second
        .replace("mode = \"query\"", "mode = \"pushed\"")
        .replace("own-case", "core-group");
    let src = format!("{BASE}{again}");
    let at = last_line_of(&src, "mode = \"pushed\"");
    let err = Policy::from_toml(&src, "broken.toml").unwrap_err();
    assert_eq!(err.line, at, "{err}");
    assert!(err.reason.contains("granted twice (first at line"), "{err}");
}

#[test]
fn an_unknown_field_is_rejected() {
    let src = broken(
        "projection = \"full\"\n\n[[cell]]",
        "projecton = \"full\"\n\n[[cell]]",
    );
    rejected(&src, "projecton", "unknown field `projecton`");
}

#[test]
fn a_restricted_category_granted_without_approval_is_rejected() {
    let src = broken(
        "mode = \"originator-approval\"",
        "mode = \"query\"\nrelationship = [\"own-case\"]",
    );
    rejected(&src, "mode = \"query\"", "D7 (sexual health) is restricted");
}

#[test]
fn a_query_or_pushed_cell_without_a_relationship_is_rejected() {
    let src = broken("relationship = [\"strategy-participant\"]\n", "");
    rejected(&src, "mode = \"pushed\"", "needs a legitimate relationship");
    let src = broken("[\"strategy-participant\"]", "[\"standing\"]");
    rejected(&src, "[\"standing\"]", "needs a legitimate relationship");
    let src = broken("[\"strategy-participant\"]", "[\"best-friend\"]");
    rejected(&src, "\"best-friend\"", "unknown relationship \"best-friend\"");
}

#[test]
fn a_cell_allowing_a_purpose_its_category_does_not_is_rejected() {
    let src = broken(
        "projection = \"full\"\n\n[[cell]]",
        "projection = \"full\"\npurposes = [\"audit\"]\n\n[[cell]]",
    );
    rejected(
        &src,
        "[\"audit\"]",
        "allows the purpose audit, which [category.D4] does not allow",
    );
}

#[test]
fn inconsistent_cells_are_rejected() {
    let src = broken("mode = \"pushed\"", "mode = \"flag\"");
    rejected(&src, "projection = \"full\"", "projection must be flag");
    let src = broken(
        "mode = \"pushed\"\nrelationship = [\"strategy-participant\"]",
        "mode = \"flag\"",
    );
    rejected(
        &src,
        "projection = \"full\"",
        "a flag cell, so its projection must be flag, not full",
    );
    let src = broken("mode = \"originator-approval\"", "mode = \"never\"");
    rejected(
        &src,
        "basis = \"public-task\"\nprojection = \"full\"\n",
        "is `never`, which grants nothing: remove `basis`",
    );
    let src = broken("[\"strategy-participant\"]", "[\"mash-referral\"]");
    rejected(
        &src,
        "[\"mash-referral\"]",
        "only MASH cells may rely on mash-referral",
    );
    let src = broken("basis = \"law-enforcement\"\n", "");
    rejected(&src, "mode = \"pushed\"", "names no lawful `basis`");
}

#[test]
fn a_cell_for_a_category_without_rules_is_rejected() {
    let src = format!("{BASE}\n[[cell]]\ncategory = \"D9\"\nrecipient = \"school\"\nmode = \"never\"\n");
    rejected(&src, "category = \"D9\"", "the file has no [category.D9]");
}

#[test]
fn broken_gates_and_limits_are_rejected() {
    let src = broken("[\"s47-started\"]", "[\"s47-begun\"]");
    rejected(&src, "\"s47-begun\"", "unknown stage \"s47-begun\"");
    let src = broken("categories = [\"D4\"]", "categories = [\"D5\"]");
    rejected(
        &src,
        "[\"D5\"]",
        "gate gate.s47 guards D5, which has no [category.D5]",
    );
    let src = broken("max_minutes = 60", "max_minutes = 0");
    rejected(&src, "max_minutes", "must be 1 to 1440");
    let src = broken("version = \"test-1\"", "version = \"  \"");
    rejected(&src, "version", "`version` must not be empty");
    let src = broken("version = \"test-1\"\n", "");
    let err = Policy::from_toml(&src, "broken.toml").unwrap_err();
    assert!(err.reason.contains("missing field `version`"), "{err}");
    assert!(err.line >= 1, "{err}");
    let src = broken(
        "[[cell]]\ncategory = \"D7\"",
        "[[cell]]\nid = \"gate.s47\"\ncategory = \"D7\"",
    );
    let err = Policy::from_toml(&src, "broken.toml").unwrap_err();
    assert_eq!(err.line, last_line_of(&src, "id = \"gate.s47\""), "{err}");
    assert!(
        err.reason.contains(&format!(
            "rule id \"gate.s47\" is used twice (first at line {})",
            line_of(&src, "id = \"gate.s47\"")
        )),
        "{err}"
    );
}

#[test]
fn an_unreadable_file_is_rejected_naming_the_file() {
    let err = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert_eq!((err.line, err.column), (0, 0));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/policy.toml: cannot read the policy file"),
        "{err}"
    );
    assert!(check_source("version = ", "x.toml").is_err());
}

#[test]
fn columns_count_characters_not_bytes() {
    // "–" is three bytes; the column of the bad mode must still be 8.
    let src = broken("mode = \"pushed\"", "table = \"–\"\nmode = \"sometimes\"");
    let err = rejected(&src, "mode = \"sometimes\"", "unknown mode");
    assert_eq!(err.column, 8);
    let src = broken("name = \"sexual health\"", "name = \"sexual health – SARC\" oops");
    let err = rejected(&src, "oops", "");
    assert!(err.column > 30, "{err}");
}
