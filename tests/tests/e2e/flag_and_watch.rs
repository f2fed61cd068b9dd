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
    let notification = next_notification(&mut csc_watch, "a notification of the check").await;
    assert_eq!(notification.by_agency_id, "health-rgh-ed");
    assert_eq!(notification.method, "CheckFlag");
    assert_eq!(notification.child_id, flag.child_id);

    // The same flag read through the child's view ("F + notify owner" whichever method shows it): the
    // view's access record names the owner, and the owner's watch is told.
    let view = common::find_by_nhs(
        &mut client,
        "health-rgh-ed",
        &s.children[0].nhs.to_string(),
        Purpose::DirectCare,
        &after,
    )
    .await
    .expect("A&E is shown the flag");
    assert!(!view.facts.is_empty());
    let notification = next_notification(&mut csc_watch, "a notification of the view").await;
    assert_eq!(
        (notification.by_agency_id.as_str(), notification.method.as_str()),
        ("health-rgh-ed", "FindChild")
    );
    h.node.stop(Duration::from_secs(5)).await;
}

/// The next access notification on `watch`, past any facts it carries first.
async fn next_notification(
    watch: &mut tonic::Streaming<pb::WatchEvent>,
    what: &str,
) -> pb::AccessNotification {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap_or_else(|_| panic!("{what} within 10 s"))
            .unwrap()
            .unwrap();
        if let Some(pb::watch_event::Kind::Access(n)) = event.kind {
            return n;
        }
    }
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

/// Issue 22: when an entitlement changes, a watcher receives the earlier facts it may see only now, with the
/// reason. The police took part in a strategy discussion (D4, "P (participant)" to the police), but strategy
/// records reach anyone but their originator only once a section 47 enquiry has started (the Haringey
/// gate): the police see nothing of it until children's social care records the s47 start; then the
/// police watcher receives the strategy discussion, saying the s47 start opened it, and the s47 start itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_receives_earlier_facts_an_entitlement_change_opens_with_the_reason() {
    use halcyon_grpc::pb::event::Kind;
    const NHS: &str = "9434765919";
    const T0: i64 = 1_772_445_600_000;
    let h = common::Harness::start().await;
    let envelope =
        |agency: &str, at_ms: i64, kind: Kind| halcyon_testkit::envelope(agency, "p-1", NHS, at_ms, kind);
    let referral = envelope(
        "csc-rotherham",
        T0,
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: None,
            summary: "bruising reported by school".into(),
        }),
    );
    let strategy = envelope(
        "csc-rotherham",
        T0 + 3_600_000,
        Kind::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
            participant_agency_ids: vec!["police-sy".into(), "health-gp-clifton".into()],
            // Not yet decided here (a decision to start one opens the gate as the start does).
            section47_decided: false,
            summary: "more checks before deciding on a section 47".into(),
        }),
    );
    let before = common::publish_as_agencies(&h.nats.url(), &[referral, strategy.clone()]).await;
    let client = h.client().await;
    let police_view = |after: Vec<halcyon_bus::Position>| {
        let mut client = client.clone();
        async move {
            common::find_by_nhs(&mut client, "police-sy", NHS, Purpose::Safeguarding, &after)
                .await
                .map(|v| v.facts.into_iter().map(|f| f.event_id).collect::<Vec<_>>())
                .unwrap_or_default()
        }
    };
    let seen_before = police_view(before.clone()).await;
    assert!(
        !seen_before.contains(&strategy.event_id),
        "the gate is shut before the s47: {seen_before:?}"
    );

    let mut police = common::watch_as(&h.node, "police-sy").await;
    let s47 = envelope(
        "csc-rotherham",
        T0 + 2 * 3_600_000,
        Kind::Section47EnquiryStarted(pb::Section47EnquiryStarted {
            summary: "joint enquiry with police".into(),
        }),
    );
    // Published with the s47 start, in the same message batch: the authority's decision not to share its
    // assessment with the GP (D13, which the police never see). The reason names only what the police see.
    let decision = envelope(
        "csc-rotherham",
        T0 + 2 * 3_600_000 - 60_000,
        Kind::ShareDecisionRecorded(pb::ShareDecisionRecorded {
            recipient_agency_id: "health-gp-clifton".into(),
            categories: vec![pb::DataCategory::D3Assessment as i32],
            shared: false,
            reason: "not yet".into(),
        }),
    );
    let after = common::publish_as_agencies(&h.nats.url(), &[decision.clone(), s47.clone()]).await;
    // Everything the watch sends up to the s47 start itself.
    let mut pushed: Vec<(pb::VisibleFact, String)> = Vec::new();
    while !pushed.iter().any(|(f, _)| f.event_id == s47.event_id) {
        let event = common::next_event(&mut police, "the facts the s47 opens").await;
        if let Some(pb::watch_event::Kind::Fact(f)) = event.kind {
            pushed.push((f, event.became_visible));
        }
    }
    let (opened, reason) = pushed
        .iter()
        .find(|(f, _)| f.event_id == strategy.event_id)
        .expect("the strategy discussion is pushed to the police when the s47 starts");
    assert_eq!(opened.agency_id, "csc-rotherham");
    assert!(
        reason.contains("Section47EnquiryStarted") && reason.contains(&s47.event_id),
        "the reason names the s47 start: {reason:?}"
    );
    assert!(
        !reason.contains(&decision.event_id) && !reason.contains("ShareDecisionRecorded"),
        "the reason names a fact the police may not see: {reason:?}"
    );
    assert!(!pushed.iter().any(|(f, _)| f.event_id == decision.event_id));
    let (_, s47_reason) = pushed.iter().find(|(f, _)| f.event_id == s47.event_id).unwrap();
    assert!(
        s47_reason.is_empty(),
        "a fact recorded now is not 'recorded earlier': {s47_reason:?}"
    );
    // Every fact pushed as newly visible was hidden before and is in the police view now.
    let seen_after = police_view(after).await;
    for (f, why) in &pushed {
        assert!(seen_after.contains(&f.event_id), "{}", f.event_id);
        if !why.is_empty() {
            assert!(
                !seen_before.contains(&f.event_id),
                "{} was visible before",
                f.event_id
            );
        }
    }
    h.node.stop(Duration::from_secs(5)).await;
}
