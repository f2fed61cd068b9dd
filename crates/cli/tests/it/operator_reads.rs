//! Issue 20: every operator command that reads child data (`replay`, `audit chronology`, `audit as-of`,
//! `audit access`, `export`) writes exactly one access record to AUDIT — naming the operator, the stated
//! reason, the command and the child it names — before it prints anything; with AUDIT unavailable it prints
//! nothing and exits non-zero; without an operator or a reason it refuses to start. Run as the real binary
//! against a real nats-server with the deploy users (the operator may write only its own AUDIT subject).

use std::process::{Command, Output};

use async_nats::jetstream;
use halcyon_bus::Credentials;
use halcyon_grpc::pb;
use halcyon_schema::ChildId;
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};

use super::common;

const CREDENTIALS: &str = "deploy/nats/dev-credentials.toml";
const OPERATOR: &str = "ops-alice-17";
const REASON: &str = "subject access request SAR-2026-114";

/// The binary with no operator or reason in its environment: each test names them on the command line.
fn halcyon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_halcyon"))
        .args(args)
        .current_dir(workspace_root())
        .env("HALCYON_STREAMS_SPEC", "deploy/streams-local.toml")
        .env("HALCYON_LOG", "warn")
        .env_remove("HALCYON_OPERATOR")
        .env_remove("HALCYON_READ_REASON")
        .env_remove("HALCYON_NATS_USER")
        .env_remove("HALCYON_NATS_PASSWORD")
        .output()
        .expect("run halcyon")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn operator_js(nats: &NatsServer) -> jetstream::Context {
    jetstream::new(
        halcyon_bus::connect(
            &nats.url(),
            &Credentials::user("operator", "operator-dev-secret"),
            "test",
        )
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operator_read_of_child_data_writes_one_access_record_first_and_fails_closed_without_audit() {
    let nats = NatsServer::start_with_auth();
    let url = nats.url();
    let operator = [
        "--nats-url",
        &url,
        "--nats-user",
        "operator",
        "--credentials",
        CREDENTIALS,
    ];
    let mut apply = vec!["streams", "apply"];
    apply.extend(operator);
    let out = halcyon(&apply);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = halcyon(&[
        "publish",
        "--nats-url",
        &url,
        "--scenario-children",
        "3",
        "--seed",
        "5",
        "--credentials",
        CREDENTIALS,
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let scenario = Scenario::generate(
        &ScenarioConfig {
            seed: 5,
            children: 3,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let nhs = scenario.children[0].nhs.to_string();
    let child = ChildId::from_nhs(&scenario.children[0].nhs).to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rebuild = vec!["rebuild", "--data-dir", data.to_str().unwrap(), "--quiet"];
    rebuild.extend(operator);
    let out = halcyon(&rebuild);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let who = ["--operator", OPERATOR, "--read-reason", REASON];
    let now = halcyon_schema::convert::format_timestamp(&halcyon_schema::convert::timestamp_from_millis(
        halcyon_schema::clock::now_ms() + 60_000,
    ));
    // (command words, the child the record must name, its method)
    let reads: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["replay", "--format", "json"], "", "halcyon replay"),
        (vec!["replay", "--child", &nhs], &child, "halcyon replay"),
        (
            vec!["audit", "chronology", "--child", &nhs, "--quiet"],
            &child,
            "halcyon audit chronology",
        ),
        (
            vec![
                "audit",
                "as-of",
                "--agency",
                "csc-rotherham",
                "--nhs",
                &nhs,
                "--at",
                &now,
            ],
            &child,
            "halcyon audit as-of",
        ),
        (
            vec!["audit", "access", "--nhs", &nhs],
            &child,
            "halcyon audit access",
        ),
        (
            vec!["export", "--data-dir", data.to_str().unwrap()],
            "",
            "halcyon export",
        ),
    ];
    let js = operator_js(&nats).await;
    for (words, named, method) in &reads {
        let before = common::audit_records(&js).await;
        let mut args = words.clone();
        args.extend(operator);
        args.extend(who);
        let out = halcyon(&args);
        assert!(out.status.success(), "{words:?}: {}", text(&out.stderr));
        assert!(!out.stdout.is_empty(), "{words:?} printed nothing");
        let after = common::audit_records(&js).await;
        assert_eq!(
            after.len(),
            before.len() + 1,
            "{words:?}: exactly one access record"
        );
        let r = after.last().unwrap();
        assert_eq!(r.method, *method);
        assert_eq!(r.acting_person_id, OPERATOR);
        assert_eq!(r.acting_person_role, "operator");
        assert_eq!(r.reason, REASON);
        assert_eq!(r.child_id, *named, "{words:?}");
        assert_eq!(r.outcome, pb::AccessOutcome::Permitted as i32);
    }

    // One person's reads: `audit access --person` lists those that name them, and only those.
    let mut args = vec!["audit", "access", "--person", OPERATOR, "--json"];
    args.extend(operator);
    args.extend(who);
    let out = halcyon(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(listed.len() > reads.len(), "{listed:?}");
    assert!(
        listed.iter().all(|r| r["acting_person_id"] == OPERATOR),
        "{listed:?}"
    );
    let mut args = vec!["audit", "access", "--person", "nobody-99", "--json"];
    args.extend(operator);
    args.extend(who);
    let out = halcyon(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no read names that person");

    // Who and why are required: nothing is read without them.
    let mut args = vec!["replay"];
    args.extend(operator);
    let out = halcyon(&args);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("--operator"), "{}", text(&out.stderr));
    let mut args = vec!["replay", "--operator", OPERATOR, "--read-reason", " "];
    args.extend(operator);
    let out = halcyon(&args);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("--read-reason"),
        "{}",
        text(&out.stderr)
    );

    // AUDIT gone (the agency streams still readable): every read prints nothing and fails.
    js.delete_stream("AUDIT").await.unwrap();
    for (words, _, _) in &reads {
        let mut args = words.clone();
        args.extend(operator);
        args.extend(who);
        let out = halcyon(&args);
        assert!(!out.status.success(), "{words:?} succeeded without AUDIT");
        assert!(
            out.stdout.is_empty(),
            "{words:?} printed without AUDIT: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains("the access log (AUDIT) is unavailable, so nothing was read"),
            "{words:?}: {}",
            text(&out.stderr)
        );
    }
}
