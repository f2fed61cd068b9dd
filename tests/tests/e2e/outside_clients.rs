//! Issue 13, defects 4–7, as an outside client meets them, over real NATS, sled and gRPC:
//! 4. a flag check (and a search) by a caller the policy does not entitle answers exactly as for a child
//!    Halcyon does not know;
//! 5. the identity in a view is the best known from every fact whose identity the caller may see, latest
//!    non-empty value per field, whatever agency published last and in whatever order events arrived;
//! 6. an event dated in the future, published raw as a stock client would, is quarantined with its reason,
//!    never projected;
//! 7. stock clients' expectations: RESOURCE_EXHAUSTED for an over-size request, INVALID_ARGUMENT at once for
//!    a position on a stream that does not exist and for an unknown purpose value, reflection v1alpha.

use crate::common;

use std::time::Duration;

use halcyon_bus::{Credentials, connect};
use halcyon_grpc::pb::{self, event::Kind};
use halcyon_policy::Purpose;
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_testkit::envelope;
use prost::Message;

const CSC: &str = "csc-rotherham";
const POLICE: &str = "police-sy";
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    halcyon_schema::clock::now_ms()
}

fn named(mut e: pb::Envelope, given: &str, family: &str, dob: &str) -> pb::Envelope {
    let child = e.child.as_mut().unwrap();
    child.given_name = given.into();
    child.family_name = family.into();
    child.date_of_birth = dob.into();
    e
}

fn plan(nhs: &str, at_ms: i64) -> pb::Envelope {
    envelope(
        CSC,
        "sw-1",
        nhs,
        at_ms,
        Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted {
            category: pb::PlanCategory::SexualAbuse as i32,
            unborn: false,
            contact: Some(pb::AuthorityContact {
                office_hours_phone: "01632 960001".into(),
                out_of_hours_phone: "01632 960002".into(),
            }),
            ..Default::default()
        }),
    )
}

fn missing(nhs: &str, at_ms: i64) -> pb::Envelope {
    envelope(
        POLICE,
        "pc-1",
        nhs,
        at_ms,
        Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
            circumstances: "did not return home".into(),
        }),
    )
}

