//! Issue 20 (corrections), over real NATS, sled and gRPC: the children's social care authority withdraws a
//! referral as entered in error, and A&E an attendance that completed a signal. From the corrections on, no
//! agency's answer shows either fact, the referral's T01 deadline no longer runs, the signal stands
//! withdrawn and the MASH, which received it, is told on its watch; `audit as-of` at a moment before the
//! corrections still shows what was visible then, and the chronology shows each withdrawn fact beside its
//! correction. A correction the police publish of the authority's referral is quarantined with the reason.
//! Expectations are by event id, from the rules in docs/corrections.md.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use halcyon_bus::Position;
use halcyon_grpc::pb::{self, event::Kind, signal_service_client::SignalServiceClient};
use halcyon_node::Node;
use halcyon_policy::{AgencyKind, Policy, Principal, Purpose, Role};
use halcyon_projector::SignalSpec;
use halcyon_review::chronology::{ChildMatch, ChronologyRequest};
use halcyon_schema::{ChildId, NhsNumber};
use halcyon_signals::SignalRules;
use halcyon_testkit::NatsServer;
use halcyon_timescales::Timescales;

const NHS: &str = "9434765919";
const DAY: i64 = 86_400_000;
/// Monday 2 March 2026, 10:00 UTC.
const T0: i64 = 1_772_445_600_000;

fn envelope(agency: &str, at_ms: i64, kind: Kind) -> pb::Envelope {
    halcyon_testkit::envelope(agency, "p-1", NHS, at_ms, kind)
}

fn entered_in_error(agency: &str, at_ms: i64, event_id: &str) -> pb::Envelope {
    envelope(
        agency,
        at_ms,
        Kind::RecordCorrected(Box::new(pb::RecordCorrected {
            corrected_event_id: event_id.into(),
            reason: "recorded against the wrong child".into(),
            replacement: None,
            entered_in_error: true,
        })),
    )
}

/// Every registered agency's answer to FindChild, as (agency, event ids shown).
async fn shown_to_each_agency(node: &Node, after: &[Position]) -> Vec<(String, Vec<String>)> {
    let mut client = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut out = Vec::new();
    for agency in common::registry().iter() {
        let shown =
            match common::find_by_nhs(&mut client, agency.id.as_str(), NHS, Purpose::Safeguarding, after)
                .await
            {
                Ok(view) => view.facts.into_iter().map(|f| f.event_id).collect(),
                Err(status) if status.code() == tonic::Code::NotFound => Vec::new(),
                Err(status) => panic!("{}: {status}", agency.id),
            };
        out.push((agency.id.to_string(), shown));
    }
    out
}

async fn mash_signals(node: &Node, after: &[Position], open_only: bool) -> Vec<pb::Signal> {
    let mut client = SignalServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    client
        .list_signals(common::authorised(
            pb::ListSignalsRequest {
                context: Some(common::context(Purpose::Safeguarding, after)),
                open_only,
                ..Default::default()
            },
            "demo-mash-rotherham",
        ))
        .await
        .unwrap()
        .into_inner()
        .signals
}

