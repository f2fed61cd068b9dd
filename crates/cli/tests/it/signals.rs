//! Issue 8 (signals): `halcyon signals`, run as the real binary against a real nats-server and a real node
//! (`halcyon serve`). The police record two missing episodes, a school an absence, A&E an intoxication
//! attendance: the MASH lists one S02 signal citing those four facts (JSON and text), a school lists none;
//! `halcyon signals outcome` refuses no-action without a reason (exit 64) and a signal the agency does not
//! receive, then records the MASH's outcome as an event, which the listing shows; after the node stops,
//! `halcyon rebuild` and `halcyon export` give the live node's bytes, signals included.
//! `halcyon signals --watch` prints a signal as the node raises it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use common::{Node, halcyon, halcyon_ok};
use halcyon_bus::{Credentials, Publisher, PublisherConfig, connect};
use halcyon_grpc::pb::{self, event::Kind};
use halcyon_testkit::NatsServer;
use serde_json::Value;

const NHS: &str = "9434765919";
const DAY: i64 = 86_400_000;
/// Monday 2 March 2026, 10:00 UTC.
const T0: i64 = 1_772_445_600_000;

fn envelope(agency: &str, at_ms: i64, kind: Kind) -> pb::Envelope {
    halcyon_testkit::envelope(agency, "p-1", NHS, at_ms, kind)
}

async fn publish(nats: &NatsServer, envelopes: &[pb::Envelope]) {
    let mut by_agency: BTreeMap<&str, Vec<&pb::Envelope>> = BTreeMap::new();
    for e in envelopes {
        by_agency.entry(e.agency_id.as_str()).or_default().push(e);
    }
    for (agency, envelopes) in by_agency {
        let client = connect(
            &nats.url(),
            &Credentials::agency(agency, &format!("{agency}-dev-secret")),
            "test",
        )
        .await
        .unwrap();
        let publisher = Publisher::new(
            client,
            PublisherConfig {
                agency: Some(agency.parse().unwrap()),
                ..Default::default()
            },
        );
        for e in envelopes {
            publisher.publish(e, None).await.expect("published");
        }
    }
}

impl Node {
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signals(&self, token: &str, extra: &[&str]) -> String {
        let api = self.api();
        let mut args = vec!["signals", "--api", &api, "--token", token];
        args.extend_from_slice(extra);
        halcyon_ok(&args)
    }

