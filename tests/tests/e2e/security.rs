//! Issue 6: who is calling. Unauthenticated calls, a token used as another agency, a missing purpose and a
//! break-glass without a reason are refused with the right status and a message saying what is missing; a
//! break-glass with a reason is permitted, audited with its reason and flagged for review. After a consent
//! withdrawal, a query carrying its position never returns the withdrawn facts. Break-glass is refused for
//! lists and standing watches.

use crate::common;

use std::time::Duration;

use futures::StreamExt;
use halcyon_grpc::pb;
use halcyon_policy::Purpose;
use halcyon_schema::Category;

fn request(nhs: &str, context: Option<pb::RequestContext>) -> pb::FindChildRequest {
    pb::FindChildRequest {
        context,
        identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_must_say_who_they_are_and_why_they_ask() {
    let h = common::Harness::start().await;
    let s = common::children(1);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let nhs = s.children[0].nhs.to_string();
    let mut client = h.client().await;
    let ctx = || Some(common::context(Purpose::Safeguarding, &after));

    let none = client.find_child(request(&nhs, ctx())).await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unauthenticated);
    assert!(none.message().contains("no credentials"), "{}", none.message());

    let unknown = client
        .find_child(common::authorised(request(&nhs, ctx()), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);

    let mut as_other = common::authorised(request(&nhs, ctx()), "demo-school-oakwood");
    as_other
        .metadata_mut()
        .insert("x-halcyon-agency", "police-sy".parse().unwrap());
    let as_other = client.find_child(as_other).await.unwrap_err();
    assert_eq!(as_other.code(), tonic::Code::PermissionDenied);
    assert!(
        as_other
            .message()
            .contains("belong to agency school-oakwood, not police-sy"),
        "{}",
        as_other.message()
    );

    let no_purpose = client
        .find_child(common::authorised(request(&nhs, None), "demo-police-sy"))
        .await
        .unwrap_err();
    assert_eq!(no_purpose.code(), tonic::Code::InvalidArgument);
    let mut unspecified = common::context(Purpose::Safeguarding, &after);
    unspecified.purpose = 0;
    let unspecified = client
        .find_child(common::authorised(
            request(&nhs, Some(unspecified)),
            "demo-police-sy",
        ))
        .await
        .unwrap_err();
    assert_eq!(unspecified.code(), tonic::Code::InvalidArgument);
    assert!(
        unspecified.message().contains("purpose is required"),
        "{}",
        unspecified.message()
    );

    let mut glass = common::context(Purpose::Safeguarding, &after);
    glass.break_glass = true;
    let blank = client
        .find_child(common::authorised(
            request(&nhs, Some(glass.clone())),
            "demo-yjs-rotherham",
        ))
        .await
        .unwrap_err();
    assert_eq!(blank.code(), tonic::Code::InvalidArgument);
    assert!(
        blank.message().contains("break-glass needs a reason"),
        "{}",
        blank.message()
    );

    // Youth justice has no involvement: the assessment is withheld, unless break-glass with a reason.
    let assessment = |v: &pb::ChildView| {
        v.facts
            .iter()
            .any(|f| f.category == Category::ASSESSMENT.to_pb() as i32)
    };
    let plain = common::find_by_nhs(&mut client, "yjs-rotherham", &nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    assert!(!assessment(&plain));
    glass.break_glass_reason = "child missing overnight; risk to life".into();
    let opened = client
        .find_child(common::authorised(
            request(&nhs, Some(glass)),
            "demo-yjs-rotherham",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        assessment(&opened),
        "break-glass with a reason opens the assessment"
    );

    // The audit trail shows the break-glass, its reason, and that it was relied on.
    let js = common::operator(&h.nats).await;
    let mut audit = halcyon_bus::ordered_messages(&js, "AUDIT", 1).await.unwrap();
    let mut flagged = None;
    while flagged.is_none() {
        let m = tokio::time::timeout(Duration::from_secs(10), audit.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        flagged = halcyon_bus::audit::decode_records(&m.payload)
            .unwrap()
            .into_iter()
            .find(|r| r.break_glass_relied_on);
    }
    let flagged = flagged.unwrap();
    assert_eq!(flagged.agency_id, "yjs-rotherham");
    assert_eq!(
        flagged.break_glass_reason,
        "child missing overnight; risk to life"
    );
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_consent_withdrawal_a_query_at_its_position_never_returns_the_withdrawn_facts() {
    let h = common::Harness::start().await;
    let s = common::children(1);
    let nhs = s.children[0].nhs.to_string();
    let attendance = s
        .envelopes
        .iter()
        .find(|e| e.agency_id == "health-rgh-ed" && e.category == Category::HEALTH_CLINICAL.to_pb() as i32)
        .unwrap()
        .clone();
    let derived = |base: &pb::Envelope, agency: &str, kind: pb::event::Kind| {
        let mut e = base.clone();
        e.event_id = halcyon_schema::EventId::new().to_string();
        e.agency_id = agency.into();
        e.case_id = "CONSENT-1".into();
        e.category = Category::IDENTITY.to_pb() as i32;
        e.event = Some(pb::Event { kind: Some(kind) });
        e
    };
    let approval = derived(
        &attendance,
        "health-rgh-ed",
        pb::event::Kind::OriginatorApprovalGranted(pb::OriginatorApprovalGranted {
            approved_event_id: attendance.event_id.clone(),
            recipient_agency_id: "mash-rotherham".into(),
            reason: "MASH enquiry".into(),
        }),
    );
    let d6 = vec![Category::HEALTH_CLINICAL.to_pb() as i32];
    let consent = derived(
        &attendance,
        "csc-rotherham",
        pb::event::Kind::ConsentRecorded(pb::ConsentRecorded {
            categories: d6.clone(),
            given_by: "parent".into(),
        }),
    );
    let after = common::publish_as_agencies(&h.nats.url(), &[attendance.clone(), approval, consent]).await;
    let mut client = h.client().await;
    let sees = |v: &pb::ChildView| v.facts.iter().any(|f| f.event_id == attendance.event_id);
    let before = common::find_by_nhs(&mut client, "mash-rotherham", &nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    assert!(
        sees(&before),
        "with approval and consent, MASH sees the attendance"
    );

    let mut withdrawal = derived(
        &attendance,
        "csc-rotherham",
        pb::event::Kind::ConsentWithdrawn(pb::ConsentWithdrawn { categories: d6 }),
    );
    // It happened after the consent, and was recorded when it happened.
    withdrawal.occurred_at = Some(halcyon_schema::convert::timestamp_from_millis(
        halcyon_schema::convert::timestamp_millis(attendance.occurred_at.as_ref().unwrap()) + 86_400_000,
    ));
    withdrawal.recorded_at = withdrawal.occurred_at;
    let position = common::publish_as_agencies(&h.nats.url(), &[withdrawal]).await;
    let after_withdrawal = common::find_by_nhs(
        &mut client,
        "mash-rotherham",
        &nhs,
        Purpose::Safeguarding,
        &position,
    )
    .await
    .unwrap();
    assert!(!sees(&after_withdrawal), "the withdrawn fact was returned");
    h.node.stop(Duration::from_secs(5)).await;
}

/// Break-glass opens one child's view for one look-up. A list (breaches, signals) or a standing watch asked
/// for under break-glass is refused with INVALID_ARGUMENT saying so, and leaves no access record, because
/// nothing about a child was read; the same calls without break-glass are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_is_refused_for_lists_and_standing_watches() {
    use halcyon_grpc::pb::deadline_service_client::DeadlineServiceClient;
    use halcyon_grpc::pb::signal_service_client::SignalServiceClient;

    let h = common::Harness::start().await;
    let url = format!("http://{}", h.node.addr);
    let token = "demo-mash-rotherham";
    let plain = common::context(Purpose::Safeguarding, &[]);
    let glass = pb::RequestContext {
        break_glass: true,
        break_glass_reason: "child missing overnight; risk to life".into(),
        ..plain.clone()
    };
    let js = common::operator(&h.nats).await;
    let mut breaches = DeadlineServiceClient::connect(url.clone()).await.unwrap();
    let mut signals = SignalServiceClient::connect(url).await.unwrap();
    let mut query = h.client().await;

    // The same three calls, first under break-glass (refused), then without it (answered).
    for (context, refused) in [(glass, true), (plain, false)] {
        let audit_before = common::stream_messages(&js, "AUDIT").await;
        let calls = [
            (
                "ListBreaches",
                breaches
                    .list_breaches(common::authorised(
                        pb::ListBreachesRequest {
                            context: Some(context.clone()),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(|_| ()),
                "not a list of breaches",
            ),
            (
                "ListSignals",
                signals
                    .list_signals(common::authorised(
                        pb::ListSignalsRequest {
                            context: Some(context.clone()),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(|_| ()),
                "not a list of signals",
            ),
            (
                "Watch",
                query
                    .watch(common::authorised(
                        pb::WatchRequest {
                            context: Some(context.clone()),
                            ..Default::default()
                        },
                        token,
                    ))
                    .await
                    .map(|_| ()),
                "not a standing watch",
            ),
        ];
        for (call, result, says) in calls {
            if !refused {
                result.unwrap_or_else(|s| panic!("{call} without break-glass is answered: {s:?}"));
                continue;
            }
            let status = result.expect_err(&format!("{call} under break-glass must be refused"));
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{call}: {status:?}");
            assert!(
                status.message().contains("break-glass") && status.message().contains(says),
                "{call} says why: {}",
                status.message()
            );
        }
        if refused {
            assert_eq!(
                common::stream_messages(&js, "AUDIT").await,
                audit_before,
                "a refused list or watch reads nothing about a child, so it leaves no access record"
            );
        }
    }
    h.node.stop(Duration::from_secs(5)).await;
}
