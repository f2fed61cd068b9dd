//! Issue 8 (history: "a reviewer can see when a deadline was first breached"): `halcyon audit as-of` and
//! `halcyon audit chronology`, run as the real binary against a real nats-server with the deploy users.
//!
//! A referral on a Monday with no bank holiday that week, decided on the Thursday (two working days after
//! T01 fell due at the end of the Tuesday). The week is in the future, so the three moments asked about
//! hold both events (the server stored them before the moments) while the decision had not yet occurred
//! at the first two: as of Tuesday noon T01 is open; as of Wednesday noon it is breached — due at the end
//! of Tuesday, breached since Wednesday 00:00, one working day late and still open; as of Friday noon it
//! was met late, two working days late. A school with no relationship to the child sees no deadline; the
//! chronology marks the breach on the time axis (text, CSV, HTML).

use std::collections::BTreeMap;

use halcyon_bus::{Credentials, Publisher, PublisherConfig, connect};
use halcyon_grpc::pb::{self, event::Kind};
use halcyon_schema::convert::{format_timestamp, timestamp_from_millis};
use halcyon_testkit::NatsServer;
use halcyon_timescales::Calendar;
use halcyon_timescales::calendar::{add_days, date_of_ms, start_of_day_ms};
use serde_json::Value;

use crate::common;
use common::halcyon_ok;

const CSC: &str = "csc-rotherham";
const NHS: &str = "9434765919";
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn now_ms() -> i64 {
    halcyon_schema::clock::now_ms()
}

fn at_text(ms: i64) -> String {
    format_timestamp(&timestamp_from_millis(ms))
}

/// 00:00 UTC of the first Monday at least a week from now whose week (Monday to Friday) has no bank
/// holiday, so that the working-day arithmetic below is plain.
fn plain_monday() -> i64 {
    let calendar = Calendar::england_and_wales();
    let mut day = date_of_ms(now_ms() + 7 * DAY_MS);
    loop {
        let week_is_plain = (0..5).all(|d| calendar.is_working_day(add_days(day, d)));
        if day.weekday().number_from_monday() == 1 && week_is_plain {
            assert!(calendar.covers(add_days(day, 6)), "the calendar covers {day}");
            return start_of_day_ms(day);
        }
        day = add_days(day, 1);
    }
}

/// These tests date their events a week or two ahead, so that every moment they ask about comes after
/// the server stored the events; the deployment's stated tolerance for future-dated events is set to match
/// (`--future-tolerance-secs`, and the publisher's), or they would be quarantined.
const FUTURE_TOLERANCE_SECS: &str = "2592000";
const FUTURE_TOLERANCE_MS: i64 = 30 * DAY_MS;

fn envelope(at_ms: i64, kind: Kind) -> pb::Envelope {
    halcyon_testkit::envelope(CSC, "sw-1", NHS, at_ms, kind)
}

fn as_of(nats: &NatsServer, agency: &str, at_ms: i64, json: bool) -> String {
    let at = at_text(at_ms);
    let mut args = vec!["audit", "as-of", "--agency", agency, "--nhs", NHS, "--at", &at];
    if json {
        args.push("--json");
    }
    args.extend(["--future-tolerance-secs", FUTURE_TOLERANCE_SECS]);
    let ops = common::as_operator(nats);
    args.extend(ops.iter().map(String::as_str));
    halcyon_ok(&args)
}