async fn check_flag(
    client: &mut pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
    agency: &str,
    nhs: &str,
    purpose: Purpose,
) -> Result<pb::FlagStatus, tonic::Status> {
    let request = pb::CheckFlagRequest {
        context: Some(common::context(purpose, &[])),
        nhs_number: nhs.into(),
    };
    client
        .check_flag(common::authorised(request, &format!("demo-{agency}")))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_defect_4_a_caller_not_entitled_learns_nothing_of_a_known_child() {
    let h = common::Harness::start().await;
    let nhs = "9434765919";
    let unknown = "9434765870";
    let after = common::publish_as_agencies(
        &h.nats.url(),
        &[named(
            plan(nhs, now_ms() - 30 * DAY_MS),
            "Sam",
            "Doe",
            "2012-01-02",
        )],
    )
    .await;
    let mut client = h.client().await;
    // The flag: A&E may see it (standing entitlement) and the owner is notified; it names the child.
    common::find_by_nhs(&mut client, CSC, nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    let ed = check_flag(&mut client, "health-rgh-ed", nhs, Purpose::DirectCare)
        .await
        .unwrap();
    assert!(ed.child_protection_plan && !ed.child_id.is_empty());
    // The voluntary sector's box is "–" and a school not enrolled has no relationship: for them the known,
    // flagged child answers exactly as an NHS number Halcyon never heard of.
    for agency in ["vol-safe-haven", "school-oakwood", "yjs-rotherham"] {
        let known = check_flag(&mut client, agency, nhs, Purpose::Safeguarding).await;
        let never_heard = check_flag(&mut client, agency, unknown, Purpose::Safeguarding).await;
        match (known, never_heard) {
            (Ok(a), Ok(b)) if agency == "yjs-rotherham" => {
                // Youth justice holds F for D1 (a standing flag): it sees the flag, and the unknown child
                // answers as no flag at all.
                assert!(a.child_protection_plan, "youth justice's flag");
                assert_eq!(
                    b,
                    pb::FlagStatus {
                        policy_version: b.policy_version.clone(),
                        ..Default::default()
                    }
                );
            }
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{agency}: a known child must look unknown"),
            other => panic!("{agency}: {other:?}"),
        }
        // And a search by NHS number: NOT_FOUND with the same message either way.
        let known = common::find_by_nhs(&mut client, agency, nhs, Purpose::Safeguarding, &[]).await;
        let never_heard = common::find_by_nhs(&mut client, agency, unknown, Purpose::Safeguarding, &[]).await;
        if agency == "yjs-rotherham" {
            continue; // it sees the flag, so it may know the child exists
        }
        let (a, b) = (known.unwrap_err(), never_heard.unwrap_err());
        assert_eq!((a.code(), a.message()), (b.code(), b.message()), "{agency}");
        assert_eq!(a.code(), tonic::Code::NotFound);
    }
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_defect_5_identity_is_the_best_known_whatever_arrives_last() {
    let h = common::Harness::start().await;
    let base = now_ms() - 40 * DAY_MS;
    // Two children with the same facts, published in opposite orders. CSC names the child; later, police
    // record a missing episode with only the NHS number; later still, CSC records a new family name.
    let facts = |nhs: &str| {
        vec![
            named(plan(nhs, base), "Sam", "Doe", "2012-01-02"),
            missing(nhs, base + DAY_MS),
            named(
                envelope(
                    CSC,
                    "sw-1",
                    nhs,
                    base + 2 * DAY_MS,
                    Kind::ConcernRecorded(pb::ConcernRecorded {
                        summary: "family moved".into(),
                    }),
                ),
                "",
                "Doe-Smith",
                "",
            ),
            missing(nhs, base + 3 * DAY_MS),
        ]
    };
    let (a, b) = ("9434765919", "9434765870");
    let forwards = facts(a);
    let mut backwards = facts(b);
    backwards.reverse();
    let mut after = common::publish_as_agencies(&h.nats.url(), &forwards).await;
    for e in &backwards {
        // One at a time, so that they arrive in this order.
        after.extend(common::publish_as_agencies(&h.nats.url(), std::slice::from_ref(e)).await);
    }
    let mut client = h.client().await;
    let expected = pb::ChildIdentifiers {
        given_name: "Sam".into(),
        family_name: "Doe-Smith".into(),
        date_of_birth: "2012-01-02".into(),
        ..Default::default()
    };
    for nhs in [a, b] {
        for agency in [CSC, POLICE] {
            let view = common::find_by_nhs(&mut client, agency, nhs, Purpose::Safeguarding, &after)
                .await
                .unwrap();
            let id = view.identity.unwrap_or_default();
            assert_eq!(
                (
                    id.given_name.as_str(),
                    id.family_name.as_str(),
                    id.date_of_birth.as_str(),
                    id.nhs_number.as_str()
                ),
                (
                    expected.given_name.as_str(),
                    expected.family_name.as_str(),
                    expected.date_of_birth.as_str(),
                    nhs
                ),
                "{agency}'s view of {nhs}"
            );
        }
    }
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_defect_6_a_future_dated_event_is_quarantined_not_projected() {
    let h = common::Harness::start().await;
    let nhs = "9434765919";
    let now = now_ms();
    let good = missing(nhs, now - DAY_MS);
    // Occurred in 2099, recorded now (a stock client skips the library's check).
    let mut in_2099 = missing(nhs, now);
    in_2099.occurred_at = Some(timestamp_from_millis(4_102_444_800_000));
    // Recorded an hour ahead of the bus's clock (beyond the 5-minute tolerance).
    let mut ahead = missing(nhs, now + 3_600_000);
    ahead.recorded_at = Some(timestamp_from_millis(now + 3_600_000));
    let client = connect(
        &h.nats.url(),
        &Credentials::agency(POLICE, "police-sy-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut last = 0;
    for e in [&good, &in_2099, &ahead] {
        last = js
            .publish(
                format!("halcyon.events.{POLICE}.CASE-8"),
                e.encode_to_vec().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence;
    }
    let after = [halcyon_bus::Position {
        stream: "EVENTS_POLICE_SY".into(),
        sequence: last,
    }];
    let mut query = h.client().await;
    let view = common::find_by_nhs(&mut query, POLICE, nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    let ids: Vec<&str> = view.facts.iter().map(|f| f.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [good.event_id.as_str()],
        "only the event that has happened is a fact"
    );
    let listed = query
        .list_quarantine(common::authorised(
            pb::ListQuarantineRequest::default(),
            "demo-police-sy",
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let reasons = |id: &str| -> Vec<String> {
        listed
            .iter()
            .find(|q| q.event_id == id)
            .map(|q| q.reasons.clone())
            .unwrap_or_else(|| panic!("{id} not quarantined: {listed:?}"))
    };
    let r = reasons(&in_2099.event_id);
    assert!(
        r.iter()
            .any(|r| r.starts_with("occurred_at: is after recorded_at")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|r| r.starts_with("occurred_at: is in the future")),
        "{r:?}"
    );
    let r = reasons(&ahead.event_id);
    assert!(
        r.iter().any(|r| r.starts_with("recorded_at: is in the future")),
        "{r:?}"
    );
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_defect_7_stock_clients_get_the_statuses_they_expect() {
    let h = common::Harness::start().await;
    let mut client = h.client().await;
    // Over the request size limit: RESOURCE_EXHAUSTED.
    let huge = pb::FindChildRequest {
        context: Some(common::context(Purpose::Safeguarding, &[])),
        identifier: Some(pb::find_child_request::Identifier::LocalId(pb::LocalId {
            agency_id: CSC.into(),
            local_id: "x".repeat(halcyon_node::limits::REQUEST_BYTES_MAX + 1),
        })),
    };
    let err = client
        .find_child(common::authorised(huge, "demo-csc-rotherham"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // A position on a stream that does not exist: INVALID_ARGUMENT (not a wait for the read deadline,
    // which would answer DEADLINE_EXCEEDED).
    let mut ctx = common::context(Purpose::Safeguarding, &[]);
    ctx.min_positions.push(pb::Position {
        stream: "EVENTS_NOBODY".into(),
        sequence: 1,
    });
    let err = client
        .find_child(common::authorised(
            pb::FindChildRequest {
                context: Some(ctx),
                identifier: Some(pb::find_child_request::Identifier::NhsNumber("9434765919".into())),
            },
            "demo-csc-rotherham",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("EVENTS_NOBODY"), "{err:?}");
    // An unknown purpose value says it is unknown.
    let mut ctx = common::context(Purpose::Safeguarding, &[]);
    ctx.purpose = 99;
    let err = client
        .find_child(common::authorised(
            pb::FindChildRequest {
                context: Some(ctx),
                identifier: Some(pb::find_child_request::Identifier::NhsNumber("9434765919".into())),
            },
            "demo-csc-rotherham",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("unknown value 99"), "{err:?}");
    // Reflection answers in both versions (the Python stock client is tried in stock_clients.rs).
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("{response:?}");
    };
    assert!(
        list.service.iter().any(|s| s.name == "halcyon.v1.QueryService"),
        "{list:?}"
    );
    h.node.stop(Duration::from_secs(5)).await;
}
