//! Issue 3: `halcyon publish` on a JSON-lines file with bad lines names each bad line and its problem,
//! publishes the good ones, and exits non-zero. Runs the real binary against a real nats-server.

use std::process::Command;

use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig};

fn halcyon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_halcyon"))
        .args(args)
        .current_dir(halcyon_testkit::workspace_root())
        .env("HALCYON_STREAMS_SPEC", "deploy/streams-local.toml")
        .env("HALCYON_LOG", "warn")
        .output()
        .expect("run halcyon")
}

#[test]
fn bad_lines_are_named_and_the_good_ones_published() {
    // One event at a time, and in atomic batches.
    for batch_len in ["1", "500"] {
        bad_lines_are_named_and_the_good_ones_published_with(batch_len);
    }
}

fn bad_lines_are_named_and_the_good_ones_published_with(batch_len: &str) {
    let nats = NatsServer::start();
    let url = nats.url();
    let out = halcyon(&["streams", "apply", "--nats-url", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let s = Scenario::generate(
        &ScenarioConfig {
            children: 1,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let good: Vec<String> = s.envelopes[..3]
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let mut bad_nhs = s.envelopes[3].clone();
    bad_nhs.child.as_mut().unwrap().nhs_number = "9876544321".into();
    let mut no_id = s.envelopes[4].clone();
    no_id.event_id.clear();
    let lines = [
        good[0].clone(),
        good[1].clone(),
        "{this is not json".to_string(),
        serde_json::to_string(&bad_nhs).unwrap(),
        String::new(),
        serde_json::to_string(&no_id).unwrap(),
        good[2].clone(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let file = file.to_str().unwrap();

    let out = halcyon(&[
        "publish",
        "--nats-url",
        &url,
        "--file",
        file,
        "--batch-len",
        batch_len,
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("line 3: not an envelope in JSON"), "{stderr}");
    assert!(
        stderr.contains("line 4: invalid event: child.nhs_number: invalid NHS number"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6: invalid event: event_id: missing"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("line 5"),
        "a blank line is not an error: {stderr}"
    );
    assert!(
        stdout.contains("published 3 events (0 already stored)"),
        "{stdout}"
    );
    assert!(stdout.contains("3 failed"), "{stdout}");

    // The good lines were stored: publishing them again finds them all already there.
    let again = halcyon(&[
        "publish",
        "--nats-url",
        &url,
        "--file",
        file,
        "--batch-len",
        batch_len,
    ]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("published 3 events (3 already stored)"));
}