/// The `deadline` lines of an as-of's JSON output, by rule.
fn deadlines(stdout: &str) -> BTreeMap<String, Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .filter(|l| l["kind"] == "deadline")
        .map(|l| (l["rule_id"].as_str().unwrap().to_owned(), l))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_shows_a_deadline_open_then_breached_then_met_late_and_the_chronology_marks_the_breach() {
    let nats = NatsServer::start_with_auth();
    let mut apply = vec!["streams", "apply"];
    let ops = common::as_operator(&nats);
    apply.extend(ops.iter().map(String::as_str));
    halcyon_ok(&apply);

    let monday = plain_monday();
    let referral = envelope(
        monday + 10 * HOUR_MS,
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: Some(pb::ReferrerDetails {
                source_code: "2A".into(),
                ..Default::default()
            }),
            summary: "school reports bruising".into(),
        }),
    );
    let decision = envelope(
        monday + 3 * DAY_MS + 10 * HOUR_MS,
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
            future_tolerance_ms: FUTURE_TOLERANCE_MS,
            ..Default::default()
        },
    );
    for e in [&referral, &decision] {
        publisher.publish(e, None).await.expect("published");
    }

    let tuesday_noon = monday + DAY_MS + 12 * HOUR_MS;
    let wednesday_noon = monday + 2 * DAY_MS + 12 * HOUR_MS;
    let friday_noon = monday + 4 * DAY_MS + 12 * HOUR_MS;
    let due = at_text(monday + 2 * DAY_MS - 1);
    let first_breached = at_text(monday + 2 * DAY_MS);

    // Tuesday noon: T01 open, due at the end of Tuesday, nothing breached yet.
    let tuesday = deadlines(&as_of(&nats, CSC, tuesday_noon, true));
    let t01 = &tuesday["T01"];
    eprintln!("Tuesday: {t01}");
    assert_eq!(t01["state"], "open");
    assert_eq!(t01["due_at"], due.as_str());
    assert_eq!(t01["first_breached_at"], Value::Null);
    assert_eq!(t01["started_by"]["event_id"], referral.event_id.as_str());
    assert_eq!(t01["ended_by"], Value::Null);
    for rule in ["T02", "T03"] {
        assert_eq!(tuesday[rule]["state"], "open", "{rule}");
    }

    // Wednesday noon: breached since the first millisecond after the due time, one working day late.
    let wednesday = deadlines(&as_of(&nats, CSC, wednesday_noon, true));
    let t01 = &wednesday["T01"];
    eprintln!("Wednesday: {t01}");
    assert_eq!(t01["state"], "breached");
    assert_eq!(t01["due_at"], due.as_str());
    assert_eq!(t01["first_breached_at"], first_breached.as_str());
    assert_eq!(t01["margin_units"], 1);
    assert_eq!(t01["unit"], "working-days");
    assert_eq!(t01["late"], "1 working day");
    assert_eq!(t01["ended_by"], Value::Null);

    // Friday noon: met late by the Thursday decision, two working days late; still breached from Wednesday.
    let friday = deadlines(&as_of(&nats, CSC, friday_noon, true));
    let t01 = &friday["T01"];
    eprintln!("Friday: {t01}");
    assert_eq!(t01["state"], "met late");
    assert_eq!(t01["first_breached_at"], first_breached.as_str());
    assert_eq!(t01["margin_units"], 2);
    assert_eq!(t01["late"], "2 working days");
    assert_eq!(t01["ended_by"]["event_id"], decision.event_id.as_str());
    assert_eq!(friday["T02"]["state"], "breached", "never acknowledged");
    assert_eq!(friday["T03"]["state"], "open", "45 working days");

    // The same for people.
    let text = as_of(&nats, CSC, wednesday_noon, false);
    eprintln!("{text}");
    let line = text
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("T01 referral decision (1 working day)")
        })
        .unwrap_or_else(|| panic!("a T01 line: {text}"));
    // Due Tuesday, asked about on Wednesday: one working day overdue, and still open.
    assert!(
        line.contains(&format!(
            "due {due}: BREACHED since {first_breached}, overdue by 1 working day"
        )),
        "{line}"
    );

    // A school with no relationship to the child may know of no deadline.
    let school = as_of(&nats, "school-oakwood", friday_noon, true);
    assert!(deadlines(&school).is_empty(), "{school}");
    let school = as_of(&nats, "school-oakwood", friday_noon, false);
    assert!(school.contains("deadlines as they stood then (0;"), "{school}");
    assert!(!school.contains("T01"), "{school}");

    // The chronology as of Friday noon marks the breach when it first happened: text, CSV, HTML.
    let dir = tempfile::tempdir().unwrap();
    let chronology = |format: &str| {
        let path = dir.path().join(format!("chronology.{format}"));
        let friday = at_text(friday_noon);
        let mut args = vec![
            "audit",
            "chronology",
            "--child",
            NHS,
            "--as-of",
            &friday,
            "--format",
            format,
            "--out",
            path.to_str().unwrap(),
            "--quiet",
            "--future-tolerance-secs",
            FUTURE_TOLERANCE_SECS,
        ];
        args.extend(ops.iter().map(String::as_str));
        halcyon_ok(&args);
        std::fs::read_to_string(path).unwrap()
    };
    let text = chronology("text");
    eprintln!("{text}");
    let breach = text
        .lines()
        .find(|l| l.contains("BREACH T01"))
        .unwrap_or_else(|| panic!("a T01 breach line: {text}"));
    assert!(breach.contains(&first_breached), "{breach}");
    assert!(breach.contains(&format!("due {due}")), "{breach}");
    // Due Tuesday, decided Thursday: Wednesday and Thursday late.
    assert!(
        breach.contains("; met 2 working days late, by ReferralDecisionRecorded"),
        "{breach}"
    );
    // On the time axis: after the referral, before the decision.
    let position = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle}: {text}"));
    assert!(position(&referral.event_id) < position("BREACH T01"));
    assert!(position("BREACH T01") < position(&decision.event_id));

    let csv = chronology("csv");
    let row = csv
        .lines()
        .find(|l| l.starts_with("breach,") && l.contains("T01"))
        .unwrap_or_else(|| panic!("a T01 breach row: {csv}"));
    let cells: Vec<&str> = row.split(',').collect();
    assert_eq!(cells[1], first_breached, "{row}");
    assert_eq!(cells[2], CSC, "{row}");
    assert!(row.contains(&format!("T01/{}", referral.event_id)), "{row}");

    let html = chronology("html");
    assert!(
        html.contains(&format!("data-breach=\"T01/{}\"", referral.event_id)),
        "a breach marker on the timeline"
    );
    for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
        assert!(!html.contains(external), "{external}");
    }
}

