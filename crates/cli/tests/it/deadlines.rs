//! Issue 8 (deadlines): `halcyon deadlines`, run as the real binary against a real nats-server and a real
//! node (`halcyon serve`, on the system clock). A referral from March 2026 decided two working days late and
//! never acknowledged: the owning authority lists T01 as met late by two working days, T02 (acknowledgement)
//! and T03 (assessment) as still open, each with its start fact; a school with no relationship to the child
//! lists nothing.

use std::time::{Duration, Instant};

use crate::common;
use common::{Node, halcyon_ok};
use halcyon_bus::{Credentials, Publisher, PublisherConfig, connect};
use halcyon_grpc::pb::{self, event::Kind};
use halcyon_testkit::NatsServer;
use serde_json::Value;

const CSC: &str = "csc-rotherham";
/// Monday 2 March 2026, 10:00 UTC.
const MONDAY_10H: i64 = 1_772_445_600_000;
/// Thursday 5 March 2026, 10:00 UTC: two working days after T01 fell due.
const THURSDAY_10H: i64 = 1_772_704_800_000;

impl Node {
    fn deadlines(&self, token: &str, extra: &[&str]) -> String {
        let api = format!("http://127.0.0.1:{}", self.port);
        let mut args = vec!["deadlines", "--api", &api, "--token", token];
        args.extend_from_slice(extra);
        halcyon_ok(&args)
    }
}

