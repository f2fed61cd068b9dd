//! Issue 6: a CP-IS-style flag check from unscheduled care returns the flag and the owning authority's
//! contact numbers, nothing more, and notifies the owning authority on its watch stream; a watch delivers
//! new facts the agency may see, and not those it may not.

use crate::common;

use std::time::Duration;

use futures::StreamExt;
use halcyon_grpc::pb;
use halcyon_policy::Purpose;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unscheduled_care_flag_check_notifies_the_owning_authority() {
    let h = common::Harness::start().await;
    let s = common::children(1);
    assert!(s.children[0].on_plan);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let mut client = h.client().await;

    // The owning authority watches.
    let watch = pb::WatchRequest {
        context: Some(common::context(Purpose::Safeguarding, &[])),
        ..Default::default()
    };
    let mut csc_watch = client
        .watch(common::authorised(watch, "demo-csc-rotherham"))
        .await
        .unwrap()
        .into_inner();

    let check = pb::CheckFlagRequest {
        context: Some(common::context(Purpose::DirectCare, &after)),
        nhs_number: s.children[0].nhs.to_string(),
    };
    let flag = client
        .check_flag(common::authorised(check, "demo-health-rgh-ed"))
        .await
        .unwrap()
        .into_inner();
    assert!(flag.child_protection_plan, "{flag:?}");
    assert!(flag.plan_started.is_some());
    assert_eq!(flag.owning_agency_id, "csc-rotherham");
    assert_eq!(flag.office_hours_phone, "01632 960001");
    assert_eq!(flag.out_of_hours_phone, "01632 960002");
    assert!(flag.owner_notified);

    // The watch may first carry facts still being projected; the notification follows.
    let notification = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), csc_watch.next())
            .await
            .expect("a notification")
            .unwrap()
            .unwrap();
        if let Some(pb::watch_event::Kind::Access(n)) = event.kind {
            break n;
        }
    };
    assert_eq!(notification.by_agency_id, "health-rgh-ed");
    assert_eq!(notification.method, "CheckFlag");
    assert_eq!(notification.child_id, flag.child_id);
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_delivers_new_facts_the_agency_may_see() {
    let h = common::Harness::start().await;
    let s = common::children(1);
    let mut client = h.client().await;
    let watch = pb::WatchRequest {
        context: Some(common::context(Purpose::Safeguarding, &[])),
        ..Default::default()
    };
    let mut school = client
        .watch(common::authorised(watch, "demo-school-oakwood"))
        .await
        .unwrap()
        .into_inner();

    // The school's enrolment, then a police missing episode (shared with the school for an enrolled pupil)
    // and police intelligence (never shared with a school).
    let pick = |kind: &str| {
        s.envelopes
            .iter()
            .find(|e| {
                e.event
                    .as_ref()
                    .unwrap()
                    .kind
                    .as_ref()
                    .map(halcyon_schema::EventKindExt::type_name)
                    == Some(kind)
            })
            .unwrap()
            .clone()
    };
    let enrolment = pick("InvolvementStarted");
    let intelligence = pick("PoliceIntelligenceRecorded");
    let missing = pick("MissingEpisodeReported");
    common::publish_as_agencies(&h.nats.url(), std::slice::from_ref(&enrolment)).await;
    common::publish_as_agencies(&h.nats.url(), std::slice::from_ref(&intelligence)).await;
    common::publish_as_agencies(&h.nats.url(), std::slice::from_ref(&missing)).await;

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), school.next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        if let Some(pb::watch_event::Kind::Fact(f)) = event.kind {
            seen.push(f.event_id);
        }
    }
    assert_eq!(
        seen,
        vec![enrolment.event_id, missing.event_id],
        "police intelligence was withheld"
    );
    h.node.stop(Duration::from_secs(5)).await;
}
