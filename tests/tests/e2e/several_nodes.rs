//! Issue 17: several nodes at once over one JetStream. Two live nodes answer the same request at the same
//! position with the same bytes and export the same read models; a client that loses its node repeats on
//! the other with its position; an A&E flag check on one node reaches the owning authority watching on the
//! other, and an owner that was not watching resumes from its last notification, receiving each later one
//! once; one node keeps the checkpoints at a time; a node whose clock runs an hour ahead records no breach
//! early; a node with another policy is flagged by its peers.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use halcyon_grpc::pb;
use halcyon_node::NodeConfig;
use halcyon_policy::Purpose;
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message as _;
use tokio::time::Instant;

fn named(nats: &NatsServer, data: &std::path::Path, id: &str) -> NodeConfig {
    NodeConfig {
        node_id: id.into(),
        ..common::node_config(nats, data)
    }
}

async fn client(
    node: &halcyon_node::Node,
) -> pb::query_service_client::QueryServiceClient<tonic::transport::Channel> {
    pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap()
}

/// The next access notification on a watch (facts still being projected may come first); `None` if none
/// comes within `wait`.
async fn next_notification(
    watch: &mut tonic::Streaming<pb::WatchEvent>,
    wait: Duration,
) -> Option<(String, pb::AccessNotification)> {
    let until = Instant::now() + wait;
    loop {
        let event = tokio::time::timeout_at(until, watch.next()).await.ok()??.unwrap();
        if let Some(pb::watch_event::Kind::Access(n)) = event.kind {
            return Some((event.position, n));
        }
    }
}

/// Nodes "node-a" and "node-b" on `nats`, each with its own data folder (kept while the folders live).
async fn two_nodes(nats: &NatsServer) -> (halcyon_node::Node, halcyon_node::Node, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = common::start_node(named(nats, dirs[0].path(), "node-a"))
        .await
        .expect("node a starts");
    let b = common::start_node(named(nats, dirs[1].path(), "node-b"))
        .await
        .expect("node b starts");
    (a, b, dirs)
}