fn envelope(at_ms: i64, kind: Kind) -> pb::Envelope {
    halcyon_testkit::envelope(CSC, "sw-1", "9434765919", at_ms, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halcyon_deadlines_lists_the_breaches_the_agency_may_know_of() {
    let nats = NatsServer::start_with_auth();
    let mut node = Node::start(&nats, "deadlines-test");
    node.client().await;
    let referral = envelope(
        MONDAY_10H,
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: Some(pb::ReferrerDetails {
                source_code: "2A".into(),
                ..Default::default()
            }),
            summary: "school reports bruising".into(),
        }),
    );
    let decision = envelope(
        THURSDAY_10H,
        Kind::ReferralDecisionRecorded(pb::ReferralDecisionRecorded {
            outcome: pb::ReferralOutcome::S17Assessment as i32,
            rationale: "assessment needed".into(),
        }),
    );
    let client = connect(
        &nats.url(),
        &Credentials::agency(CSC, &format!("{CSC}-dev-secret")),
        "test",
    )
    .await
    .unwrap();
    let publisher = Publisher::new(
        client,
        PublisherConfig {
            agency: Some(CSC.parse().unwrap()),
            ..Default::default()
        },
    );
    for e in [&referral, &decision] {
        publisher.publish(e, None).await.expect("published");
    }

    // The node projects, derives and records on its own; poll the CLI (bounded) until all three show.
    let until = Instant::now() + Duration::from_secs(30);
    let breaches: Vec<Value> = loop {
        let out = node.deadlines("demo-csc-rotherham", &["--json"]);
        let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() == 3 {
            break lines;
        }
        assert!(Instant::now() < until, "three breaches within 30 s, got {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rule = |id: &str| breaches.iter().find(|b| b["rule_id"] == id).unwrap().clone();
    let t01 = rule("T01");
    assert_eq!(t01["resolution"], "BREACH_RESOLUTION_MET_LATE");
    assert_eq!(t01["late_units"], "2");
    assert_eq!(t01["started_by"]["event_id"], referral.event_id.as_str());
    assert_eq!(t01["resolved_by"]["event_id"], decision.event_id.as_str());
    assert_eq!(t01["due_at"], "2026-03-03T23:59:59.999+00:00");
    for open in ["T02", "T03"] {
        assert_eq!(rule(open)["resolution"], "BREACH_RESOLUTION_OPEN", "{open}");
    }

    let text = node.deadlines("demo-csc-rotherham", &[]);
    println!("{text}");
    assert!(text.starts_with("3 breach(es) as of "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("T01 referral decision (1 working day)")
                && l.contains(": met 2 working days late (by ReferralDecisionRecorded")),
        "{text}"
    );
    let open = node.deadlines("demo-csc-rotherham", &["--open"]);
    assert!(open.starts_with("2 breach(es)"), "{open}");
    let school = node.deadlines("demo-school-oakwood", &[]);
    assert!(school.starts_with("0 breach(es)"), "{school}");
}

/// A `halcyon deadlines --watch` process whose standard output lines arrive on a channel; killed on drop.
struct Watcher {
    process: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watcher {
    fn start(node: &Node, token: &str) -> Watcher {
        use std::io::BufRead;
        let mut process = std::process::Command::new(common::BIN)
            .args([
                "deadlines",
                "--api",
                &format!("http://127.0.0.1:{}", node.port),
                "--token",
                token,
                "--watch",
            ])
            .current_dir(halcyon_testkit::workspace_root())
            .env("HALCYON_LOG", "warn")
            .env("HALCYON_HEARTBEAT_SECS", "1")
            .env("HALCYON_LEASE_SECS", "3")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher { process, lines }
    }

    /// The next line printed within `wait`, if any.
    fn next_line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halcyon_deadlines_watch_prints_a_breach_as_the_node_records_it() {
    let nats = NatsServer::start_with_auth();
    let mut node = Node::start(&nats, "deadlines-watch-test");
    node.client().await;
    let watcher = Watcher::start(&node, "demo-csc-rotherham");
    let header = watcher
        .next_line(Duration::from_secs(30))
        .expect("the listing before the watch within 30 s");
    assert!(header.starts_with("0 breach(es) as of "), "{header}");

    let client = connect(
        &nats.url(),
        &Credentials::agency(CSC, &format!("{CSC}-dev-secret")),
        "test",
    )
    .await
    .unwrap();
    let publisher = Publisher::new(
        client,
        PublisherConfig {
            agency: Some(CSC.parse().unwrap()),
            ..Default::default()
        },
    );
    // A referral from March with no decision: its deadlines are long past, so the node's timer records
    // the breaches as soon as the referral is projected, and the watcher prints them. The watch stream
    // opens just after the listing; a referral projected before it opened is not announced to it, so a
    // further one (another case) is published every 2 s until a breach shows, for at most 60 s.
    let until = Instant::now() + Duration::from_secs(60);
    let mut cases = Vec::new();
    let seen = 'watch: loop {
        assert!(
            Instant::now() < until,
            "no breach printed within 60 s of publishing {cases:?}"
        );
        let mut referral = envelope(
            MONDAY_10H,
            Kind::ReferralReceived(pb::ReferralReceived {
                referrer: Some(pb::ReferrerDetails {
                    source_code: "2A".into(),
                    ..Default::default()
                }),
                summary: "school reports bruising".into(),
            }),
        );
        referral.case_id = format!("CASE-W{}", cases.len() + 1);
        publisher.publish(&referral, None).await.expect("published");
        cases.push(referral.case_id.clone());
        let round = Instant::now() + Duration::from_secs(2);
        while let Some(left) = round.checked_duration_since(Instant::now()) {
            if let Some(line) = watcher.next_line(left) {
                break 'watch line;
            }
        }
    };
    println!("{seen}");
    assert!(
        cases.iter().any(|c| seen.contains(&format!("({CSC}, case {c})"))),
        "{seen}"
    );
    assert!(
        [
            "T01 referral decision",
            "T02 acknowledge referrer",
            "T03 child and family assessment"
        ]
        .iter()
        .any(|r| seen.starts_with(r)),
        "{seen}"
    );
    assert!(seen.contains("started by ReferralReceived"), "{seen}");
    // Still open, so overdue: by the working days that have passed since its due date (T01, T02 and T03 are
    // all working-day rules).
    assert!(seen.contains(": overdue by "), "{seen}");
    assert!(seen.contains(" working day"), "{seen}");
}
