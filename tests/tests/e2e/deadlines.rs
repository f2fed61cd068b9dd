//! Issue 8 (deadlines), over real NATS and gRPC with the node's clock under the test's control: a referral
//! with no decision for two working days yields a T01 breach on the owning authority's watch stream with
//! no further event published (the node's own timer notices it); a later decision closes it as late by the
//! right amount; an agency the policy entitles to the referral (police in a section 47 enquiry) is told too,
//! one it does not entitle (a school) nothing; a node down over a due time records the breach when it comes
//! back; and a rebuild evaluated at the same moment exports the same read models, deadlines included.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use halcyon_grpc::pb::{self, deadline_service_client::DeadlineServiceClient, event::Kind};
use halcyon_node::{Node, NodeConfig};
use halcyon_policy::Purpose;
use halcyon_projector::clock::Clock;
use halcyon_projector::{Projector, ViewSpec};
use halcyon_schema::convert::timestamp_millis;
use halcyon_testkit::NatsServer;

const NHS: &str = "9434765919";
const CSC: &str = "csc-rotherham";
/// Monday 2 March 2026, 10:00 UTC.
const MONDAY_10H: i64 = 1_772_445_600_000;
/// T01 (1 working day, counted from the day after) falls due at the end of Tuesday 3 March.
const TUESDAY_END: i64 = 1_772_582_399_999;
/// Thursday 5 March 2026, 10:00 UTC: two working days after the referral.
const THURSDAY_10H: i64 = 1_772_704_800_000;

fn referral_at(at_ms: i64) -> pb::Envelope {
    envelope(
        at_ms,
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: Some(pb::ReferrerDetails {
                source_code: "2A".into(),
                ..Default::default()
            }),
            summary: "school reports bruising".into(),
        }),
    )
}

fn envelope(at_ms: i64, kind: Kind) -> pb::Envelope {
    halcyon_testkit::envelope(CSC, "sw-1", NHS, at_ms, kind)
}

/// The next breach event on a watch (skipping the facts it also carries).
async fn next_breach(watch: &mut tonic::Streaming<pb::WatchEvent>, what: &str) -> pb::DeadlineBreach {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} on the watch within 20 s"))
            .expect("the watch stays open")
            .expect("a watch event");
        if let Some(pb::watch_event::Kind::Breach(b)) = event.kind {
            return b;
        }
    }
}

async fn list(node: &Node, agency: &str) -> Vec<pb::DeadlineBreach> {
    let mut client = DeadlineServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let request = pb::ListBreachesRequest {
        context: Some(common::context(Purpose::Safeguarding, &[])),
        ..Default::default()
    };
    client
        .list_breaches(common::authorised(request, &format!("demo-{agency}")))
        .await
        .unwrap()
        .into_inner()
        .breaches
}

