//! Issue 21: the examples in other languages (examples/python, examples/node) run against a real node and
//! real NATS and their answers are checked: a case event published as its agency with the right subject,
//! message id and expected-sequence header; its retry reported a duplicate; a write on a stale sequence
//! reported a conflict; the child read back (after the write) with a token, a purpose and the acting
//! practitioner; the flag checked from A&E and the owner's watch told, then resumed after the last
//! notification it saw. Skipped with a message only where the language runtime is absent.

use crate::common;
use crate::stock_clients::{generate, python, run, run_client, venv};

use std::process::Command;
use std::time::Duration;

use halcyon_testkit::workspace_root;

/// Longer than any example takes on a loaded machine (seconds): past it the example is killed and the test
/// fails with what it printed, rather than hang the suite.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(180);

/// What every example must have seen (the same checks for each language).
fn check(out: &serde_json::Value) {
    assert_eq!(out["published"]["stream"], "EVENTS_CSC_ROTHERHAM", "{out}");
    assert_eq!(out["published"]["duplicate"], false, "{out}");
    assert_eq!(
        out["retry"]["duplicate"], true,
        "a retry with the same id is a duplicate: {out}"
    );
    assert_eq!(out["retry"]["sequence"], out["published"]["sequence"], "{out}");
    // JetStream's "wrong last sequence" (10071).
    assert_eq!(
        out["conflict"]["err_code"], 10071,
        "a stale expected sequence is a conflict: {out}"
    );
    assert_eq!(out["view"]["facts"], 2, "the referral and the plan: {out}");
    let ids = out["view"]["event_ids"].as_array().unwrap();
    assert!(ids.iter().any(|id| *id == out["referral_id"]), "{out}");
    assert!(ids.iter().any(|id| *id == out["plan"]["event_id"]), "{out}");
    assert_eq!(out["flag"]["plan"], true, "{out}");
    assert_eq!(out["flag"]["owner"], "csc-rotherham", "{out}");
    assert_eq!(out["notifications"]["first"]["by"], "health-rgh-ed", "{out}");
    assert_eq!(out["notifications"]["missed"]["by"], "health-rgh-ed", "{out}");
    assert_ne!(
        out["notifications"]["missed"]["position"], out["notifications"]["first"]["position"],
        "resuming delivers the notification missed, not the one seen: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_publishes_queries_and_resumes_a_watch() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python 3 on this machine; the Python example needs python3 with venv");
        return;
    };
    let venv = tokio::task::spawn_blocking(move || venv(&python)).await.unwrap();
    let generated = generate(&venv);
    let h = common::Harness::start().await;
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(workspace_root().join("examples/python/halcyon_example.py"))
        .env("HALCYON_PY_OUT", generated.path());
    let out = run_client(&h, cmd, EXAMPLE_LIMIT).await;
    check(&out);
    h.node.stop(Duration::from_secs(5)).await;
}

/// Whether `npm` and `node` are both on this machine.
fn node() -> bool {
    let ok = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ok("node") && ok("npm")
}

/// The Node example with its pinned packages (`npm ci` from its lock file), under target/, once per lock.
fn node_example() -> std::path::PathBuf {
    let root = workspace_root();
    let source = root.join("examples/node");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let dir = target.join("node-example");
    let lock = std::fs::read_to_string(source.join("package-lock.json")).unwrap();
    let marker = dir.join("installed-lock.json");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(lock.as_str()) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(f), dir.join(f)).unwrap();
        }
        run(Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir));
        std::fs::write(&marker, &lock).unwrap();
    }
    std::fs::copy(source.join("halcyon_example.js"), dir.join("halcyon_example.js")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_publishes_queries_and_resumes_a_watch() {
    if !node() {
        eprintln!("SKIPPED: no Node.js and npm on this machine; the Node example needs both");
        return;
    }
    let dir = tokio::task::spawn_blocking(node_example).await.unwrap();
    let h = common::Harness::start().await;
    let mut cmd = Command::new("node");
    cmd.arg("halcyon_example.js")
        .current_dir(&dir)
        .env("HALCYON_PROTO", workspace_root().join("proto"));
    let out = run_client(&h, cmd, EXAMPLE_LIMIT).await;
    check(&out);
    h.node.stop(Duration::from_secs(5)).await;
}
