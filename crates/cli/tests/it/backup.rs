//! Issue 18, the restore drill: a node with a checkpoint key projects a scenario; `halcyon backup` takes
//! every stream; the NATS server and its data are destroyed; `halcyon restore --verify` puts the streams in
//! a new server and checks them against the backup's signed checkpoints; a fresh node projects the
//! restored streams and its export equals the original node's, and `halcyon audit verify` finds every
//! stream intact. A backup whose snapshot was altered is refused before anything is restored; one whose
//! checkpoints were altered (and its manifest rewritten to match) is restored but fails the verification.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::{self, caught_up_within, free_port, halcyon, halcyon_ok};
use halcyon_testkit::NatsServer;

const OPERATOR: [&str; 4] = [
    "--nats-user",
    "operator",
    "--nats-password",
    "operator-dev-secret",
];

fn serve(nats: &NatsServer, data: &Path, port: u16) -> Child {
    common::serve_node(
        nats,
        data,
        port,
        "restore-drill",
        &[
            "--checkpoint-key",
            "deploy/checkpoint-dev.key",
            "--keyring",
            "deploy/keyring-dev.toml",
            "--checkpoint-every-secs",
            "1",
        ],
        &[],
    )
}

/// Waits until every stream in `wanted` is covered by a signed checkpoint up to its last sequence.
async fn checkpointed(nats: &NatsServer, wanted: &BTreeMap<String, u64>) {
    let js = common::operator_js(nats).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (stream, sequence) in wanted {
        loop {
            let last = halcyon_bus::checkpoint::last_checkpoint(&js, stream)
                .await
                .unwrap();
            if last.is_some_and(|c| c.checkpoint.to_sequence >= *sequence) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{stream} not checkpointed up to {sequence}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the node on `port` has projected `wanted`; on failure shows the node's log.
async fn caught_up(port: u16, wanted: &BTreeMap<String, u64>, data: &Path) {
    let wanted_owned = wanted.clone();
    let waited =
        tokio::spawn(async move { caught_up_within(port, &wanted_owned, Duration::from_secs(60)).await })
            .await;
    if waited.is_err() {
        panic!(
            "the node did not catch up with {wanted:?}: {}",
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
    }
}

fn export(nats: &NatsServer, data: &Path, at: &str, out: &Path) -> String {
    halcyon_ok(&[
        "export",
        "--nats-url",
        &nats.url(),
        "--nats-password",
        "operator-dev-secret",
        "--data-dir",
        data.to_str().unwrap(),
        "--deadlines-at",
        at,
        "--out",
        out.to_str().unwrap(),
    ]);
    std::fs::read_to_string(out).unwrap()
}

fn restore(nats: &NatsServer, from: &Path) -> std::process::Output {
    let mut args = vec![
        "restore",
        "--from",
        from.to_str().unwrap(),
        "--verify",
        "--keyring",
        "deploy/keyring-dev.toml",
        "--nats-url",
    ];
    let url = nats.url();
    args.push(&url);
    args.extend(OPERATOR);
    halcyon(&args)
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

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restore_drill_brings_back_every_stream_and_refuses_an_altered_backup() {
    let dir = tempfile::tempdir().unwrap();
    // A moment after both nodes will have run, for both exports' deadlines.
    let at = halcyon_schema::convert::format_timestamp(&halcyon_schema::convert::timestamp_from_millis(
        halcyon_schema::clock::now_ms() + 86_400_000,
    ));
    let original = NatsServer::start_with_auth();
    common::apply_streams(&original);
    common::publish_scenario(&original, 4, 18);
    let wanted = common::stream_lasts(&original).await;
    let (first_data, port) = (dir.path().join("first"), free_port());
    let node = serve(&original, &first_data, port);
    caught_up(port, &wanted, &first_data).await;
    checkpointed(&original, &wanted).await;
    common::stop(node);
    let first_export = export(&original, &first_data, &at, &dir.path().join("first.txt"));

    // The backup.
    let backups = dir.path().join("backups");
    let out = halcyon(
        &[
            &[
                "backup",
                "--out",
                backups.to_str().unwrap(),
                "--nats-url",
                &original.url(),
            ][..],
            &OPERATOR[..],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let taken = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(taken.join("manifest.json").is_file(), "{}", text(&out));
    for stream in wanted.keys().map(String::as_str).chain(["AUDIT", "CHECKPOINTS"]) {
        assert!(
            taken.join(stream).join("stream.tar.s2").is_file(),
            "{stream}: {}",
            text(&out)
        );
    }

    // The disaster: the server and its data are gone. A new one, empty.
    drop(original);
    let replacement = NatsServer::start_with_auth();
    let out = restore(&replacement, &taken);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("verified against"), "{}", text(&out));
    assert_eq!(common::stream_lasts(&replacement).await, wanted);
    // As the restore says: the spec applied again (the nodes bucket is not in a backup).
    assert!(text(&out).contains("streams apply"), "{}", text(&out));
    common::apply_streams(&replacement);

    // A fresh node on the restored streams ends with the same read models.
    let (fresh_data, port) = (dir.path().join("fresh"), free_port());
    let node = serve(&replacement, &fresh_data, port);
    caught_up(port, &wanted, &fresh_data).await;
    common::stop(node);
    let fresh_export = export(&replacement, &fresh_data, &at, &dir.path().join("fresh.txt"));
    assert!(!first_export.is_empty());
    assert!(
        first_export == fresh_export,
        "the fresh node's export differs from the original's ({} and {} lines)",
        first_export.lines().count(),
        fresh_export.lines().count()
    );
    let out = halcyon(
        &[
            &[
                "audit",
                "verify",
                "--keyring",
                "deploy/keyring-dev.toml",
                "--nats-url",
                &replacement.url(),
            ][..],
            &OPERATOR[..],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("DIVERGES"), "{}", text(&out));

    // An altered snapshot: refused, nothing restored.
    let altered = dir.path().join("altered");
    copy_dir(&taken, &altered);
    let victim = altered.join("EVENTS_POLICE_SY/stream.tar.s2");
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let empty = NatsServer::start_with_auth();
    let out = restore(&empty, &altered);
    assert!(
        !out.status.success(),
        "an altered backup was restored: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("EVENTS_POLICE_SY/stream.tar.s2 (its SHA-256 differs"),
        "{}",
        text(&out)
    );
    assert!(
        common::stream_lasts(&empty).await.is_empty(),
        "nothing is restored"
    );

    // Checkpoints altered and the manifest rewritten to match: the signatures give it away.
    let forged = dir.path().join("forged");
    copy_dir(&taken, &forged);
    let lines = std::fs::read_to_string(forged.join("checkpoints.jsonl")).unwrap();
    let mut first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    first["to_sequence"] = serde_json::json!(first["to_sequence"].as_u64().unwrap() + 1000);
    let rewritten: String = std::iter::once(first.to_string())
        .chain(lines.lines().skip(1).map(str::to_owned))
        .map(|l| l + "\n")
        .collect();
    std::fs::write(forged.join("checkpoints.jsonl"), &rewritten).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(forged.join("manifest.json")).unwrap()).unwrap();
    {
        use sha2::Digest as _;
        manifest["files"]["checkpoints.jsonl"] = serde_json::json!({
            "sha256": hex::encode(sha2::Sha256::digest(rewritten.as_bytes())),
            "bytes": rewritten.len(),
        });
    }
    std::fs::write(forged.join("manifest.json"), manifest.to_string()).unwrap();
    let another = NatsServer::start_with_auth();
    let out = restore(&another, &forged);
    assert!(!out.status.success(), "a forged backup verified: {}", text(&out));
    assert!(
        text(&out).contains("diverges from the backup's signed checkpoints"),
        "{}",
        text(&out)
    );
}
