//! Issue 21: the examples in other languages (examples/python, examples/node) run against a real node and
//! real NATS and their answers are checked: a case event published as its agency with the right subject,
//! message id and expected-sequence header; its retry reported a duplicate; a write on a stale sequence
//! reported a conflict; the child read back (after the write) with a token, a purpose and the acting
//! practitioner; the flag checked from A&E and the owner's watch told, then resumed after the last
//! notification it saw. Skipped with a message only where the language runtime is absent.

use crate::common;
use crate::stock_clients::{generate, python, run, venv};

use std::process::Command;
use std::time::Duration;

use halcyon_testkit::workspace_root;

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
    let script = workspace_root().join("examples/python/halcyon_example.py");
    let (nats_url, grpc_addr, py) = (h.nats.url(), h.node.addr.to_string(), venv.join("bin/python"));
    let out_dir = generated.path().to_owned();
    let stdout = tokio::task::spawn_blocking(move || {
        run(Command::new(py)
            .arg(script)
            .env("HALCYON_PY_OUT", out_dir)
            .env("HALCYON_NATS", nats_url)
            .env("HALCYON_GRPC", grpc_addr))
    })
    .await
    .unwrap();
    let out: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    check(&out);
    h.node.stop(Duration::from_secs(5)).await;
}
