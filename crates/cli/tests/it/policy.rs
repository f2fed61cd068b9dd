//! Issue 4: `halcyon policy check` rejects broken files with file, line and reason; `halcyon policy explain`
//! prints the rule path for a permit and for a deny. Runs the real binary.

use std::process::Command;

const ENGLAND: &str = include_str!("../../../../deploy/policy/england.toml");

fn halcyon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_halcyon"))
        .args(args)
        .current_dir(halcyon_testkit::workspace_root())
        .env("HALCYON_STREAMS_SPEC", "deploy/streams-local.toml")
        .output()
        .expect("run halcyon")
}

/// The shipped policy with the first occurrence of `from` replaced by `to`.
fn broken(from: &str, to: &str) -> String {
    assert!(ENGLAND.contains(from), "{from:?} not in the policy");
    ENGLAND.replacen(from, to, 1)
}

#[test]
fn check_rejects_broken_files_with_line_and_reason() {
    let duplicate = format!(
        "{ENGLAND}\n[[cell]]\ncategory = \"D4\"\nrecipient = \"police\"\nmode = \"query\"\nrelationship = [\"strategy-participant\"]\nbasis = \"law-enforcement\"\nprojection = \"full\"\n"
    );
    let cases = [
        (
            broken("category = \"D4\"", "category = \"D44\""),
            "unknown data category \"D44\"",
        ),
        (
            broken("mode = \"pushed\"", "mode = \"shouted\""),
            "unknown mode \"shouted\"",
        ),
        (
            broken("recipient = \"police\"", "recipient = \"constabulary\""),
            "constabulary",
        ),
        (
            broken("purposes = [\"safeguarding\",", "purposes = [\"curiosity\","),
            "unknown purpose \"curiosity\"",
        ),
        (duplicate, "D4"),
        (broken("version = ", "versio = "), "versio"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, reason)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = halcyon(&["policy", "check", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i} accepted: {stderr}");
        let expected_prefix = format!("error: {}:", file.display());
        assert!(
            stderr.starts_with(&expected_prefix),
            "case {i}: no file name: {stderr}"
        );
        let line: usize = stderr[expected_prefix.len()..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or(0);
        assert!(line > 0, "case {i}: no line number: {stderr}");
        assert!(
            stderr.contains(reason),
            "case {i}: expected {reason:?} in {stderr}"
        );
    }
    let ok = halcyon(&["policy", "check", "deploy/policy/england.toml"]);
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("120 cells"));
}

#[test]
fn explain_prints_the_rule_path_for_a_permit_and_a_deny() {
    let permit = halcyon(&[
        "policy",
        "explain",
        "--agency",
        "police-sy",
        "--purpose",
        "safeguarding",
        "--category",
        "D4",
        "--originator",
        "csc-rotherham",
        "--stage",
        "s47",
        "--involvement",
        "strategy-participant",
    ]);
    let text = String::from_utf8_lossy(&permit.stdout);
    assert!(text.starts_with("PERMIT D4.police.pushed"), "{text}");
    assert!(text.contains("rule path:\n  1. "), "{text}");
    let deny = halcyon(&[
        "policy",
        "explain",
        "--agency",
        "police-sy",
        "--purpose",
        "safeguarding",
        "--category",
        "D4",
        "--originator",
        "csc-rotherham",
        "--involvement",
        "strategy-participant",
    ]);
    let text = String::from_utf8_lossy(&deny.stdout);
    assert!(text.starts_with("DENY gate.s47-or-plan"), "{text}");
    assert!(
        text.contains("reason: ") && text.contains("rule path:\n  1. "),
        "{text}"
    );
}
