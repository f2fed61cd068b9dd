//! Issue 21: the wire contract is checked. `buf lint` passes on proto/, `buf breaking` passes against the
//! released contract (proto/released/halcyon-v1.binpb), and the check fails — naming the field — on a copy
//! of proto/ with a field removed or renumbered, as a change that breaks published clients would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use halcyon_testkit::workspace_root;

/// The pinned buf (`deploy/install-buf.sh`, which `just test` runs first), else one on PATH.
fn buf() -> PathBuf {
    let local = workspace_root().join(".tools/bin/buf");
    if local.exists() {
        return local;
    }
    let on_path = Command::new("buf").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "buf is not installed: run deploy/install-buf.sh (just test does)"
    );
    PathBuf::from("buf")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(buf())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run buf")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of proto/ with `edit` applied to events.proto; buf breaking against the released contract.
fn breaking_after(edit: impl Fn(&str) -> String) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("proto");
    copy_dir(&workspace_root().join("proto"), &copy);
    let events = copy.join("halcyon/v1/events.proto");
    let before = std::fs::read_to_string(&events).unwrap();
    let after = edit(&before);
    assert_ne!(before, after, "the edit changed nothing");
    std::fs::write(&events, after).unwrap();
    let released = workspace_root().join("proto/released/halcyon-v1.binpb");
    run(
        dir.path(),
        &["breaking", "proto", "--against", released.to_str().unwrap()],
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_contract_lints_and_keeps_the_released_contract() {
    let root = workspace_root();
    let lint = run(&root, &["lint", "proto"]);
    assert!(lint.status.success(), "buf lint: {}", text(&lint));
    let released = root.join("proto/released/halcyon-v1.binpb");
    let breaking = run(
        &root,
        &["breaking", "proto", "--against", released.to_str().unwrap()],
    );
    assert!(breaking.status.success(), "buf breaking: {}", text(&breaking));
}

#[test]
fn removing_or_renumbering_a_field_fails_the_breaking_check() {
    let removed = breaking_after(|s| s.replacen("  string corrected_event_id = 1;\n", "", 1));
    assert!(!removed.status.success());
    assert!(
        text(&removed).contains("\"corrected_event_id\" on message \"RecordCorrected\" was deleted"),
        "{}",
        text(&removed)
    );
    let renumbered =
        breaking_after(|s| s.replacen("  bool entered_in_error = 4;", "  bool entered_in_error = 5;", 1));
    assert!(!renumbered.status.success());
    assert!(
        text(&renumbered).contains("\"entered_in_error\""),
        "{}",
        text(&renumbered)
    );
}