fn csc_practitioner() -> Principal {
    Principal {
        agency: "csc-rotherham".parse().unwrap(),
        kind: AgencyKind::ChildrensSocialCare,
        role: Role::Practitioner,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_and_an_attendance_entered_in_error_are_withdrawn_from_the_correction_on() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let node = common::start_node(common::node_config(&nats, data.path()))
        .await
        .expect("node starts");
    let mut mash_watch = common::watch_as(&node, "mash-rotherham").await;

    let referral = envelope(
        "csc-rotherham",
        T0,
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: None,
            summary: "worries about who she is with".into(),
        }),
    );
    let check = envelope(
        "mash-rotherham",
        T0 + 3_600_000,
        Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
            requested_agency_id: "police-sy".into(),
            rag: pb::Rag::Amber as i32,
        }),
    );
    let missing = |at_ms| {
        envelope(
            "police-sy",
            at_ms,
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
                circumstances: "did not return after school".into(),
            }),
        )
    };
    let absence = envelope(
        "school-oakwood",
        T0 + 15 * DAY,
        Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
            attendance_percent: 68,
            sessions_missed: 21,
        }),
    );
    let intoxication = envelope(
        "health-rgh-ed",
        T0 + 20 * DAY,
        Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "ED".into(),
            reason: pb::AttendanceReason::Intoxication as i32,
            clinical_summary: "brought in by ambulance, intoxicated".into(),
        }),
    );
    let case = vec![
        referral.clone(),
        check,
        missing(T0 + DAY),
        missing(T0 + 8 * DAY),
        absence,
        intoxication.clone(),
    ];
    let after = common::publish_as_agencies(&nats.url(), &case).await;
    let signal = common::next_signal(&mut mash_watch, "the S02 signal").await;
    let signal_id = format!("S02/{}", intoxication.event_id);
    assert_eq!(signal.signal_id, signal_id);
    assert!(signal.withdrawn.is_none());
    common::derived(&node, &after).await;

    let child = ChildId::from_nhs(&NHS.parse::<NhsNumber>().unwrap());
    let t01 = format!("T01/{}", referral.event_id);
    let before = shown_to_each_agency(&node, &after).await;
    let saw_referral: Vec<&str> = before
        .iter()
        .filter(|(_, ids)| ids.contains(&referral.event_id))
        .map(|(a, _)| a.as_str())
        .collect();
    assert!(saw_referral.contains(&"csc-rotherham"), "{before:?}");
    assert!(
        before.iter().any(|(_, ids)| ids.contains(&intoxication.event_id)),
        "{before:?}"
    );
    assert!(
        node.projector()
            .deadlines_of(&child)
            .unwrap()
            .deadlines
            .iter()
            .any(|d| d.key() == t01)
    );

    // A moment before the corrections (the bus stores what follows later than this).
    let before_ms = halcyon_schema::clock::now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The police try to withdraw the authority's referral: refused. Then each recording agency withdraws
    // its own.
    let foreign = entered_in_error("police-sy", T0 + 22 * DAY, &referral.event_id);
    let by_csc = entered_in_error("csc-rotherham", T0 + 22 * DAY, &referral.event_id);
    let by_ed = entered_in_error("health-rgh-ed", T0 + 22 * DAY, &intoxication.event_id);
    let after_foreign = common::publish_as_agencies(&nats.url(), std::slice::from_ref(&foreign)).await;
    common::derived(&node, &after_foreign).await;
    let quarantined = node.projector().quarantine(None).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(
        quarantined[0].event_id.as_deref(),
        Some(foreign.event_id.as_str())
    );
    assert!(
        quarantined[0]
            .reasons()
            .contains("only the agency that recorded an event may correct it"),
        "{}",
        quarantined[0].reasons()
    );
    assert_eq!(shown_to_each_agency(&node, &after_foreign).await, before);

    let corrected = common::publish_as_agencies(&nats.url(), &[by_csc.clone(), by_ed.clone()]).await;
    common::derived(&node, &corrected).await;

    // Gone from every agency's answer; the corrections themselves show nowhere either.
    for (agency, ids) in shown_to_each_agency(&node, &corrected).await {
        for gone in [
            &referral.event_id,
            &intoxication.event_id,
            &by_csc.event_id,
            &by_ed.event_id,
        ] {
            assert!(!ids.contains(gone), "{agency} is still shown {gone}");
        }
    }
    // T01 no longer runs for the referral.
    assert!(
        !node
            .projector()
            .deadlines_of(&child)
            .unwrap()
            .deadlines
            .iter()
            .any(|d| d.key() == t01)
    );
    // The signal stands withdrawn, and the MASH is told.
    let told = common::next_signal(&mut mash_watch, "the withdrawal").await;
    assert_eq!(told.signal_id, signal_id);
    let withdrawn = told.withdrawn.expect("told it is withdrawn");
    assert_eq!(withdrawn.withdrawn_event_id, intoxication.event_id);
    assert_eq!(withdrawn.correction_event_id, by_ed.event_id);
    let listed = mash_signals(&node, &corrected, false).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].withdrawn.is_some());
    assert!(
        mash_signals(&node, &corrected, true).await.is_empty(),
        "a withdrawn signal is not open"
    );

    // As it stood before the corrections: the referral was visible to the authority, T01 ran.
    let js = common::operator(&nats).await;
    let policy = Policy::england();
    let tolerance = halcyon_schema::validate::CLOCK_TOLERANCE_MS;
    let then = halcyon_review::as_of::reconstruct(&js, before_ms, tolerance)
        .await
        .unwrap();
    let registry = common::registry();
    // What the authority's practitioner could see at a reconstruction's moment.
    let csc_saw = |at: &halcyon_review::as_of::Reconstruction| {
        at.could_see(
            &policy,
            &registry,
            &csc_practitioner(),
            Purpose::Safeguarding,
            child,
        )
        .unwrap()
    };
    let seen_then = csc_saw(&then).expect("facts held then");
    assert!(
        seen_then
            .view
            .facts
            .iter()
            .any(|f| f.event_id == referral.event_id)
    );
    let timescales = Timescales::england();
    assert!(
        then.deadlines(&timescales, &seen_then)
            .unwrap()
            .iter()
            .any(|d| d.key() == t01)
    );
    let now = halcyon_review::as_of::reconstruct(&js, halcyon_schema::clock::now_ms(), tolerance)
        .await
        .unwrap();
    let seen_now = csc_saw(&now).expect("facts held now");
    assert!(
        !seen_now
            .view
            .facts
            .iter()
            .any(|f| f.event_id == referral.event_id)
    );

    // The chronology shows the referral, struck through from its correction, and the correction.
    let registry = common::registry();
    let signal_spec = SignalSpec::new(Arc::new(SignalRules::england()), &registry);
    let policies = halcyon_policy::PolicyHistory::single(policy);
    let chronology = halcyon_review::chronology::reconstruct(
        &js,
        &ChronologyRequest {
            child: ChildMatch::Nhs(NHS.parse().unwrap()),
            as_of_ms: None,
            registry: &registry,
            policies: &policies,
            timescales: &timescales,
            signal_spec: &signal_spec,
            future_tolerance_ms: tolerance,
            now_ms: halcyon_schema::clock::now_ms(),
        },
        &|_, _| {},
    )
    .await
    .unwrap();
    let entry = |id: &str| {
        chronology
            .facts
            .iter()
            .position(|e| e.event_id == id)
            .unwrap_or_else(|| panic!("{id} in the chronology"))
    };
    let original = &chronology.facts[entry(&referral.event_id)];
    let mark = original.corrected.as_ref().expect("marked as corrected");
    assert!(mark.entered_in_error);
    assert_eq!(mark.correction_event_id, by_csc.event_id);
    assert_eq!(
        chronology.facts[entry(&by_csc.event_id)].event_type,
        "RecordCorrected"
    );
    // The authority could see its referral from when it occurred until the correction, not after.
    let csc_lane = chronology
        .lanes
        .iter()
        .position(|l| l.agency == "csc-rotherham")
        .unwrap();
    let periods = &original.visible[csc_lane];
    assert_eq!(periods.len(), 1, "{periods:?}");
    assert_eq!(periods[0].from_ms, T0);
    assert_eq!(periods[0].until_ms, Some(T0 + 22 * DAY));
    node.stop(Duration::from_secs(5)).await;
}