/// Publishes each envelope as its own agency, in order.
async fn publish_as_agencies(nats: &NatsServer, envelopes: &[&pb::Envelope]) {
    for e in envelopes {
        let agency = e.agency_id.clone();
        let client = connect(
            &nats.url(),
            &Credentials::agency(&agency, &format!("{agency}-dev-secret")),
            "test",
        )
        .await
        .unwrap();
        let publisher = Publisher::new(
            client,
            PublisherConfig {
                agency: Some(agency.parse().unwrap()),
                future_tolerance_ms: FUTURE_TOLERANCE_MS,
                ..Default::default()
            },
        );
        publisher.publish(e, None).await.expect("published");
    }
}

/// The `signal` lines of an as-of's JSON output, and the event ids the agency could see.
fn signals_and_seen(stdout: &str) -> (Vec<Value>, Vec<String>) {
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let signals = lines.iter().filter(|l| l["kind"] == "signal").cloned().collect();
    let seen = lines
        .iter()
        .filter(|l| l["kind"] == "could_see")
        .map(|l| l["event_id"].as_str().unwrap().to_owned())
        .collect();
    (signals, seen)
}

/// Signals under `audit as-of` ("when did this first show?"): police record two missing episodes, a school
/// an absence concern and the emergency department an intoxication attendance within six weeks, after
/// children's social care took a referral and asked the MASH to check. As of the day before the attendance
/// no signal had fired; as of the day after, S02 had, first at the attendance's occurred-at, for the MASH and
/// the lead authority (each with references to every cited fact, counting those it could not read then), and for neither police nor the school.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_shows_when_a_signal_first_fired_to_its_recipients_and_what_each_could_read() {
    let nats = NatsServer::start_with_auth();
    let mut apply = vec!["streams", "apply"];
    let ops = common::as_operator(&nats);
    apply.extend(ops.iter().map(String::as_str));
    halcyon_ok(&apply);

    let day0 = start_of_day_ms(date_of_ms(now_ms() + 7 * DAY_MS));
    let at = |day: i64, agency: &str, kind: Kind| {
        let mut e = envelope(day0 + day * DAY_MS + 10 * HOUR_MS, kind);
        e.agency_id = agency.into();
        e.case_id = format!("CASE-{agency}");
        e
    };
    let referral = at(
        0,
        CSC,
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: None,
            summary: "worries".into(),
        }),
    );
    let mut check = at(
        0,
        CSC,
        Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
            requested_agency_id: "mash-rotherham".into(),
            rag: pb::Rag::Amber as i32,
        }),
    );
    check.occurred_at = Some(timestamp_from_millis(day0 + 11 * HOUR_MS));
    check.recorded_at = check.occurred_at;
    let missing = |day| {
        at(
            day,
            "police-sy",
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
                circumstances: "did not return home".into(),
            }),
        )
    };
    let (missing_1, missing_2) = (missing(1), missing(4));
    let absence = at(
        6,
        "school-oakwood",
        Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
            attendance_percent: 71,
            sessions_missed: 18,
        }),
    );
    let intoxication = at(
        9,
        "health-rgh-ed",
        Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "ED".into(),
            reason: pb::AttendanceReason::Intoxication as i32,
            clinical_summary: "brought in intoxicated".into(),
        }),
    );
    publish_as_agencies(
        &nats,
        &[&referral, &check, &missing_1, &missing_2, &absence, &intoxication],
    )
    .await;
    let cited_all = [&missing_1, &missing_2, &absence, &intoxication].map(|e| e.event_id.clone());

    // The day before the attendance: the pattern was not complete, so nothing had fired for anyone.
    let before = day0 + 8 * DAY_MS + 12 * HOUR_MS;
    for agency in ["mash-rotherham", CSC] {
        let (signals, _) = signals_and_seen(&as_of(&nats, agency, before, true));
        assert!(signals.is_empty(), "{agency} before: {signals:?}");
    }

    // The day after: S02, first fired when the attendance occurred; each recipient sees only what it could.
    let after = day0 + 10 * DAY_MS + 12 * HOUR_MS;
    for agency in ["mash-rotherham", CSC] {
        let (signals, seen) = signals_and_seen(&as_of(&nats, agency, after, true));
        eprintln!("{agency}: {signals:?}");
        assert_eq!(signals.len(), 1, "{agency}: {signals:?}");
        let s = &signals[0];
        assert_eq!(s["rule_id"], "S02", "{agency}");
        assert_eq!(
            s["signal_id"],
            format!("S02/{}", intoxication.event_id),
            "{agency}"
        );
        assert_eq!(
            s["first_fired_at"],
            at_text(day0 + 9 * DAY_MS + 10 * HOUR_MS),
            "{agency}"
        );
        let cited: Vec<String> = s["cited"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["event_id"].as_str().unwrap().to_owned())
            .collect();
        let could: Vec<String> = cited_all.iter().filter(|e| seen.contains(e)).cloned().collect();
        assert_eq!(
            cited,
            cited_all.to_vec(),
            "{agency}: the references to every cited fact, in order, as ListSignals gives them"
        );
        assert_eq!(
            s["cited_unreadable"].as_u64().unwrap() as usize,
            cited_all.len() - could.len(),
            "{agency}: how many of them its view did not show"
        );
        eprintln!(
            "{agency} could see {} of the {} cited facts",
            could.len(),
            cited_all.len()
        );
    }

    // Not addressed to police or the school (whatever they may see of the facts).
    for agency in ["police-sy", "school-oakwood"] {
        let (signals, _) = signals_and_seen(&as_of(&nats, agency, after, true));
        assert!(signals.is_empty(), "{agency}: {signals:?}");
    }

    // The chronology as of the day after marks the signal when it first fired (after the fact that
    // completed it), with who could receive it: text, CSV, HTML.
    let dir = tempfile::tempdir().unwrap();
    let chronology = |format: &str| {
        let path = dir.path().join(format!("chronology.{format}"));
        let after = at_text(after);
        let mut args = vec![
            "audit",
            "chronology",
            "--child",
            NHS,
            "--as-of",
            &after,
            "--format",
            format,
            "--out",
            path.to_str().unwrap(),
            "--quiet",
            "--future-tolerance-secs",
            FUTURE_TOLERANCE_SECS,
        ];
        args.extend(ops.iter().map(String::as_str));
        halcyon_ok(&args);
        std::fs::read_to_string(path).unwrap()
    };
    let text = chronology("text");
    eprintln!("{text}");
    let fired = at_text(day0 + 9 * DAY_MS + 10 * HOUR_MS);
    let mark = text
        .lines()
        .position(|l| l.contains("SIGNAL S02"))
        .unwrap_or_else(|| panic!("an S02 signal line: {text}"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[mark].contains(&fired), "{}", lines[mark]);
    assert!(lines[mark].contains("cites facts "), "{}", lines[mark]);
    let receivers = lines[mark + 1];
    assert!(
        receivers.contains("could receive it: ")
            && receivers.contains("mash-rotherham from ")
            && receivers.contains(&format!("{CSC} from ")),
        "{receivers}"
    );
    for agency in ["police-sy", "school-oakwood"] {
        assert!(!receivers.contains(agency), "{receivers}");
    }
    let completing = text.find(&intoxication.event_id).unwrap();
    assert!(
        completing < text.find("SIGNAL S02").unwrap(),
        "after the completing fact"
    );
    let csv = chronology("csv");
    assert!(
        csv.lines().any(|l| l.starts_with(&format!("signal,{fired},"))
            && l.contains(&format!("S02/{}", intoxication.event_id))),
        "{csv}"
    );
    let html = chronology("html");
    assert!(html.contains(&format!("data-signal=\"S02/{}\"", intoxication.event_id)));

    // The same for people.
    let text = as_of(&nats, "mash-rotherham", after, false);
    eprintln!("{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("S02 "))
        .unwrap_or_else(|| panic!("an S02 line: {text}"));
    assert!(
        line.contains(&format!(
            "first fired {}",
            at_text(day0 + 9 * DAY_MS + 10 * HOUR_MS)
        )),
        "{line}"
    );
}
