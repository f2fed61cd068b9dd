//! Issue 7: `halcyon audit chronology --format html` on a scenario produces one file with no external
//! references that opens in headless Chromium without script errors and shows one lane per agency; CSV and
//! text carry the same facts. Runs the real binary against a real nats-server with the deploy users, and
//! loads the page in the pinned headless Chromium (deploy/install-chromium.sh) over the DevTools protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use halcyon_grpc::pb;
use halcyon_schema::{ChildId, NhsNumber, Registry};
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};
use prost::Message as _;

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

fn ok(args: &[&str]) -> String {
    let out = halcyon(args);
    assert!(
        out.status.success(),
        "halcyon {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn registry() -> Registry {
    Registry::from_toml(&std::fs::read_to_string(workspace_root().join("deploy/agencies.toml")).unwrap())
        .unwrap()
}

fn access(
    record_id: &str,
    child: ChildId,
    agency: &str,
    outcome: pb::AccessOutcome,
    break_glass: bool,
) -> pb::AccessRecord {
    pb::AccessRecord {
        record_id: record_id.into(),
        at: Some(halcyon_schema::convert::timestamp_from_millis(1_780_000_000_000)),
        agency_id: agency.into(),
        role: "practitioner".into(),
        principal_id: format!("{agency}-user"),
        purpose: pb::Purpose::Safeguarding as i32,
        method: "GetChildView".into(),
        child_id: child.to_string(),
        outcome: outcome as i32,
        facts_disclosed: u32::from(outcome == pb::AccessOutcome::Permitted) * 3,
        facts_withheld: 2,
        break_glass_reason: if break_glass {
            "unconscious in A&E".into()
        } else {
            String::new()
        },
        break_glass_relied_on: break_glass,
        node_id: "test-node".into(),
        ..Default::default()
    }
}

/// Writes access records to the AUDIT stream as a node does (one message holding several records).
async fn write_accesses(url: &str, records: Vec<pb::AccessRecord>) {
    let client = halcyon_bus::connect(
        url,
        &halcyon_bus::Credentials::user("halcyon-node", "node-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    js.publish(
        "halcyon.audit.test-node",
        pb::AccessRecords { records }.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[test]
fn chronology_html_is_self_contained_and_loads_in_headless_chromium_and_agrees_with_csv_and_text() {
    let nats = NatsServer::start_with_auth();
    let url = nats.url();
    ok(&[
        "streams",
        "apply",
        "--nats-url",
        &url,
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
    ]);

    let config = ScenarioConfig {
        seed: 7,
        children: 2,
        ..Default::default()
    };
    let scenario = Scenario::generate(&config, &ScenarioAgencies::deploy());
    ok(&[
        "publish",
        "--nats-url",
        &url,
        "--scenario-children",
        "2",
        "--seed",
        "7",
        "--credentials",
        CREDENTIALS,
        "--quiet",
    ]);
    let nhs: NhsNumber = scenario.children[0].nhs.clone();
    let child = ChildId::from_nhs(&nhs);
    let other = ChildId::from_nhs(&scenario.children[1].nhs);
    let expected: BTreeSet<String> = scenario
        .envelopes
        .iter()
        .filter(|e| e.child.as_ref().unwrap().nhs_number == nhs.as_str())
        .map(|e| e.event_id.clone())
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(write_accesses(
        &url,
        vec![
            access(
                "rec-police",
                child,
                "police-sy",
                pb::AccessOutcome::Permitted,
                false,
            ),
            access(
                "rec-ed-break-glass",
                child,
                "health-rgh-ed",
                pb::AccessOutcome::Permitted,
                true,
            ),
            access(
                "rec-vol-denied",
                child,
                "vol-safe-haven",
                pb::AccessOutcome::Denied,
                false,
            ),
            access(
                "rec-other-child",
                other,
                "police-sy",
                pb::AccessOutcome::Permitted,
                false,
            ),
        ],
    ));

    let dir = tempfile::tempdir().unwrap();
    let out_path = |name: &str| dir.path().join(name);
    let run = |format: &str, file: &str| {
        let path = out_path(file);
        ok(&[
            "audit",
            "chronology",
            "--nats-url",
            &url,
            "--credentials",
            CREDENTIALS,
            "--child",
            nhs.as_str(),
            "--format",
            format,
            "--out",
            path.to_str().unwrap(),
        ]);
        std::fs::read_to_string(path).unwrap()
    };
    let text = run("text", "chronology.txt");
    let csv = run("csv", "chronology.csv");
    // Issue 19: the same chronology from a review store (read models of the whole history, brought up to
    // date first), which reads the child's facts and accesses rather than every stream and the whole log;
    // asked twice, the second time only catching up.
    let store = out_path("review-store");
    for round in 0..2 {
        let path = out_path(&format!("held-{round}.csv"));
        ok(&[
            "audit",
            "chronology",
            "--nats-url",
            &url,
            "--credentials",
            CREDENTIALS,
            "--child",
            nhs.as_str(),
            "--format",
            "csv",
            "--review-store",
            store.to_str().unwrap(),
            "--out",
            path.to_str().unwrap(),
        ]);
        // Each chronology records its own read (issue 20): those rows differ between runs, nothing else.
        let held = std::fs::read_to_string(path).unwrap();
        assert!(held.contains("\"halcyon audit chronology permitted"), "{held}");
        assert_eq!(
            without_operator_reads(&held),
            without_operator_reads(&csv),
            "round {round}: the review store's chronology is the streams' one"
        );
    }
    std::fs::create_dir(out_path("html")).unwrap();
    let html = run("html", "html/chronology.html");

    // CSV and text carry the same facts, in the same order, and they are the child's scenario events.
    let csv_facts: Vec<String> = csv
        .lines()
        .filter(|l| l.starts_with("fact,"))
        .map(|l| l.split(',').nth(9).unwrap().to_owned())
        .collect();
    let text_facts: Vec<String> = text
        .lines()
        .filter_map(|l| l.split("  event ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        csv_facts, text_facts,
        "CSV and text list the same facts in the same order"
    );
    assert_eq!(
        csv_facts.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the chronology holds exactly the child's events"
    );
    assert_eq!(csv_facts.len(), expected.len());
    let csv_header = csv.lines().next().unwrap();
    for agency in registry().iter() {
        assert!(
            csv_header.contains(&format!("visible_to:{}", agency.id)),
            "{csv_header}"
        );
    }
    // The originating agency sees its own facts from when they occurred; the CSV says so for every fact.
    let columns: Vec<&str> = csv_header.split(',').collect();
    for line in csv.lines().filter(|l| l.starts_with("fact,")) {
        let cells: Vec<&str> = line.split(',').collect();
        let own = columns
            .iter()
            .position(|c| *c == format!("visible_to:{}", cells[2]))
            .unwrap();
        assert!(
            cells[own].starts_with(&format!("from {}", cells[1])),
            "own agency sees its fact from when it occurred: {line}"
        );
    }
    // Accesses: the child's three, not the other child's, with the break-glass flagged.
    for record in ["rec-police", "rec-ed-break-glass", "rec-vol-denied"] {
        assert!(
            csv.contains(record) && text.contains(record) && html.contains(record),
            "{record}"
        );
    }
    for output in [&csv, &text, &html] {
        assert!(!output.contains("rec-other-child"));
    }
    assert!(text.contains("BREAK-GLASS"), "{text}");

    // One self-contained file: nothing else written, no external references.
    let written: Vec<_> = std::fs::read_dir(out_path("html")).unwrap().collect();
    assert_eq!(written.len(), 1, "the HTML chronology is one file");
    for external in [
        "http://", "https://", "src=", "<link", "@import", "url(", "<iframe", "<object",
    ] {
        assert!(
            !html.contains(external),
            "the page refers to something outside it: {external}"
        );
    }
    assert!(html.contains("@media print"), "a print stylesheet");
    // Names are display data: never in the chronology.
    assert!(!html.contains(&scenario.children[0].family_name));

    // Headless Chromium: loads the page, no script error, the inline script ran, one lane per agency,
    // the same facts as the CSV, and nothing fetched.
    let page = out_path("html/chronology.html");
    let browser = Browser::start();
    let load = browser.load(&page);
    assert!(
        load.errors.is_empty(),
        "script errors in the page: {:?}",
        load.errors
    );
    assert_eq!(browser.eval("document.body.getAttribute('data-script')"), "ready");
    let lanes: Vec<String> = serde_json::from_str(&browser.eval(
        "JSON.stringify([...document.querySelectorAll('svg [data-lane]')].map(l => l.getAttribute('data-lane')))",
    ))
    .unwrap();
    let mut agencies: Vec<String> = registry().iter().map(|a| a.id.to_string()).collect();
    // Then one for operators' reads through the CLI: each chronology records its own (issue 20).
    agencies.push("operator-cli".into());
    assert_eq!(
        lanes, agencies,
        "one lane per registered agency, in id order, then the operators'"
    );
    let rows: Vec<String> = serde_json::from_str(&browser.eval(
        "JSON.stringify([...document.querySelectorAll('tr[data-event-id]')].map(r => r.getAttribute('data-event-id')))",
    ))
    .unwrap();
    assert_eq!(rows, csv_facts, "the page's facts are the CSV's");
    let markers = browser.eval("String(document.querySelectorAll('svg circle.fact').length)");
    assert_eq!(markers, csv_facts.len().to_string());
    let accesses = browser.eval("String(document.querySelectorAll('svg path.access').length)");
    // The three agencies' accesses, and the five chronologies this test asked for before and with this page
    // (text, CSV, twice from the review store, HTML): each records its read first (issue 20).
    assert_eq!(accesses, (3 + 5).to_string());
    // Deadline breaches: a marker on the timeline for each breach row of the CSV.
    let breach_rows = csv.lines().filter(|l| l.starts_with("breach,")).count();
    let breach_markers = browser.eval("String(document.querySelectorAll('svg path.breach').length)");
    eprintln!("{breach_rows} deadline breach(es) in the chronology");
    assert_eq!(breach_markers, breach_rows.to_string());
    let fetched = browser.eval("String(performance.getEntriesByType('resource').length)");
    assert_eq!(fetched, "0", "the page fetched nothing");
    // Clicking a fact marks it in the timeline and the table.
    browser.eval("document.querySelector('circle.fact[data-fact=\"2\"]').dispatchEvent(new MouseEvent('click', {bubbles: true})); ''");
    assert_eq!(
        browser.eval("String(document.querySelectorAll('.picked').length >= 2 && document.getElementById('fact-2').classList.contains('picked'))"),
        "true"
    );

    // The check can fail: a page whose script throws is reported.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<!doctype html><html><body><script>document.body.dataset.script = 'ready'; null.boom();</script></body></html>",
    )
    .unwrap();
    let load = browser.load(&broken);
    assert!(
        load.errors
            .iter()
            .any(|e| e.contains("boom") || e.contains("null")),
        "a thrown error is caught: {:?}",
        load.errors
    );
}

/// The child of the policy-history chronology.
const HISTORY_NHS: &str = "9434765919";

/// `deploy/policy/england.toml` under another version (its own `version` line replaced).
fn england_as(version: &str) -> String {
    let shipped = std::fs::read_to_string(workspace_root().join("deploy/policy/england.toml")).unwrap();
    let mut replaced = false;
    let lines: Vec<String> = shipped
        .lines()
        .map(|l| {
            if !replaced && l.starts_with("version = \"") {
                replaced = true;
                format!("version = \"{version}\"")
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(replaced, "england.toml has a version line");
    lines.join("\n") + "\n"
}

/// `england_as(version)` where the school column of D10 (missing episodes) is `never` instead of a query
/// for an enrolled pupil.
fn england_without_school_d10(version: &str) -> String {
    let granted = "category = \"D10\"\nrecipient = \"school\"\ntable = \"Q (enrolled)\"\nmode = \"query\"\n\
                   relationship = [\"enrolled-pupil\"]\nbasis = \"public-task\"\nprojection = \"full\"\n";
    let policy = england_as(version);
    assert_eq!(
        policy.matches(granted).count(),
        1,
        "the school's D10 cell, as written here"
    );
    policy.replacen(
        granted,
        "category = \"D10\"\nrecipient = \"school\"\ntable = \"–\"\nmode = \"never\"\n",
        1,
    )
}

/// A history file in `dir` of two policy files: `first` in force from 2026-01-01, `second` from
/// `second_from`.
fn two_policy_history(dir: &Path, first: (&str, &str), second: (&str, &str), second_from: &str) -> PathBuf {
    let mut history = String::new();
    for ((version, policy), from) in [(first, "2026-01-01T00:00:00Z"), (second, second_from)] {
        std::fs::write(dir.join(format!("{version}.toml")), policy).unwrap();
        history.push_str(&format!(
            "[[policy]]\nfile = \"{version}.toml\"\nversion = \"{version}\"\nin_force_from = \"{from}\"\n\n"
        ));
    }
    let path = dir.join("history.toml");
    std::fs::write(&path, history).unwrap();
    path
}

/// Publishes each envelope as its own agency.
async fn publish_as_agencies(url: &str, envelopes: &[pb::Envelope]) {
    for e in envelopes {
        let client = halcyon_bus::connect(
            url,
            &halcyon_bus::Credentials::agency(&e.agency_id, &format!("{}-dev-secret", e.agency_id)),
            "test",
        )
        .await
        .unwrap();
        let publisher = halcyon_bus::Publisher::new(
            client,
            halcyon_bus::PublisherConfig {
                agency: Some(e.agency_id.parse().unwrap()),
                ..Default::default()
            },
        );
        publisher.publish(e, None).await.expect("published");
    }
}

/// Issue 22: the chronology decides each moment with the policy in force then (the policy history, as
/// as-of does), not with one file. Two versions of the shipped policy: under `chronology-grants` a school
/// sees the missing episodes (D10) of an enrolled pupil; under `chronology-never` (in force from 4 March)
/// it sees none. The school enrols the child on 2 March; police report the child missing on 3 March and
/// again on 5 March. Written by hand from the two files: the school could see the first report from when it
/// occurred until the second policy came into force, and never the second; police see both their own; each
/// entry names the version in force when it occurred, and the chronology marks the boundary (text, CSV,
/// HTML). The same facts with the history the other way round: the school could see the first report only
/// from when the granting policy came into force (on it), and the second from when it occurred. Forcing
/// one file with `--policy` decides every moment with it, and marks no boundary.
#[test]
fn the_chronology_decides_each_moment_with_the_policy_in_force_then() {
    use halcyon_grpc::pb::event::Kind;

    let nats = NatsServer::start_with_auth();
    let url = nats.url();
    ok(&[
        "streams",
        "apply",
        "--nats-url",
        &url,
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
    ]);
    let ms = |t: &str| {
        halcyon_schema::convert::timestamp_millis(&halcyon_schema::convert::parse_timestamp(t).unwrap())
    };
    let enrolled = halcyon_testkit::envelope(
        "school-oakwood",
        "teacher-1",
        HISTORY_NHS,
        ms("2026-03-02T09:00:00Z"),
        Kind::InvolvementStarted(pb::InvolvementStarted {
            involved_agency_id: "school-oakwood".into(),
            kind: pb::InvolvementKind::EnrolledPupil as i32,
        }),
    );
    let missing = |at: &str| {
        halcyon_testkit::envelope(
            "police-sy",
            "pc-1",
            HISTORY_NHS,
            ms(at),
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
                circumstances: "did not come home".into(),
            }),
        )
    };
    let first = missing("2026-03-03T10:00:00Z");
    let second = missing("2026-03-05T10:00:00Z");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(publish_as_agencies(
        &url,
        &[enrolled.clone(), first.clone(), second.clone()],
    ));

    let dir = tempfile::tempdir().unwrap();
    let grants = england_as("chronology-grants");
    let never = england_without_school_d10("chronology-never");
    let boundary = "2026-03-04T00:00:00Z";
    let chronology = |policy_args: &[&str], format: &str, name: &str| {
        let path = dir.path().join(name);
        let mut args = vec![
            "audit",
            "chronology",
            "--nats-url",
            &url,
            "--credentials",
            CREDENTIALS,
            "--child",
            HISTORY_NHS,
            "--format",
            format,
            "--out",
            path.to_str().unwrap(),
        ];
        args.extend(policy_args);
        ok(&args);
        std::fs::read_to_string(path).unwrap()
    };
    // The visibility cells of a fact's CSV row, by agency.
    let cells = |csv: &str, event_id: &str| -> BTreeMap<String, String> {
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.starts_with("fact,") && l.contains(event_id))
            .unwrap_or_else(|| panic!("a row of {event_id}: {csv}"))
            .split(',')
            .collect();
        header
            .iter()
            .zip(row)
            .filter_map(|(h, cell)| Some((h.strip_prefix("visible_to:")?.to_owned(), cell.to_owned())))
            .collect()
    };

    // The first policy grants, the second does not.
    let sub = tempfile::tempdir().unwrap();
    let history = two_policy_history(
        sub.path(),
        ("chronology-grants", &grants),
        ("chronology-never", &never),
        boundary,
    );
    let history_args = ["--policy-history", history.to_str().unwrap()];
    let csv = chronology(&history_args, "csv", "grants-then-never.csv");
    eprintln!("{csv}");
    let row = cells(&csv, &first.event_id);
    assert_eq!(
        row["school-oakwood"], "from 2026-03-03T10:00:00Z until 2026-03-04T00:00:00Z",
        "the school saw the first report under chronology-grants, until chronology-never came into force"
    );
    assert_eq!(row["police-sy"], "from 2026-03-03T10:00:00Z");
    let row = cells(&csv, &second.event_id);
    assert_eq!(
        row["school-oakwood"], "",
        "under chronology-never the school never saw the second report"
    );
    assert_eq!(row["police-sy"], "from 2026-03-05T10:00:00Z");
    let row = cells(&csv, &enrolled.event_id);
    assert_eq!(
        row["school-oakwood"], "from 2026-03-02T09:00:00Z",
        "its own record throughout, across the boundary"
    );
    let policy_rows: Vec<&str> = csv.lines().filter(|l| l.starts_with("policy,")).collect();
    assert_eq!(policy_rows.len(), 1, "{csv}");
    assert!(
        policy_rows[0].starts_with(&format!("policy,{boundary},"))
            && policy_rows[0].contains("POLICY chronology-never (chronology-never.toml) in force"),
        "{}",
        policy_rows[0]
    );

    let text = chronology(&history_args, "text", "grants-then-never.txt");
    eprintln!("{text}");
    assert!(
        text.contains(
            "policies chronology-grants from 2026-01-01T00:00:00Z, chronology-never from 2026-03-04T00:00:00Z"
        ),
        "the subtitle names both versions: {text}"
    );
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in the text: {text}"))
    };
    let boundary_line = at(&format!(
        "   =  {boundary}  (sharing policy)   POLICY chronology-never (chronology-never.toml) in force"
    ));
    assert!(
        at(&first.event_id) < boundary_line && boundary_line < at(&second.event_id),
        "the boundary is marked between the two reports"
    );
    assert!(
        text.contains("school-oakwood from 2026-03-03T10:00:00Z until 2026-03-04T00:00:00Z"),
        "{text}"
    );

    let html = chronology(&history_args, "html", "grants-then-never.html");
    let row_at = |needle: &str| {
        html.find(needle)
            .unwrap_or_else(|| panic!("{needle} in the page"))
    };
    let policy_row = row_at("<tr class=\"policy\" data-policy=\"chronology-never\">");
    assert!(
        row_at(&format!("data-event-id=\"{}\"", first.event_id)) < policy_row
            && policy_row < row_at(&format!("data-event-id=\"{}\"", second.event_id)),
        "the page's boundary row is between the two reports"
    );
    assert!(
        html.contains("<g data-policy=\"chronology-never\">"),
        "a boundary on the timeline"
    );
    assert!(
        !html.contains("class=\"policy\" data-policy=\"chronology-grants\""),
        "no boundary where nothing changed"
    );
    // Each fact's row names the policy in force when it occurred.
    for (event_id, version) in [
        (&enrolled.event_id, "chronology-grants"),
        (&first.event_id, "chronology-grants"),
        (&second.event_id, "chronology-never"),
    ] {
        assert!(
            html.contains(&format!("data-event-id=\"{event_id}\" data-policy=\"{version}\"")),
            "{event_id} under {version}"
        );
    }

    // The history the other way round: the first policy does not grant, the second does.
    let sub = tempfile::tempdir().unwrap();
    let history = two_policy_history(
        sub.path(),
        ("chronology-never", &never),
        ("chronology-grants", &grants),
        boundary,
    );
    let csv = chronology(
        &["--policy-history", history.to_str().unwrap()],
        "csv",
        "never-then-grants.csv",
    );
    eprintln!("{csv}");
    assert_eq!(
        cells(&csv, &first.event_id)["school-oakwood"],
        "from 2026-03-04T00:00:00Z (on policy chronology-grants)",
        "the school could see the first report from when chronology-grants came into force"
    );
    assert_eq!(
        cells(&csv, &second.event_id)["school-oakwood"],
        "from 2026-03-05T10:00:00Z"
    );

    // One file forced: every moment decided with it, no boundary.
    let forced = dir.path().join("forced.toml");
    std::fs::write(&forced, &grants).unwrap();
    let csv = chronology(&["--policy", forced.to_str().unwrap()], "csv", "forced.csv");
    assert_eq!(
        cells(&csv, &first.event_id)["school-oakwood"],
        "from 2026-03-03T10:00:00Z"
    );
    assert_eq!(
        cells(&csv, &second.event_id)["school-oakwood"],
        "from 2026-03-05T10:00:00Z"
    );
    assert!(!csv.lines().any(|l| l.starts_with("policy,")), "{csv}");
    let text = chronology(&["--policy", forced.to_str().unwrap()], "text", "forced.txt");
    assert!(
        text.contains("; policy chronology-grants; everything the streams held"),
        "{text}"
    );
    assert!(!text.contains("(sharing policy)"), "{text}");
}

#[test]
fn chronology_of_an_unknown_child_fails_and_says_so() {
    let nats = NatsServer::start_with_auth();
    let url = nats.url();
    ok(&[
        "streams",
        "apply",
        "--nats-url",
        &url,
        "--nats-user",
        "operator",
        "--nats-password",
        "operator-dev-secret",
    ]);
    let out = halcyon(&[
        "audit",
        "chronology",
        "--nats-url",
        &url,
        "--credentials",
        CREDENTIALS,
        "--child",
        "9434765919",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no facts about that child"));
    let out = halcyon(&[
        "audit",
        "chronology",
        "--nats-url",
        &url,
        "--credentials",
        CREDENTIALS,
        "--child",
        "9876544321",
    ]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "an invalid NHS number is a usage error"
    );
}

/// The pinned headless Chromium (`deploy/install-chromium.sh`, run here if it is missing).
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("HALCYON_CHROMIUM") {
        return PathBuf::from(p);
    }
    let launcher = workspace_root().join(".tools/bin/halcyon-chromium");
    let status = Command::new("bash")
        .arg(workspace_root().join("deploy/install-chromium.sh"))
        .stdout(Stdio::null())
        .status()
        .expect("run deploy/install-chromium.sh");
    assert!(status.success(), "deploy/install-chromium.sh failed");
    launcher
}

/// A headless Chromium driven over the DevTools protocol (a WebSocket on a loopback port).
struct Browser {
    child: Child,
    page: Mutex<WebSocket>,
    _profile: tempfile::TempDir,
}

/// What loading a page produced.
struct Loaded {
    /// Uncaught exceptions, console errors and error log entries, as text.
    errors: Vec<String>,
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let list = http_get(port, "/json/list");
        let targets: serde_json::Value = serde_json::from_str(&list).unwrap();
        let ws_url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let path = ws_url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
        let mut page = WebSocket::connect(port, &path);
        for method in ["Runtime.enable", "Page.enable", "Log.enable"] {
            page.call(method, serde_json::json!({}));
        }
        Self {
            child,
            page: Mutex::new(page),
            _profile: profile,
        }
    }

    /// Navigates to a file and waits for its load event; collects what went wrong meanwhile.
    fn load(&self, file: &Path) -> Loaded {
        let mut page = self.page.lock().unwrap();
        page.events.clear();
        let url = format!("file://{}", file.display());
        let answer = page.call("Page.navigate", serde_json::json!({ "url": url }));
        assert!(answer.get("errorText").is_none(), "navigation failed: {answer}");
        page.wait_for_event("Page.loadEventFired", Duration::from_secs(30));
        // Let anything the load event started run, then read what happened.
        page.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": "new Promise(r => setTimeout(r, 100))", "awaitPromise": true }),
        );
        let mut errors = Vec::new();
        for e in page.events.drain(..) {
            match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => errors.push(e["params"]["exceptionDetails"].to_string()),
                Some("Runtime.consoleAPICalled") if e["params"]["type"] == "error" => {
                    errors.push(e["params"]["args"].to_string())
                }
                Some("Log.entryAdded") if e["params"]["entry"]["level"] == "error" => {
                    errors.push(e["params"]["entry"]["text"].to_string())
                }
                _ => {}
            }
        }
        Loaded { errors }
    }

    /// Evaluates an expression in the page; its value as a string.
    fn eval(&self, expression: &str) -> String {
        let answer = self.page.lock().unwrap().call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            answer.get("exceptionDetails").is_none(),
            "{expression} threw: {answer}"
        );
        match &answer["result"]["value"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    // Chromium's DevTools server answers HTTP/1.1 only; the body is read by its length.
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = conn.try_clone().unwrap();
    write!(
        writer,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(conn);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// Just enough of a WebSocket client (RFC 6455) for the DevTools protocol: text frames, client-masked.
struct WebSocket {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
    /// Events received while waiting for answers.
    events: Vec<serde_json::Value>,
}

impl WebSocket {
    fn connect(port: u16, path: &str) -> Self {
        let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut writer = conn.try_clone().unwrap();
        write!(
            writer,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(conn);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 101 "), "WebSocket upgrade refused: {status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Self {
            reader,
            writer,
            next_id: 0,
            events: Vec::new(),
        }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.writer.write_all(&frame).unwrap();
    }

    /// The next whole text message.
    fn receive(&mut self) -> serde_json::Value {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.reader.read_exact(&mut head).unwrap();
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.reader.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.reader.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.reader.read_exact(&mut payload).unwrap();
            assert_ne!(opcode, 0x8, "chromium closed the DevTools connection");
            if opcode == 0x9 || opcode == 0xA {
                continue; // ping / pong
            }
            message.extend_from_slice(&payload);
            if fin {
                return serde_json::from_slice(&message).unwrap();
            }
        }
    }

    /// Sends a command and waits for its answer, keeping the events that arrive meanwhile.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&serde_json::json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let message = self.receive();
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            self.events.push(message);
        }
    }

    fn wait_for_event(&mut self, method: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.events.iter().any(|e| e["method"] == method) {
            return;
        }
        loop {
            assert!(Instant::now() < deadline, "no {method} within {timeout:?}");
            let message = self.receive();
            let done = message["method"] == method;
            self.events.push(message);
            if done {
                return;
            }
        }
    }
}

/// A chronology's CSV without the rows of operators' reads through the CLI.
fn without_operator_reads(csv: &str) -> String {
    csv.lines()
        .filter(|l| !l.contains(",\"halcyon "))
        .collect::<Vec<_>>()
        .join("\n")
}