fn export(p: &Projector) -> String {
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_an_undecided_referral_breaches_t01_on_the_timer_and_a_late_decision_closes_it() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let (clock, node) = node_at(&nats, data.path(), MONDAY_10H + 3_600_000).await;
    let mut client = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let watch = |token: &str| {
        common::authorised(
            pb::WatchRequest {
                context: Some(common::context(Purpose::Safeguarding, &[])),
                ..Default::default()
            },
            token,
        )
    };
    let mut csc_watch = client
        .watch(watch("demo-csc-rotherham"))
        .await
        .unwrap()
        .into_inner();

    // Monday 10:00: a referral. Nothing else is published until the decision.
    let referral = referral_at(MONDAY_10H);
    let after = common::publish_as_agencies(&nats.url(), std::slice::from_ref(&referral)).await;
    node.projector()
        .wait_for(
            &[(after[0].stream.clone(), after[0].sequence)],
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert!(list(&node, CSC).await.is_empty(), "nothing is late on Monday");

    // Two working days pass on the node's clock; the node's timer notices the breach by itself.
    clock.set(THURSDAY_10H);
    let mut breaches = Vec::new();
    for _ in 0..2 {
        breaches.push(next_breach(&mut csc_watch, "breach").await);
    }
    breaches.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
    let rules: Vec<&str> = breaches.iter().map(|b| b.rule_id.as_str()).collect();
    assert_eq!(rules, ["T01", "T02"], "referral decision and acknowledgement");
    let t01 = &breaches[0];
    assert_eq!(t01.rule_name, "referral decision");
    assert_eq!(t01.limit, "1 working day");
    let start = t01.started_by.as_ref().unwrap();
    assert_eq!(
        (
            start.event_id.as_str(),
            start.event_type.as_str(),
            start.agency_id.as_str()
        ),
        (referral.event_id.as_str(), "ReferralReceived", CSC)
    );
    assert_eq!(timestamp_millis(t01.due_at.as_ref().unwrap()), TUESDAY_END);
    assert_eq!(t01.resolution(), pb::BreachResolution::Open);
    assert_eq!((t01.late_ms, t01.late_units), (THURSDAY_10H - TUESDAY_END, 2));
    assert!(t01.resolved_by.is_none());

    // The owner lists them; a school with no relationship to the child is told nothing.
    let listed = list(&node, CSC).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(list(&node, "school-oakwood").await.is_empty());

    // Thursday 10:00: the decision comes, two working days late.
    let decision = envelope(
        THURSDAY_10H,
        Kind::ReferralDecisionRecorded(pb::ReferralDecisionRecorded {
            outcome: pb::ReferralOutcome::S17Assessment as i32,
            rationale: "assessment needed".into(),
        }),
    );
    common::publish_as_agencies(&nats.url(), std::slice::from_ref(&decision)).await;
    let closed = next_breach(&mut csc_watch, "closed breach").await;
    assert_eq!(closed.rule_id, "T01");
    assert_eq!(closed.resolution(), pb::BreachResolution::MetLate);
    assert_eq!(closed.resolved_by.as_ref().unwrap().event_id, decision.event_id);
    assert_eq!(
        (closed.late_ms, closed.late_units),
        (THURSDAY_10H - TUESDAY_END, 2)
    );
    // Due Tuesday, decided Thursday: Wednesday and Thursday, in words.
    assert_eq!(closed.late, "2 working days", "{closed:?}");

    // A rebuild from the streams, evaluated at the same moment, exports the same bytes.
    let live = node.projector().clone();
    node.stop(Duration::from_secs(5)).await;
    let registry = common::registry();
    let policy = common::node_config(&nats, data.path()).policy;
    let rebuilt = Arc::new(
        Projector::temporary()
            .unwrap()
            .with_views(ViewSpec::new(Arc::new(policy), &registry))
            .with_deadlines(halcyon_projector::DeadlineSpec::new(std::sync::Arc::new(
                halcyon_timescales::Timescales::england(),
            ))),
    );
    let operator = common::operator(&nats).await;
    halcyon_review::rebuild::project_streams(
        &operator,
        &rebuilt,
        &halcyon_review::rebuild::Until::End,
        &|_, _| {},
    )
    .await
    .unwrap();
    live.derive_all_views().unwrap();
    live.record_all_breaches(THURSDAY_10H).unwrap();
    rebuilt.record_all_breaches(THURSDAY_10H).unwrap();
    let (live, rebuilt) = (export(&live), export(&rebuilt));
    assert!(
        live.lines().any(|l| l.starts_with("B ")),
        "breach records exported"
    );
    assert_eq!(live, rebuilt);
}

/// A node whose clock the test moves, reading `at` at first (no bound on its distance from NATS time).
async fn node_at(nats: &NatsServer, data: &std::path::Path, at: i64) -> (Clock, Node) {
    let clock = Clock::manual(at);
    let node = common::start_node(NodeConfig {
        clock: clock.clone(),
        peers: common::clock_unguarded(),
        ..common::node_config(nats, data)
    })
    .await
    .expect("node starts");
    (clock, node)
}

/// Polls (bounded) until `ready` holds.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !ready().await {
        assert!(std::time::Instant::now() < until, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_restarted_node_records_the_breaches_it_missed_while_down() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let config = |clock: &Clock| NodeConfig {
        clock: clock.clone(),
        peers: common::clock_unguarded(),
        ..common::node_config(&nats, data.path())
    };
    let monday = Clock::manual(MONDAY_10H + 3_600_000);
    let node = common::start_node(config(&monday)).await.expect("node starts");
    let referral = referral_at(MONDAY_10H);
    common::publish_as_agencies(&nats.url(), std::slice::from_ref(&referral)).await;
    let projector = node.projector().clone();
    eventually("the referral's deadlines scheduled", || {
        let p = projector.clone();
        async move { p.next_due_ms().unwrap() == Some(TUESDAY_END) }
    })
    .await;
    assert!(projector.breaches(None).unwrap().is_empty());
    drop(projector);
    node.stop(Duration::from_secs(5)).await;

    // The node is down over Tuesday's due time; it comes back on Thursday.
    let node = common::start_node(config(&Clock::manual(THURSDAY_10H)))
        .await
        .expect("node restarts");
    // Polled (bounded): the breaches are recorded at start, before any watch could be opened.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = list(&node, CSC).await;
        if listed.len() == 2 {
            break listed;
        }
        assert!(
            std::time::Instant::now() < until,
            "missed breaches recorded within 20 s: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t01 = listed.iter().find(|b| b.rule_id == "T01").expect("T01");
    assert_eq!(t01.started_by.as_ref().unwrap().event_id, referral.event_id);
    assert_eq!(t01.resolution(), pb::BreachResolution::Open);
    assert_eq!(t01.late_units, 2);
    node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_an_agency_the_policy_entitles_to_the_start_fact_is_told_of_the_breach_too() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let (clock, node) = node_at(&nats, data.path(), MONDAY_10H + 3 * 3_600_000).await;
    let mut client = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mut police_watch = common::watch(&mut client, "demo-police-sy").await;
    // The referral; then a strategy discussion with the police that opens a section 47 enquiry, which
    // entitles the police to the referral (docs/sharing.md, D2: "Q (s47 / MASH)").
    let referral = referral_at(MONDAY_10H);
    let discussion = envelope(
        MONDAY_10H + 3_600_000,
        Kind::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
            participant_agency_ids: vec!["police-sy".into()],
            section47_decided: true,
            summary: "joint enquiry".into(),
        }),
    );
    let s47 = envelope(
        MONDAY_10H + 7_200_000,
        Kind::Section47EnquiryStarted(pb::Section47EnquiryStarted {
            summary: "joint".into(),
        }),
    );
    let after = common::publish_as_agencies(&nats.url(), &[referral.clone(), discussion, s47]).await;
    node.projector()
        .wait_for(
            &[(after[0].stream.clone(), after[0].sequence)],
            Duration::from_secs(20),
        )
        .await
        .unwrap();

    clock.set(THURSDAY_10H);
    let t01 = loop {
        let b = next_breach(&mut police_watch, "breach for the police").await;
        if b.rule_id == "T01" {
            break b;
        }
    };
    assert_eq!(t01.started_by.as_ref().unwrap().event_id, referral.event_id);
    assert_eq!(t01.started_by.as_ref().unwrap().agency_id, CSC);
    assert_eq!(t01.late_units, 2);
    assert!(
        list(&node, "police-sy").await.iter().any(|b| b.rule_id == "T01"),
        "listed for the police too"
    );
    assert!(list(&node, "school-oakwood").await.is_empty());
    node.stop(Duration::from_secs(5)).await;
}