/// Waits (at most 10 s) until `node`'s health says NOT_SERVING for `service`.
async fn health_not_serving(node: &halcyon_node::Node, service: &str, what: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            return;
        }
        assert!(Instant::now() < until, "health did not report {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn export(p: &halcyon_projector::Projector) -> Vec<u8> {
    p.derive_all_views().unwrap();
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_answer_alike_notify_each_other_s_watchers_and_resume() {
    let nats = NatsServer::start_with_auth();
    let (a, b, _dirs) = two_nodes(&nats).await;
    let s = common::children(2);
    let after = common::publish_as_agencies(&nats.url(), &s.envelopes).await;
    let child = s.children.iter().find(|c| c.on_plan).expect("a child on a plan");
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);

    // 1. The same request at the same position: the same answer bytes from both nodes.
    let find = || {
        common::authorised(
            pb::FindChildRequest {
                context: Some(common::context(Purpose::Safeguarding, &after)),
                identifier: Some(pb::find_child_request::Identifier::NhsNumber(
                    child.nhs.to_string(),
                )),
            },
            "demo-csc-rotherham",
        )
    };
    let from_a = ca.find_child(find()).await.unwrap().into_inner();
    let from_b = cb.find_child(find()).await.unwrap().into_inner();
    assert!(!from_a.facts.is_empty());
    assert_eq!(
        from_a.encode_to_vec(),
        from_b.encode_to_vec(),
        "node a and node b answered differently"
    );

    // 3. The owning authority watches on node B; A&E checks the flag on node A.
    let watch = |resume_after: &str| {
        common::authorised(
            pb::WatchRequest {
                context: Some(common::context(Purpose::Safeguarding, &[])),
                resume_after: resume_after.to_owned(),
            },
            "demo-csc-rotherham",
        )
    };
    let mut on_b = cb.watch(watch("")).await.unwrap().into_inner();
    let check = || {
        common::authorised(
            pb::CheckFlagRequest {
                context: Some(common::context(Purpose::DirectCare, &after)),
                nhs_number: child.nhs.to_string(),
            },
            "demo-health-rgh-ed",
        )
    };
    let first = ca.check_flag(check()).await.unwrap().into_inner();
    assert!(first.child_protection_plan && first.owner_notified, "{first:?}");
    let (p1, n1) = next_notification(&mut on_b, Duration::from_secs(20))
        .await
        .expect("the check on node a notified the owner watching on node b");
    assert_eq!(
        (n1.by_agency_id.as_str(), n1.method.as_str()),
        ("health-rgh-ed", "CheckFlag")
    );
    assert_eq!(n1.child_id, first.child_id);
    drop(on_b);

    // The owner is not watching during the second check; it resumes (on node A this time) from its last
    // position and receives the second notification, and only that one.
    // The flag answer carries the earlier checks of the child's flag (agency, role, time), once node A
    // has indexed the first check's access record from AUDIT.
    let child_id: halcyon_schema::ChildId = first.child_id.parse().unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while a
        .projector()
        .recent_flag_accesses(child_id, 25)
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < until,
            "the first check was not indexed within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = ca.check_flag(check()).await.unwrap().into_inner();
    assert!(second.owner_notified);
    assert_eq!(second.recent_accesses.len(), 1, "{:?}", second.recent_accesses);
    let earlier = &second.recent_accesses[0];
    assert_eq!(earlier.agency_id, "health-rgh-ed");
    assert!(!earlier.agency_name.is_empty() && !earlier.role.is_empty() && earlier.at.is_some());
    assert!(
        first.recent_accesses.is_empty(),
        "nobody had checked before the first check"
    );
    let mut resumed = ca.watch(watch(&p1)).await.unwrap().into_inner();
    let (p2, n2) = next_notification(&mut resumed, Duration::from_secs(20))
        .await
        .expect("the notification made while nobody watched is delivered on resuming");
    assert_ne!(p2, p1);
    assert_eq!(n2.child_id, first.child_id);
    assert!(
        next_notification(&mut resumed, Duration::from_secs(3))
            .await
            .is_none(),
        "a notification was delivered twice to a watcher that resumed"
    );
    // A resume position that is not one is refused, naming the field.
    let bad = ca.watch(watch("yesterday")).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("resume_after"), "{}", bad.message());

    // AUDIT holds each call's record with the answering node's id.
    let js = common::operator(&nats).await;
    let audit = halcyon_bus::checkpoint::chain_messages(&js, "AUDIT", 1, None)
        .await
        .unwrap();
    let total = common::stream_messages(&js, "AUDIT").await;
    let mut audit = std::pin::pin!(audit);
    let mut answered_by = BTreeSet::new();
    let mut notifying = 0;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), audit.next()).await {
        for r in pb::AccessRecords::decode(m.payload.as_ref()).unwrap().records {
            answered_by.insert((r.method.clone(), r.node_id.clone()));
            if r.notified_agency_ids == ["csc-rotherham"] {
                assert_eq!((r.method.as_str(), r.node_id.as_str()), ("CheckFlag", "node-a"));
                notifying += 1;
            }
        }
        if m.sequence >= total {
            break;
        }
    }
    assert!(
        answered_by.contains(&("FindChild".into(), "node-a".into())),
        "{answered_by:?}"
    );
    assert!(
        answered_by.contains(&("FindChild".into(), "node-b".into())),
        "{answered_by:?}"
    );
    assert_eq!(
        notifying, 2,
        "each flag check's record names the owner it notified"
    );

    // 2. Node A goes away mid-session; the client repeats on node B with its position token.
    let view = |child_id: &str| {
        common::authorised(
            pb::GetChildViewRequest {
                context: Some(common::context(Purpose::Safeguarding, &after)),
                child_id: child_id.to_owned(),
            },
            "demo-police-sy",
        )
    };
    let before = ca
        .get_child_view(view(&from_a.child_id))
        .await
        .unwrap()
        .into_inner();
    let (pa, pb_) = (a.projector(), b.projector());
    a.stop(Duration::ZERO).await;
    assert!(
        ca.get_child_view(view(&from_a.child_id)).await.is_err(),
        "node a is gone"
    );
    let repeated = cb
        .get_child_view(view(&from_a.child_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        before.encode_to_vec(),
        repeated.encode_to_vec(),
        "node b answered otherwise than node a did"
    );

    // 1. Their exports are byte-identical after the same events.
    b.stop(Duration::from_secs(5)).await;
    assert_eq!(export(&pa), export(&pb_), "the two nodes' read models differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_keeps_the_checkpoints_and_another_takes_over_one_unbroken_chain() {
    use halcyon_bus::nodes::{bucket, duty_holder};
    let nats = NatsServer::start_with_auth();
    let (a, b, _dirs) = two_nodes(&nats).await;
    let s = Scenario::generate(&ScenarioConfig::default(), &ScenarioAgencies::deploy());
    let (first, rest) = s.envelopes.split_at(s.envelopes.len() / 2);
    let published = common::publish_as_agencies(&nats.url(), first).await;
    let js = common::operator(&nats).await;
    let kv = bucket(&js).await.unwrap();
    let streams = halcyon_bus::list_event_streams(&js).await.unwrap();
    for p in &published {
        common::wait_checkpointed(&js, &p.stream, p.sequence).await;
    }
    let (holder, _, _) = duty_holder(&kv, halcyon_node::chain::DUTY)
        .await
        .unwrap()
        .expect("a holder");
    let (keeper, standby) = if holder.node_id == "node-a" {
        (a, b)
    } else {
        (b, a)
    };
    let written_by = |js: async_nats::jetstream::Context| async move {
        halcyon_bus::checkpoint::read_checkpoints(&js, None)
            .await
            .unwrap()
            .checkpoints
            .into_iter()
            .map(|c| c.checkpoint.node_id)
            .collect::<Vec<_>>()
    };
    let before = written_by(js.clone()).await;
    assert!(!before.is_empty());
    assert!(
        before.iter().all(|n| *n == holder.node_id),
        "only the holder wrote checkpoints: {before:?}"
    );

    // The holder stops; the other takes the duty and checkpoints what follows.
    keeper.stop(Duration::from_secs(5)).await;
    for p in common::publish_as_agencies(&nats.url(), rest).await {
        common::wait_checkpointed(&js, &p.stream, p.sequence).await;
    }
    let (now, _, _) = duty_holder(&kv, halcyon_node::chain::DUTY)
        .await
        .unwrap()
        .expect("a holder");
    assert_ne!(now.node_id, holder.node_id, "the duty passed to the other node");
    let after = written_by(js.clone()).await;
    assert!(
        after[before.len()..].iter().all(|n| *n == now.node_id),
        "{after:?}"
    );

    // Every stream intact, with one unbroken checkpoint chain across the hand-over.
    let text =
        std::fs::read_to_string(halcyon_testkit::workspace_root().join("deploy/keyring-dev.toml")).unwrap();
    let (keys, _) = halcyon_ledger::Keyring::from_toml(&text).unwrap();
    for st in &streams {
        let v = halcyon_bus::checkpoint::verify_stream(&js, st, &keys, &[])
            .await
            .unwrap();
        assert!(v.is_intact(), "{st}: {:?}", v.report);
    }
    standby.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_runs_an_hour_ahead_records_no_breach_early_and_nothing_twice() {
    use halcyon_projector::clock::Clock;
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let now = halcyon_schema::clock::now_ms();
    let clock = Clock::manual(now);
    let node = common::start_node(NodeConfig {
        clock: clock.clone(),
        ..named(&nats, data.path(), "node-skewed")
    })
    .await
    .expect("node starts");
    // Police protection is limited to 72 hours (T12): one started 72 hours less 30 minutes ago falls due in
    // half an hour, so a clock an hour ahead would breach it; one started 73 hours ago is due already.
    use halcyon_schema::pb::event::Kind;
    const NHS: &str = "9434765919";
    let hour = 3_600_000;
    let protection = |at_ms: i64, case: &str| {
        let mut e = halcyon_testkit::envelope(
            "police-sy",
            "pc-1",
            NHS,
            at_ms,
            Kind::PoliceProtectionStarted(halcyon_schema::pb::PoliceProtectionStarted {
                reason: "test".into(),
            }),
        );
        e.case_id = case.into();
        e
    };
    let due_soon = protection(now - 72 * hour + hour / 2, "CASE-SOON");
    let overdue = protection(now - 73 * hour, "CASE-LATE");
    common::publish_as_agencies(&nats.url(), &[overdue, due_soon]).await;
    let breaches = |p: &halcyon_projector::Projector| {
        let mut out = Vec::new();
        p.export(&mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("B "))
            .count()
    };
    // The overdue one is recorded at the right time.
    let until = Instant::now() + Duration::from_secs(30);
    // The test's clock stands still unless set: keep it on real time.
    let real = || halcyon_schema::clock::now_ms();
    while breaches(&node.projector()) < 1 {
        assert!(
            Instant::now() < until,
            "the overdue protection was not recorded as a breach within 30 s"
        );
        clock.step_to(real());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = breaches(&node.projector());
    assert_eq!(settled, 1);

    // An hour ahead: the guard trips at the next measurement, health says so, and nothing is recorded.
    clock.step_to(real() + hour);
    let mut state = node.membership.subscribe();
    tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| s.clock_skewed))
        .await
        .expect("the skew reported within 20 s")
        .unwrap();
    clock.step_to(real() + hour);
    let offset = node.membership.state().clock_offset_ms.unwrap();
    assert!((3_500_000..3_700_000).contains(&offset), "offset {offset} ms");
    health_not_serving(&node, halcyon_node::node::CLOCK, "the skew").await;
    // The timer wakes for the deadline due within the hour (the clock says it passed) and records nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        breaches(&node.projector()),
        settled,
        "a breach was recorded early by a clock an hour ahead"
    );

    // Set back: in bounds again, and nothing is recorded twice.
    clock.step_to(real());
    tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| !s.clock_skewed))
        .await
        .expect("back within bounds within 20 s")
        .unwrap();
    for _ in 0..30 {
        clock.step_to(real());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        breaches(&node.projector()),
        settled,
        "breaches recorded twice after the clock was set back"
    );
    node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_policy_is_flagged_by_its_peers_and_a_second_node_with_one_id_is_refused() {
    let nats = NatsServer::start_with_auth();
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let with_policy = |data: &std::path::Path, id: &str, digest: &str| {
        let mut config = named(&nats, data, id);
        config.peers.fingerprint.insert("policy".into(), digest.into());
        config
    };
    let a = common::start_node(with_policy(da.path(), "node-a", "england-2026.1 aaaa"))
        .await
        .unwrap();
    let b = common::start_node(with_policy(db.path(), "node-b", "england-2026.1 bbbb"))
        .await
        .unwrap();
    let mut state = b.membership.subscribe();
    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| !s.differences.is_empty()),
    )
    .await
    .expect("the difference found within 20 s")
    .unwrap()
    .clone();
    assert_eq!(
        seen.differences,
        ["node-a: policy differs (england-2026.1 bbbb here, england-2026.1 aaaa there)"]
    );
    health_not_serving(&b, halcyon_node::node::PEERS, "the difference").await;

    // A second live node with node a's id is refused, naming the id.
    let refused = common::start_node(with_policy(dc.path(), "node-a", "england-2026.1 aaaa"))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("node id \"node-a\" is in use"),
        "{refused}"
    );
    // Another instance writing node a's entry while it runs (two live nodes with one id) is flagged too.
    let as_node = halcyon_bus::connect(
        &nats.url(),
        &halcyon_bus::Credentials::user("halcyon-node", "node-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let kv = halcyon_bus::nodes::bucket(&async_nats::jetstream::new(as_node))
        .await
        .unwrap();
    let impostor = serde_json::json!({
        "node_id": "node-a", "instance": "someone-else", "version": "x", "fingerprint": {},
        "positions": {}, "clock_offset_ms": null, "listen": "", "duties": [], "sent_at_ms": 0
    });
    kv.put("node.node-a", impostor.to_string().into()).await.unwrap();
    let mut state = a.membership.subscribe();
    tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| s.id_in_use))
        .await
        .expect("the other writer of node a's entry found within 20 s")
        .unwrap();
    health_not_serving(&a, halcyon_node::node::PEERS, "the id in use").await;
    a.stop(Duration::from_secs(5)).await;
    b.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_is_not_taken_for_a_stalled_one() {
    let h = common::Harness::start().await;
    let s = common::children(1);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let mut client = h.client().await;
    // AUDIT holds records before the watch starts, and nothing arrives for longer than two stall checks.
    let check = || {
        common::authorised(
            pb::CheckFlagRequest {
                context: Some(common::context(Purpose::DirectCare, &after)),
                nhs_number: s.children[0].nhs.to_string(),
            },
            "demo-health-rgh-ed",
        )
    };
    client.check_flag(check()).await.unwrap();
    // Views, deadlines and signals derived and their notices passed, so the watch hears nothing at all.
    while h.node.projector().views_stale().unwrap() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut watch = common::watch(&mut client, "demo-csc-rotherham").await;
    tokio::time::sleep(halcyon_node::ingest::STALL_CHECK * 2 + Duration::from_secs(1)).await;
    let flag = client.check_flag(check()).await.unwrap().into_inner();
    assert!(flag.owner_notified);
    let (_, n) = next_notification(&mut watch, Duration::from_secs(20))
        .await
        .expect("the quiet watch still delivers");
    assert_eq!(n.by_agency_id, "health-rgh-ed");
    h.node.stop(Duration::from_secs(5)).await;
}