/// Issue 20, must-show 4 over real NATS, sled and gRPC: an NHS number superseded by a new one — one child,
/// both histories, found by either number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_nhs_number_is_one_child_with_both_histories_found_by_either_number() {
    const OLD: &str = "9434765870";
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let node = common::start_node(common::node_config(&nats, data.path()))
        .await
        .expect("node starts");
    let old_fact = halcyon_testkit::envelope(
        "health-rgh-ed",
        "p-1",
        OLD,
        T0,
        Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "ED".into(),
            reason: pb::AttendanceReason::Injury as i32,
            clinical_summary: "wrist".into(),
        }),
    );
    let new_fact = envelope(
        "health-rgh-ed",
        T0 + DAY,
        Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "ED".into(),
            reason: pb::AttendanceReason::Illness as i32,
            clinical_summary: "fever".into(),
        }),
    );
    let merge = envelope(
        "health-rgh-ed",
        T0 + 2 * DAY,
        Kind::NhsNumberSuperseded(pb::NhsNumberSuperseded {
            superseded_nhs_number: OLD.into(),
            reason: "duplicate record merged by the NHS".into(),
        }),
    );
    let after = common::publish_as_agencies(&nats.url(), &[old_fact.clone(), new_fact.clone(), merge]).await;
    common::derived(&node, &after).await;
    let mut client = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for number in [NHS, OLD] {
        let view = common::find_by_nhs(&mut client, "health-rgh-ed", number, Purpose::DirectCare, &after)
            .await
            .unwrap_or_else(|s| panic!("found by {number}: {s}"));
        let ids: Vec<String> = view.facts.iter().map(|f| f.event_id.clone()).collect();
        assert!(
            ids.contains(&old_fact.event_id) && ids.contains(&new_fact.event_id),
            "{number}: {ids:?}"
        );
        seen.push(view.child_id);
    }
    assert_eq!(seen[0], seen[1], "one child");
    assert_eq!(
        seen[0],
        ChildId::from_nhs(&NHS.parse::<NhsNumber>().unwrap()).to_string()
    );
    node.stop(Duration::from_secs(5)).await;
}
