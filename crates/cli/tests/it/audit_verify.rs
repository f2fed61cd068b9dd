//! Issue 7: `halcyon audit verify` and `halcyon audit checkpoints export`, run as the real binary against a
//! real nats-server with the deploy users and a `halcyon serve` node signing checkpoints with the dev key:
//! clean history prints "intact up to N" and exits 0; a stream rebuilt without one event prints the first
//! divergent position and exits 1; bad keys, unknown streams and an unreachable server are named, non-zero.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use halcyon_bus::Credentials;
use halcyon_bus::checkpoint::chain_messages;
use halcyon_testkit::{NatsServer, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_halcyon");
const PUBLIC_KEY: &str = "deploy/checkpoint-dev.key.pub";

fn halcyon(args: &[&str]) -> Output {
    common::halcyon(args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(nats: &NatsServer, data: &Path, log: &Path) -> Child {
    common::apply_streams(nats);
    Command::new(BIN)
        .arg("serve")
        .args(common::LOCAL_STREAMS)
        .args([
            "--nats-url",
            &nats.url(),
            "--nats-monitor-url",
            &nats.monitor_url(),
        ])
        .args([
            "--nats-user",
            "halcyon-node",
            "--nats-password",
            "node-dev-secret",
        ])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--checkpoint-key",
            "deploy/checkpoint-dev.key",
            "--checkpoint-every-secs",
            "1",
        ])
        .current_dir(workspace_root())
        .env("HALCYON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// `audit verify` as the operator with the dev public key, plus `extra` arguments.
fn verify(nats: &NatsServer, extra: &[&str]) -> Output {
    let url = nats.url();
    let mut args = vec![
        "audit",
        "verify",
        "--public-key",
        PUBLIC_KEY,
        "--nats-url",
        &url,
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
    ];
    args.extend_from_slice(extra);
    halcyon(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_intact_history_then_the_first_divergence_of_a_rebuilt_stream() {
    let nats = NatsServer::start_with_auth();
    let dir = tempfile::tempdir().unwrap();
    let mut node = serve(&nats, &dir.path().join("data"), &dir.path().join("node.log"));

    let url = nats.url();
    let published = halcyon(&[
        "publish",
        "--nats-url",
        &url,
        "--scenario-children",
        "4",
        "--seed",
        "7",
        "--credentials",
        "deploy/nats/dev-credentials.toml",
        "--quiet",
    ]);
    assert!(published.status.success(), "{}", text(&published.stderr));
    let positions: Vec<(String, u64)> = text(&published.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("position "))
        .map(|p| {
            let (s, q) = p.rsplit_once(':').unwrap();
            (s.to_owned(), q.parse().unwrap())
        })
        .collect();
    let police = positions
        .iter()
        .find(|(s, _)| s == "EVENTS_POLICE_SY")
        .cloned()
        .expect("police events published");

    // The node checkpoints every second; wait (bounded) until every stream is covered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let clean = loop {
        let out = verify(&nats, &[]);
        let stdout = text(&out.stdout);
        if out.status.success()
            && positions
                .iter()
                .all(|(s, q)| stdout.contains(&format!("{s}: intact up to {q} (")))
        {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "not all intact and checkpointed: {stdout}\n{}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The access log is verified with the agency streams (issue 20).
    assert!(clean.contains("AUDIT: intact up to"), "{clean}");
    assert!(!clean.contains("after the last checkpoint"), "{clean}");
    println!("$ halcyon audit verify (clean)\n{clean}");

    let export = dir.path().join("checkpoints.jsonl");
    let out = halcyon(&[
        "audit",
        "checkpoints",
        "export",
        "--out",
        export.to_str().unwrap(),
        "--nats-url",
        &url,
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = std::fs::read_to_string(&export).unwrap();
    assert!(
        lines
            .lines()
            .any(|l| l.contains("\"stream\":\"EVENTS_POLICE_SY\"")),
        "{lines}"
    );

    // Stop the node, then rebuild the police stream without one event: the operator deletes and recreates
    // the stream, the police user republishes the rest under the same event ids.
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    node.wait().unwrap();
    let operator = jetstream::new(
        halcyon_bus::connect(
            &url,
            &Credentials::user("operator", "operator-dev-secret"),
            "test",
        )
        .await
        .unwrap(),
    );
    let mut copy = Vec::new();
    let mut messages = std::pin::pin!(chain_messages(&operator, &police.0, 1, None).await.unwrap());
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        let done = m.sequence >= police.1;
        copy.push(m);
        if done {
            break;
        }
    }
    let k = police.1 / 2;
    copy.remove(k as usize - 1);
    let config = operator
        .get_stream(&police.0)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    operator.delete_stream(&police.0).await.unwrap();
    operator.create_stream(config).await.unwrap();
    let agency = jetstream::new(
        halcyon_bus::connect(
            &url,
            &Credentials::agency("police-sy", "police-sy-dev-secret"),
            "test",
        )
        .await
        .unwrap(),
    );
    for m in &copy {
        agency
            .send_publish(
                m.subject.clone(),
                PublishMessage::build()
                    .payload(m.payload.clone())
                    .message_id(&m.event_id),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let export_arg = export.to_str().unwrap();
    let out = verify(
        &nats,
        &["--stream", "EVENTS_POLICE_SY", "--checkpoints", export_arg],
    );
    let stdout = text(&out.stdout);
    println!(
        "$ halcyon audit verify --stream EVENTS_POLICE_SY --checkpoints FILE (rebuilt without event {k})\n{stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "EVENTS_POLICE_SY: DIVERGES at {k} — rewritten history: message {k} is event "
        )),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains(&format!(
            "history diverges from its signed checkpoints: EVENTS_POLICE_SY at {k} (rewritten)"
        )),
        "{}",
        text(&out.stderr)
    );
    let json = verify(&nats, &["--agency", "police-sy", "--json"]);
    let v: serde_json::Value = serde_json::from_str(text(&json.stdout).trim()).unwrap();
    assert_eq!(v["first"]["position"], k);
    assert_eq!(v["first"]["kind"], "rewritten");
    assert_eq!(v["intact"], false);
    // The other streams were not touched.
    let out = verify(&nats, &["--stream", "EVENTS_CSC_ROTHERHAM"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_bad_keys_unknown_streams_and_an_unreachable_server() {
    let nats = NatsServer::start_with_auth();
    let url = nats.url();
    let out = halcyon(&[
        "streams",
        "apply",
        "--nats-url",
        &url,
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("CHECKPOINTS: created"),
        "{}",
        text(&out.stdout)
    );

    let out = verify(&nats, &["--stream", "EVENTS_NOPE"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown stream EVENTS_NOPE; the streams on") && stderr.contains("EVENTS_POLICE_SY"),
        "{stderr}"
    );
    let out = verify(&nats, &["--agency", "Not An Agency"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("agency \"Not An Agency\""),
        "{}",
        text(&out.stderr)
    );

    // Clean and empty: every stream intact up to 0.
    let out = verify(&nats, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("EVENTS_POLICE_SY: intact up to 0 (0 messages read"),
        "{}",
        text(&out.stdout)
    );

    let secret = halcyon(&[
        "audit",
        "verify",
        "--public-key",
        "deploy/checkpoint-dev.key",
        "--nats-url",
        &url,
    ]);
    assert_eq!(secret.status.code(), Some(64));
    assert!(
        text(&secret.stderr).contains("public key deploy/checkpoint-dev.key: this is a signing (secret) key"),
        "{}",
        text(&secret.stderr)
    );
    let missing = halcyon(&[
        "audit",
        "verify",
        "--public-key",
        "no/such.pub",
        "--nats-url",
        &url,
    ]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(
        text(&missing.stderr).contains("public key no/such.pub: cannot read it"),
        "{}",
        text(&missing.stderr)
    );
    let no_key = halcyon(&["audit", "verify", "--nats-url", &url]);
    assert!(!no_key.status.success());
    assert!(
        text(&no_key.stderr).contains("--public-key"),
        "{}",
        text(&no_key.stderr)
    );

    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let out = halcyon(&[
        "audit",
        "verify",
        "--public-key",
        PUBLIC_KEY,
        "--nats-url",
        &nowhere,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("cannot connect to NATS at {nowhere}")),
        "{}",
        text(&out.stderr)
    );
}
