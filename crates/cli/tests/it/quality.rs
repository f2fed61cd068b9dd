//! Issue 20: `halcyon quality --agency ID`, run as the real binary against a real nats-server: one agency's
//! own records — entered in error, corrected, quarantined (a correction of another agency's event), links
//! undone, NHS numbers superseded, events recorded long after they occurred — counted and listed by event
//! id, exactly those published here (expectations by event id, hand-written); nothing of another agency's.

use halcyon_bus::{Credentials, Publisher, PublisherConfig, connect};
use halcyon_grpc::pb::{self, event::Kind};
use halcyon_testkit::NatsServer;

use crate::common::{self, halcyon_ok};

const DAY: i64 = 86_400_000;
const NHS: &str = "9434765919";
const OLD_NHS: &str = "9434765870";
const UPN: &str = "H801200001001";

async fn publish(url: &str, envelopes: &[pb::Envelope]) {
    for e in envelopes {
        let agency = e.agency_id.clone();
        let client = connect(
            url,
            &Credentials::agency(&agency, &format!("{agency}-dev-secret")),
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
        publisher.publish(e, None).await.expect("published");
    }
}

fn correction(target: &pb::Envelope, at: i64, replacement: Option<Kind>) -> pb::Envelope {
    halcyon_testkit::envelope(
        &target.agency_id,
        "q-1",
        NHS,
        at,
        Kind::RecordCorrected(Box::new(pb::RecordCorrected {
            corrected_event_id: target.event_id.clone(),
            reason: "corrected".into(),
            entered_in_error: replacement.is_none(),
            replacement: replacement.map(|k| Box::new(pb::Event { kind: Some(k) })),
        })),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quality_report_lists_exactly_the_agencys_own_repairs_refusals_and_late_records() {
    let nats = NatsServer::start_with_auth();
    common::apply_streams(&nats);
    let now = halcyon_schema::clock::now_ms();
    let concern = |at: i64, missed: u32| {
        halcyon_testkit::envelope(
            "school-oakwood",
            "q-1",
            NHS,
            at,
            Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
                attendance_percent: 70,
                sessions_missed: missed,
            }),
        )
    };
    let csc_referral = halcyon_testkit::envelope(
        "csc-rotherham",
        "q-1",
        NHS,
        now - DAY,
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: None,
            summary: "worries".into(),
        }),
    );
    let late = concern(now - 40 * DAY, 30);
    let wrong = concern(now - 2 * DAY, 31);
    let misrecorded = concern(now - 2 * DAY, 32);
    let withdraw = correction(&wrong, now - DAY, None);
    let fix = correction(
        &misrecorded,
        now - DAY,
        Some(Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
            attendance_percent: 75,
            sessions_missed: 12,
        })),
    );
    let foreign = correction(&csc_referral, now - DAY, None);
    let foreign = pb::Envelope {
        agency_id: "school-oakwood".into(),
        ..foreign
    };
    let mut pupil_only = concern(now - 3 * DAY, 33);
    pupil_only.child.as_mut().unwrap().nhs_number.clear();
    pupil_only.child.as_mut().unwrap().upn = UPN.into();
    let link = halcyon_testkit::envelope(
        "school-oakwood",
        "q-1",
        NHS,
        now - 2 * DAY,
        Kind::IdentifierLinked(pb::IdentifierLinked {
            upn: UPN.into(),
            reason: "matched".into(),
            ..Default::default()
        }),
    );
    let unlink = halcyon_testkit::envelope(
        "school-oakwood",
        "q-1",
        NHS,
        now - DAY,
        Kind::IdentifierUnlinked(pb::IdentifierUnlinked {
            upn: UPN.into(),
            reason: "another pupil".into(),
            ..Default::default()
        }),
    );
    let about_old = halcyon_testkit::envelope(
        "school-oakwood",
        "q-1",
        OLD_NHS,
        now - 3 * DAY,
        Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
            attendance_percent: 80,
            sessions_missed: 3,
        }),
    );
    let supersede = halcyon_testkit::envelope(
        "school-oakwood",
        "q-1",
        NHS,
        now - DAY,
        Kind::NhsNumberSuperseded(pb::NhsNumberSuperseded {
            superseded_nhs_number: OLD_NHS.into(),
            reason: "merged".into(),
        }),
    );
    // The authority's own correction is its business, not the school's report.
    let csc_withdraw = correction(&csc_referral, now - DAY / 2, None);
    publish(
        &nats.url(),
        &[
            csc_referral.clone(),
            late.clone(),
            wrong.clone(),
            misrecorded.clone(),
            withdraw.clone(),
            fix.clone(),
            foreign.clone(),
            pupil_only,
            link,
            unlink.clone(),
            about_old,
            supersede.clone(),
            csc_withdraw,
        ],
    )
    .await;

    let mut args = vec!["quality", "--agency", "school-oakwood", "--json"];
    let ops = common::as_operator(&nats);
    args.extend(ops.iter().map(String::as_str));
    let report: serde_json::Value = serde_json::from_str(&halcyon_ok(&args)).unwrap();
    let ids = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {report}"))
            .iter()
            .map(|i| i["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("entered_in_error"), vec![withdraw.event_id.clone()]);
    assert_eq!(ids("corrected"), vec![fix.event_id.clone()]);
    assert_eq!(ids("quarantined"), vec![foreign.event_id.clone()]);
    assert!(
        report["quarantined"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not among this child's facts")
    );
    assert_eq!(ids("links_undone"), vec![unlink.event_id.clone()]);
    assert_eq!(ids("nhs_numbers_superseded"), vec![supersede.event_id.clone()]);
    assert_eq!(ids("recorded_late"), vec![late.event_id.clone()]);
    assert_eq!(report["events_read"], 11, "the school's stream only");
    // The text form says the same in words.
    let mut args = vec!["quality", "--agency", "school-oakwood"];
    args.extend(ops.iter().map(String::as_str));
    let text = halcyon_ok(&args);
    assert!(text.contains("withdrawn as entered in error: 1"), "{text}");
    assert!(
        text.contains("recorded more than 30 days after they occurred: 1"),
        "{text}"
    );
}