    /// The MASH's signals as JSON, polled (bounded) until `ready` holds.
    async fn signals_when(&self, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.signals("demo-mash-rotherham", &["--json"]);
            let listed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if ready(&listed) {
                return listed;
            }
            assert!(Instant::now() < until, "{what} within 30 s, got {out}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, and wait (bounded) for the node to drain and exit.
    fn stop(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while self.process.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < until,
                "the node did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halcyon_signals_lists_records_outcomes_and_rebuilds() {
    let nats = NatsServer::start_with_auth();
    let mut node = Node::start(&nats, "signals-test");
    node.client().await;
    let facts = vec![
        envelope(
            "csc-rotherham",
            T0,
            Kind::ReferralReceived(pb::ReferralReceived {
                referrer: None,
                summary: "worries".into(),
            }),
        ),
        envelope(
            "mash-rotherham",
            T0 + 3_600_000,
            Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
                requested_agency_id: "police-sy".into(),
                rag: pb::Rag::Amber as i32,
            }),
        ),
        envelope(
            "police-sy",
            T0 + DAY,
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported::default()),
        ),
        envelope(
            "police-sy",
            T0 + 8 * DAY,
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported::default()),
        ),
        envelope(
            "school-oakwood",
            T0 + 15 * DAY,
            Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
                attendance_percent: 70,
                sessions_missed: 19,
            }),
        ),
        envelope(
            "health-rgh-ed",
            T0 + 20 * DAY,
            Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                setting: "ED".into(),
                reason: pb::AttendanceReason::Intoxication as i32,
                clinical_summary: String::new(),
            }),
        ),
    ];
    publish(&nats, &facts).await;

    let listed = node.signals_when("one signal", |l| l.len() == 1).await;
    let signal = &listed[0];
    let id = format!("S02/{}", facts[5].event_id);
    assert_eq!(signal["signal_id"], id.as_str());
    let cited: Vec<&str> = signal["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["event_id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = facts[2..].iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(cited, want);
    assert!(signal.get("outcome").is_none(), "{signal}");

    let text = node.signals("demo-mash-rotherham", &[]);
    println!("{text}");
    assert!(text.starts_with("1 signal(s)\n"), "{text}");
    assert!(
        text.contains(&format!(
            "{id} exploitation indicators co-occur (co-occurrence, 42 days) child "
        )),
        "{text}"
    );
    assert!(
        text.contains("fired 2026-03-22T10:00:00Z: 4 facts [police-sy EVENTS_POLICE_SY#1 "),
        "{text}"
    );
    assert!(text.trim_end().ends_with("no outcome recorded"), "{text}");
    let school = node.signals("demo-school-oakwood", &[]);
    assert_eq!(school, "0 signal(s)\n");
    let api = node.api();
    let no_token = Command::new(common::BIN)
        .args(["signals", "--api", &api])
        .env_remove("HALCYON_TOKEN")
        .output()
        .unwrap();
    assert_eq!(no_token.status.code(), Some(64), "{no_token:?}");

    let nats_url = nats.url();
    let outcome = |token: &str, agency: &str, extra: &[&str]| {
        let password = format!("{agency}-dev-secret");
        let mut args = vec![
            "signals",
            "outcome",
            &id,
            "--api",
            &api,
            "--token",
            token,
            "--nhs",
            NHS,
            "--recorded-by",
            "p-7",
            "--agency",
            agency,
            "--nats-password",
            &password,
            "--nats-url",
            &nats_url,
        ];
        args.extend_from_slice(extra);
        halcyon(&args)
    };
    let refused = outcome(
        "demo-mash-rotherham",
        "mash-rotherham",
        &["--outcome", "no-action"],
    );
    assert_eq!(refused.status.code(), Some(64), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--reason"));
    let not_theirs = outcome(
        "demo-school-oakwood",
        "school-oakwood",
        &["--outcome", "reviewed", "--reason", "seen"],
    );
    assert_eq!(not_theirs.status.code(), Some(1), "{not_theirs:?}");
    assert!(
        String::from_utf8_lossy(&not_theirs.stderr).contains("that your agency receives"),
        "{not_theirs:?}"
    );
    let recorded = outcome(
        "demo-mash-rotherham",
        "mash-rotherham",
        &[
            "--outcome",
            "no-action",
            "--reason",
            "known to the team; plan in place",
        ],
    );
    let said = String::from_utf8_lossy(&recorded.stdout);
    assert!(recorded.status.success(), "{recorded:?}");
    assert!(
        said.starts_with(&format!("signal {id}: no action — recorded as event ")),
        "{said}"
    );

    let listed = node
        .signals_when("the outcome", |l| l.len() == 1 && l[0].get("outcome").is_some())
        .await;
    let o = &listed[0]["outcome"];
    assert_eq!(o["outcome"], "SIGNAL_OUTCOME_NO_ACTION");
    assert_eq!(o["agency_id"], "mash-rotherham");
    assert_eq!(o["recorded_by"], "p-7");
    let text = node.signals("demo-mash-rotherham", &[]);
    assert!(
        text.trim_end().ends_with("no action by mash-rotherham (p-7)"),
        "{text}"
    );
    assert_eq!(node.signals("demo-mash-rotherham", &["--open"]), "0 signal(s)\n");

    // The node stops; a rebuild from the streams and the live read models export the same bytes.
    node.stop();
    let live = node.data.path().join("node");
    let rebuilt = node.data.path().join("rebuilt");
    // After the node last ran (its timer recorded breaches on the system clock), the same for both.
    let at = "2030-01-01T00:00:00Z";
    let live_export = node.data.path().join("live.txt");
    halcyon_ok(&[
        "export",
        "--nats-url",
        &nats.url(),
        "--nats-password",
        "operator-dev-secret",
        "--data-dir",
        live.to_str().unwrap(),
        "--deadlines-at",
        at,
        "--out",
        live_export.to_str().unwrap(),
    ]);
    halcyon_ok(&[
        "rebuild",
        "--nats-url",
        &nats.url(),
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
        "--data-dir",
        rebuilt.to_str().unwrap(),
        "--quiet",
    ]);
    let rebuilt_export = node.data.path().join("rebuilt.txt");
    halcyon_ok(&[
        "export",
        "--nats-url",
        &nats.url(),
        "--nats-password",
        "operator-dev-secret",
        "--data-dir",
        rebuilt.to_str().unwrap(),
        "--deadlines-at",
        at,
        "--out",
        rebuilt_export.to_str().unwrap(),
    ]);
    let (a, b) = (
        std::fs::read_to_string(&live_export).unwrap(),
        std::fs::read_to_string(&rebuilt_export).unwrap(),
    );
    assert_eq!(a.lines().filter(|l| l.starts_with("S ")).count(), 1);
    assert!(a == b, "the live export differs from the rebuild's");
}

/// A valid NHS number for `n` (a 9-digit stem from it, the mod-11 check digit after; stems without one
/// are skipped).
fn nhs_number(mut n: u64) -> String {
    loop {
        let stem = format!("{:09}", 943_000_000 + n);
        let digits: [u8; 9] = std::array::from_fn(|i| stem.as_bytes()[i] - b'0');
        if let Some(check) = halcyon_schema::NhsNumber::check_digit(&digits) {
            return format!("{stem}{check}");
        }
        n += 1;
    }
}

/// A child process killed on drop, whatever the test's fate.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halcyon_signals_watch_prints_a_signal_as_it_fires() {
    use std::io::BufRead;
    let nats = NatsServer::start_with_auth();
    let mut node = Node::start(&nats, "signals-watch-test");
    node.client().await;
    let mut watcher = Killed(
        Command::new(common::BIN)
            .args([
                "signals",
                "--api",
                &node.api(),
                "--token",
                "demo-mash-rotherham",
                "--watch",
            ])
            .current_dir(halcyon_testkit::workspace_root())
            .env("HALCYON_LOG", "warn")
            .env("HALCYON_HEARTBEAT_SECS", "1")
            .env("HALCYON_LEASE_SECS", "3")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = watcher.0.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let header = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the listing before the watch within 30 s");
    assert_eq!(header, "0 signal(s)");

    // The watch opens just after the listing; a signal that fires before it opens is not announced to
    // it. So a whole pattern, for a further child each time, is published every 2 s until a signal
    // shows, for at most 60 s.
    let until = Instant::now() + Duration::from_secs(60);
    let mut completing = Vec::new();
    let seen = 'watch: loop {
        if Instant::now() >= until {
            panic!("no signal printed within 60 s of {} patterns", completing.len());
        }
        let nhs = nhs_number(completing.len() as u64 * 7);
        let for_child = |mut e: pb::Envelope| {
            e.child.as_mut().unwrap().nhs_number = nhs.clone();
            e
        };
        let pattern: Vec<pb::Envelope> = vec![
            envelope(
                "mash-rotherham",
                T0,
                Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
                    requested_agency_id: "police-sy".into(),
                    rag: pb::Rag::Red as i32,
                }),
            ),
            envelope(
                "police-sy",
                T0 + DAY,
                Kind::MissingEpisodeReported(pb::MissingEpisodeReported::default()),
            ),
            envelope(
                "police-sy",
                T0 + 2 * DAY,
                Kind::MissingEpisodeReported(pb::MissingEpisodeReported::default()),
            ),
            envelope(
                "school-oakwood",
                T0 + 3 * DAY,
                Kind::ExclusionRecorded(pb::ExclusionRecorded {
                    permanent: false,
                    days: 3,
                    reason: String::new(),
                }),
            ),
            envelope(
                "health-rgh-ed",
                T0 + 4 * DAY,
                Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                    setting: "ED".into(),
                    reason: pb::AttendanceReason::SexualHealth as i32,
                    clinical_summary: String::new(),
                }),
            ),
        ]
        .into_iter()
        .map(for_child)
        .collect();
        completing.push(format!("S02/{}", pattern[4].event_id));
        publish(&nats, &pattern).await;
        let round = Instant::now() + Duration::from_secs(2);
        while let Some(left) = round.checked_duration_since(Instant::now()) {
            if let Ok(line) = lines.recv_timeout(left) {
                break 'watch line;
            }
        }
    };
    drop(watcher);
    println!("{seen}");
    assert!(
        completing.iter().any(|id| seen.starts_with(&format!(
            "{id} exploitation indicators co-occur (co-occurrence, 42 days) child "
        ))),
        "{seen}"
    );
    assert!(seen.contains(": 4 facts ["), "{seen}");
    assert!(seen.ends_with("no outcome recorded"), "{seen}");
}
