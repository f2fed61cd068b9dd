//! Issue 7: `halcyon replay` streams the agency streams' events, decoded, selected by agency, child, case,
//! sequence range and stored-time range, as JSON lines or an aligned table; unknown agencies, bad times and
//! an unreachable NATS fail with a useful message and a non-zero exit. Runs the real binary as the operator
//! against a real nats-server with the deploy users.

use std::collections::BTreeSet;
use std::process::Command;

use halcyon_grpc::pb;
use halcyon_schema::ChildId;
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};

const CREDENTIALS: &str = "deploy/nats/dev-credentials.toml";

fn halcyon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_halcyon"))
        .args(args)
        .current_dir(workspace_root())
        .env("HALCYON_STREAMS_SPEC", "deploy/streams-local.toml")
        .env("HALCYON_LOG", "warn")
        .env_remove("HALCYON_NATS_USER")
        .env_remove("HALCYON_NATS_PASSWORD")
        .env("HALCYON_OPERATOR", crate::common::OPERATOR)
        .env("HALCYON_READ_REASON", crate::common::READ_REASON)
        .output()
        .expect("run halcyon")
}

struct Replayed {
    lines: Vec<serde_json::Value>,
}

impl Replayed {
    fn event_ids(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| l["envelope"]["event_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A scenario published by each agency under its own identity; replays as the operator.
struct Fixture {
    nats: NatsServer,
    scenario: Scenario,
}

impl Fixture {
    fn new() -> Self {
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
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = halcyon(&[
            "publish",
            "--nats-url",
            &url,
            "--scenario-children",
            "3",
            "--seed",
            "11",
            "--credentials",
            CREDENTIALS,
            "--quiet",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let scenario = Scenario::generate(
            &ScenarioConfig {
                seed: 11,
                children: 3,
                ..Default::default()
            },
            &ScenarioAgencies::deploy(),
        );
        Self { nats, scenario }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let url = self.nats.url();
        let mut all = vec!["replay", "--nats-url", &url, "--credentials", CREDENTIALS];
        all.extend_from_slice(args);
        halcyon(&all)
    }

    fn json(&self, args: &[&str]) -> Replayed {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "replay {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        Replayed { lines }
    }

    fn expected(&self, keep: impl Fn(&pb::Envelope) -> bool) -> BTreeSet<String> {
        self.scenario
            .envelopes
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.event_id.clone())
            .collect()
    }
}

fn stored_ms(line: &serde_json::Value) -> i64 {
    halcyon_schema::convert::timestamp_millis(
        &halcyon_schema::convert::parse_timestamp(line["stored_at"].as_str().unwrap()).unwrap(),
    )
}

#[test]
fn replay_selects_by_agency_child_case_sequence_and_time() {
    let f = Fixture::new();

    // Everything, decoded, merged across streams in stored-time order.
    let all = f.json(&[]);
    assert_eq!(all.lines.len(), f.scenario.envelopes.len());
    assert_eq!(
        all.event_ids().into_iter().collect::<BTreeSet<_>>(),
        f.expected(|_| true)
    );
    let stored: Vec<i64> = all.lines.iter().map(stored_ms).collect();
    assert!(stored.windows(2).all(|w| w[0] <= w[1]), "merged by stored time");
    // Each line's envelope is the published one, in proto3 JSON.
    let first: pb::Envelope = serde_json::from_value(all.lines[0]["envelope"].clone()).unwrap();
    assert!(f.scenario.envelopes.contains(&first));

    // By agency.
    let police = f.json(&["--agency", "police-sy"]);
    assert_eq!(
        police.event_ids().into_iter().collect::<BTreeSet<_>>(),
        f.expected(|e| e.agency_id == "police-sy")
    );
    assert!(police.lines.iter().all(|l| l["stream"] == "EVENTS_POLICE_SY"));

    // By case (the server filters on the subject).
    let case = f.json(&["--agency", "police-sy", "--case", "CR-000001"]);
    assert!(!case.lines.is_empty());
    assert_eq!(
        case.event_ids().into_iter().collect::<BTreeSet<_>>(),
        f.expected(|e| e.agency_id == "police-sy" && e.case_id == "CR-000001")
    );
    let any_agency = f.json(&["--case", "CR-000001"]);
    assert_eq!(any_agency.event_ids(), case.event_ids());

    // By child: NHS number or child id, the same events.
    let nhs = f.scenario.children[1].nhs.clone();
    let by_nhs = f.json(&["--child", nhs.as_str()]);
    let expected = f.expected(|e| e.child.as_ref().unwrap().nhs_number == nhs.as_str());
    assert_eq!(by_nhs.event_ids().into_iter().collect::<BTreeSet<_>>(), expected);
    let id = ChildId::from_nhs(&nhs).to_string();
    assert_eq!(f.json(&["--child", &id]).event_ids(), by_nhs.event_ids());

    // By sequence range, per stream.
    let range = f.json(&["--agency", "csc-rotherham", "--from-seq", "2", "--to-seq", "5"]);
    let sequences: Vec<u64> = range
        .lines
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, vec![2, 3, 4, 5]);

    // By stored time: everything was stored after 2026-01-01 and nothing after the year 2100.
    assert_eq!(f.json(&["--since", "2026-01-01"]).lines.len(), all.lines.len());
    assert!(f.json(&["--since", "2100-01-01"]).lines.is_empty());
    assert!(f.json(&["--until", "2026-01-01T00:00:00Z"]).lines.is_empty());
    // From a moment inside the history: exactly the events stored at or after it.
    let middle = *stored
        .iter()
        .find(|s| **s > stored[0])
        .expect("the streams were written over more than one millisecond");
    let since = all.lines[stored.iter().position(|s| *s == middle).unwrap()]["stored_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let later = f.json(&["--since", &since]);
    assert_eq!(later.lines.len(), stored.iter().filter(|s| **s >= middle).count());
    assert!(later.lines.len() < all.lines.len());
    assert!(later.lines.iter().all(|l| stored_ms(l) >= middle));
}

#[test]
fn replay_table_is_aligned_and_carries_no_names() {
    let f = Fixture::new();
    let out = f.run(&["--format", "table", "--agency", "school-oakwood"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let n = f.expected(|e| e.agency_id == "school-oakwood").len();
    assert_eq!(lines.len(), n + 1, "a header and one line per event");
    let header = lines[0];
    for column in [
        "POSITION",
        "STORED AT",
        "AGENCY",
        "CASE",
        "OCCURRED AT",
        "CAT",
        "EVENT",
        "CHILD",
    ] {
        let at = header.find(column).unwrap();
        if column != "POSITION" {
            assert!(
                lines[1..].iter().all(|l| l.as_bytes()[at - 1] == b' '),
                "column {column} starts at the same place on every line:\n{text}"
            );
        }
    }
    assert!(lines[1].starts_with("EVENTS_SCHOOL_OAKWOOD:1 "));
    for child in &f.scenario.children {
        assert!(!text.contains(&child.family_name) && !text.contains(child.nhs.as_str()));
    }
}

#[test]
fn replay_fails_usefully() {
    let f = Fixture::new();
    let out = f.run(&["--agency", "police-nowhere"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown agency \"police-nowhere\"") && stderr.contains("police-sy"),
        "{stderr}"
    );

    let out = f.run(&["--since", "last tuesday"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since: \"last tuesday\" is not a time"));

    let out = f.run(&["--child", "9876544321"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a valid NHS number"));

    // Wrong password: refused, not a hang.
    let url = f.nats.url();
    let out = halcyon(&["replay", "--nats-url", &url, "--nats-password", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to NATS"));

    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = halcyon(&["replay", "--nats-url", &format!("nats://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to NATS at nats://127.0.0.1:"),
        "{stderr}"
    );
}
