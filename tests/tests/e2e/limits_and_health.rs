//! Issue 6: limits and health. Chronology pages add up to the view and are capped; a node at its
//! concurrency limit sheds calls with RESOURCE_EXHAUSTED; health is NOT_SERVING while the AUDIT stream is
//! unreachable and SERVING again when it returns.

use crate::common;

use std::time::Duration;

use halcyon_grpc::pb;
use halcyon_policy::Purpose;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronology_pages_add_up_to_the_view_and_are_capped() {
    let h = common::Harness::start().await;
    let s = common::children(1);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let mut client = h.client().await;
    let view = common::find_by_nhs(
        &mut client,
        "police-sy",
        &s.children[0].nhs.to_string(),
        Purpose::Safeguarding,
        &after,
    )
    .await
    .unwrap();
    let mut facts = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = pb::GetChronologyRequest {
            context: Some(common::context(Purpose::Safeguarding, &[])),
            child_id: view.child_id.clone(),
            page_size: 5,
            page_token: token,
        };
        let page = client
            .get_chronology(common::authorised(request, "demo-police-sy"))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        facts.extend(page.facts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages > 1);
    assert_eq!(facts, view.facts, "the pages, in order, are the view");
    let too_big = pb::GetChronologyRequest {
        context: Some(common::context(Purpose::Safeguarding, &[])),
        child_id: view.child_id.clone(),
        page_size: 10_000,
        page_token: String::new(),
    };
    let err = client
        .get_chronology(common::authorised(too_big, "demo-police-sy"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_its_limit_sheds_calls() {
    let nats = halcyon_testkit::NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let mut config = common::node_config(&nats, data.path());
    config.concurrency_max = 1;
    config.read_wait = Duration::from_secs(3);
    let node = common::start_node(config).await.unwrap();
    let client =
        halcyon_grpc::pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
            .await
            .unwrap();
    // The one slot is held by a call waiting for a position the node will not reach.
    let far = [halcyon_bus::Position {
        stream: "EVENTS_POLICE_SY".into(),
        sequence: 1_000_000,
    }];
    // The holder may itself be shed if it arrives while the probe below holds the slot; then it starts again.
    let hold = |mut waiting: halcyon_grpc::pb::query_service_client::QueryServiceClient<_>| {
        let far = far.clone();
        tokio::spawn(async move {
            common::find_by_nhs(
                &mut waiting,
                "police-sy",
                "9434765919",
                Purpose::Safeguarding,
                &far,
            )
            .await
        })
    };
    let mut holder = hold(client.clone());
    let mut other = client.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let shed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call was shed within 60 s"
        );
        if holder.is_finished() {
            let status = holder.await.unwrap().unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::ResourceExhausted,
                "the holder finished before any call was shed: {status:?}"
            );
            holder = hold(client.clone());
        }
        match common::find_by_nhs(&mut other, "police-sy", "9434765919", Purpose::Safeguarding, &[]).await {
            Err(status) if status.code() == tonic::Code::ResourceExhausted => break status,
            // The holder had not yet taken the slot; nothing is known about this child.
            Err(status) if status.code() == tonic::Code::NotFound => tokio::task::yield_now().await,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(shed.message().contains("concurrency limit"), "{}", shed.message());
    let held = holder.await.unwrap().unwrap_err();
    assert_eq!(
        held.code(),
        tonic::Code::DeadlineExceeded,
        "read-your-writes gives up with a status that says so"
    );
    assert!(
        held.message().contains("EVENTS_POLICE_SY:1000000"),
        "{}",
        held.message()
    );
    node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_audit_stream() {
    let mut h = common::Harness::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let wait_for = async |health: &mut HealthClient<tonic::transport::Channel>, wanted: ServingStatus| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = health
                .check(status("halcyon.v1.QueryService"))
                .await
                .unwrap()
                .into_inner()
                .status();
            if now == wanted {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health stayed {now:?}, wanted {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for(&mut health, ServingStatus::Serving).await;
    h.nats.kill();
    wait_for(&mut health, ServingStatus::NotServing).await;
    h.nats.start_again();
    wait_for(&mut health, ServingStatus::Serving).await;
    h.node.stop(Duration::from_secs(5)).await;
}