/// Issue 19: a listing of every child's breaches comes a page at a time, each page costing what it holds.
/// Three children each referred on Monday with nothing after: by Thursday each has T01 and T02 breached, six
/// in all, in (child, rule) order; read one record per page they come back whole, in that order, and the last
/// page says no more follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaches_of_every_child_come_a_page_at_a_time() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let (clock, node) = node_at(&nats, data.path(), MONDAY_10H + 3_600_000).await;
    let children = common::children(3).children;
    let referrals: Vec<pb::Envelope> = children
        .iter()
        .map(|c| {
            let mut e = referral_at(MONDAY_10H);
            e.child.as_mut().unwrap().nhs_number = c.nhs.to_string();
            e
        })
        .collect();
    let after = common::publish_as_agencies(&nats.url(), &referrals).await;
    let wanted: Vec<(String, u64)> = after.iter().map(|p| (p.stream.clone(), p.sequence)).collect();
    node.projector()
        .wait_for(&wanted, Duration::from_secs(20))
        .await
        .unwrap();
    clock.set(THURSDAY_10H);
    // The node's timer records the six breaches; wait until the listing holds them all.
    let mut whole = Vec::new();
    for _ in 0..200 {
        whole = list(&node, CSC).await;
        if whole.len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids: Vec<String> = children
        .iter()
        .map(|c| halcyon_schema::ChildId::from_nhs(&c.nhs).to_string())
        .collect();
    ids.sort();
    let expected: Vec<(String, String)> = ids
        .iter()
        .flat_map(|c| [(c.clone(), "T01".to_string()), (c.clone(), "T02".to_string())])
        .collect();
    let of = |breaches: &[pb::DeadlineBreach]| -> Vec<(String, String)> {
        breaches
            .iter()
            .map(|b| (b.child_id.clone(), b.rule_id.clone()))
            .collect()
    };
    assert_eq!(of(&whole), expected, "one page of the default size holds all six");

    let mut client = DeadlineServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let (mut pages, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_breaches(common::authorised(
                pb::ListBreachesRequest {
                    context: Some(common::context(Purpose::Safeguarding, &[])),
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
                "demo-csc-rotherham",
            ))
            .await
            .unwrap()
            .into_inner();
        pages.push(of(&page.breaches));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages.len() <= 6, "the pages end");
    }
    let expected_pages: Vec<Vec<(String, String)>> = expected.iter().map(|b| vec![b.clone()]).collect();
    assert_eq!(
        pages, expected_pages,
        "one breach a page, in order, and no token after the last"
    );
    let refused = client
        .list_breaches(common::authorised(
            pb::ListBreachesRequest {
                context: Some(common::context(Purpose::Safeguarding, &[])),
                page_token: "zz".into(),
                ..Default::default()
            },
            "demo-csc-rotherham",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    node.stop(Duration::from_secs(5)).await;
}

/// A flag is not a case file: agencies that see a looked-after period only as the CP-IS flag (A&E, the GP,
/// the police: D1 "F") are not told that its first review was missed. Breach T15 (first looked-after review
/// within 20 working days) is listed for the authority that holds the case; the agencies shown only the
/// flag learn nothing of the review (D5, which A&E's and the police's boxes do not open), not even that it
/// has not happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_not_shown_to_agencies_that_see_its_start_only_as_a_flag() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let (clock, node) = node_at(&nats, data.path(), MONDAY_10H + 3_600_000).await;
    let looked_after = envelope(
        MONDAY_10H,
        Kind::LookedAfterPeriodStarted(pb::LookedAfterPeriodStarted {
            legal_status: pb::LegalStatus::S20 as i32,
            contact: Some(pb::AuthorityContact {
                office_hours_phone: "01632 960001".into(),
                out_of_hours_phone: "01632 960002".into(),
            }),
            ..Default::default()
        }),
    );
    let after = common::publish_as_agencies(&nats.url(), std::slice::from_ref(&looked_after)).await;
    // A&E is shown the looked-after period, as a flag.
    let mut client = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let flag = common::find_by_nhs(&mut client, "health-rgh-ed", NHS, Purpose::Safeguarding, &after)
        .await
        .expect("A&E is shown the flag");
    assert_eq!(flag.facts.len(), 1);
    assert_eq!(flag.facts[0].projection, pb::Projection::Flag as i32);

    // Five weeks on: no review was held.
    clock.set(MONDAY_10H + 35 * 86_400_000);
    eventually("T15 listed for the authority", || async {
        list(&node, CSC).await.iter().any(|b| b.rule_id == "T15")
    })
    .await;
    for agency in ["health-rgh-ed", "police-sy"] {
        let shown = list(&node, agency).await;
        assert!(
            shown.is_empty(),
            "{agency} sees the looked-after period only as a flag, and was told of {shown:?}"
        );
    }
    node.stop(Duration::from_secs(5)).await;
}
