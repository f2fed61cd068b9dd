//! Issue 3: the write path as a system of record. Over a real nats-server started with deploy/nats/: an
//! agency cannot publish as, or read, another agency; an envelope claiming another agency is quarantined;
//! the same event is kept once; a stale expected sequence is a conflict naming both sequences.

use crate::common;

use std::time::Duration;

use halcyon_bus::{Credentials, PublishError, Publisher, PublisherConfig, connect, connect_watching};
use halcyon_grpc::pb;
use halcyon_schema::EventId;
use halcyon_testkit::{NatsServer, Scenario};
use prost::Message;

fn scenario() -> Scenario {
    common::children(2)
}

async fn agency_publisher(nats: &NatsServer, agency: &str) -> Publisher {
    let (client, violations) = connect_watching(
        &nats.url(),
        &Credentials::agency(agency, &format!("{agency}-dev-secret")),
        "test",
    )
    .await
    .unwrap();
    let config = PublisherConfig {
        ack_timeout: Duration::from_millis(500),
        attempts_max: 2,
        ..Default::default()
    };
    Publisher::new(client, config).with_violations(violations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_cannot_publish_on_or_read_another_agencys_stream() {
    let h = common::Harness::start().await;
    let s = scenario();
    let school_event = s
        .envelopes
        .iter()
        .find(|e| e.agency_id == "school-oakwood")
        .unwrap();

    // Police publishing the school's event (on the school's subject) is refused by the server.
    let police = agency_publisher(&h.nats, "police-sy").await;
    match police.publish(school_event, None).await {
        Err(PublishError::Denied(reason)) => assert!(
            reason.to_lowercase().contains("permissions violation"),
            "{reason}"
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(
        common::stream_messages(&common::operator(&h.nats).await, "EVENTS_SCHOOL_OAKWOOD").await,
        0
    );

    // Police cannot reach the JetStream API: no stream info, no consumer on the school's stream.
    let (client, violations) = connect_watching(
        &h.nats.url(),
        &Credentials::agency("police-sy", "police-sy-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(client.clone());
    assert!(
        js.get_stream("EVENTS_SCHOOL_OAKWOOD").await.is_err(),
        "police read the school's stream info"
    );
    assert!(
        halcyon_bus::ordered_messages(&js, "EVENTS_SCHOOL_OAKWOOD", 1)
            .await
            .is_err(),
        "police created a consumer on the school's stream"
    );
    // Nor subscribe to the school's subjects directly.
    let _sub = client.subscribe("halcyon.events.school-oakwood.>").await.unwrap();
    client.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !violations
        .all()
        .iter()
        .any(|v| v.contains("Subscription to \"halcyon.events.school-oakwood.>\""))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no subscription violation reported: {:?}",
            violations.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_on_one_agencys_subject_claiming_another_is_quarantined() {
    let h = common::Harness::start().await;
    let s = scenario();
    // Police's own subject, but the envelope claims to come from the school. A raw JetStream publish: the
    // library publisher would refuse it before sending.
    let mut forged = s
        .envelopes
        .iter()
        .find(|e| e.agency_id == "police-sy")
        .unwrap()
        .clone();
    forged.agency_id = "school-oakwood".into();
    let subject = format!("halcyon.events.police-sy.{}", forged.case_id);
    let client = connect(
        &h.nats.url(),
        &Credentials::agency("police-sy", "police-sy-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    let ack = js
        .publish(subject, forged.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    h.node
        .projector()
        .wait_for(&[(ack.stream.clone(), ack.sequence)], Duration::from_secs(20))
        .await
        .unwrap();

    let q = h
        .node
        .projector()
        .quarantine(Some(&"police-sy".parse().unwrap()))
        .unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        q[0].reasons().contains("agency_id: envelope claims \"school-oakwood\" but was published on agency \"police-sy\"'s subject"),
        "{}",
        q[0].reasons()
    );
    // The school's listing does not include it: it was never the school's event.
    assert!(
        h.node
            .projector()
            .quarantine(Some(&"school-oakwood".parse().unwrap()))
            .unwrap()
            .is_empty()
    );

    // Over gRPC: police list their own quarantine; the school may not list police's.
    let mut client = h.client().await;
    let mine = client
        .list_quarantine(common::authorised(
            pb::ListQuarantineRequest::default(),
            "demo-police-sy",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.events.len(), 1);
    let theirs = client
        .list_quarantine(common::authorised(
            pb::ListQuarantineRequest {
                agency_id: "police-sy".into(),
            },
            "demo-school-oakwood",
        ))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), tonic::Code::PermissionDenied);
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_is_kept_once_across_retries_restarts_and_late_resends() {
    let mut h = common::Harness::start().await;
    let s = scenario();
    let events: Vec<&pb::Envelope> = s
        .envelopes
        .iter()
        .filter(|e| e.agency_id == "csc-rotherham")
        .take(4)
        .collect();
    let csc = agency_publisher(&h.nats, "csc-rotherham").await;
    let first = csc.publish(events[0], None).await.unwrap();
    let again = csc.publish(events[0], None).await.unwrap();
    assert!(again.duplicate && again.position == first.position, "{again:?}");

    // The server restarts mid-run (SIGKILL): the re-sent event is still recognised.
    h.nats.restart();
    let csc = agency_publisher(&h.nats, "csc-rotherham").await;
    let after_restart = csc.publish(events[0], None).await.unwrap();
    assert!(after_restart.duplicate, "{after_restart:?}");
    let second = csc.publish(events[1], None).await.unwrap();
    assert_eq!(
        common::stream_messages(&common::operator(&h.nats).await, "EVENTS_CSC_ROTHERHAM").await,
        2
    );

    // A re-send after the dedupe window (modelled by a publish without Nats-Msg-Id, which is what the
    // server does once the window has passed) is stored again but projected once.
    let client = connect(
        &h.nats.url(),
        &Credentials::agency("csc-rotherham", "csc-rotherham-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let late = async_nats::jetstream::new(client)
        .publish(Scenario::subject(events[0]), events[0].encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        common::stream_messages(&common::operator(&h.nats).await, "EVENTS_CSC_ROTHERHAM").await,
        3
    );
    h.node
        .projector()
        .wait_for(&[(late.stream.clone(), late.sequence)], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        h.node.projector().counts().unwrap(),
        (2, 0, 1),
        "(facts, quarantined, duplicates)"
    );
    let _ = second;
    h.node.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_expected_sequence_is_a_conflict_naming_both_sequences() {
    let h = common::Harness::start().await;
    let s = scenario();
    let case: Vec<pb::Envelope> = {
        let first = s
            .envelopes
            .iter()
            .find(|e| e.agency_id == "csc-rotherham")
            .unwrap();
        s.envelopes
            .iter()
            .filter(|e| e.case_id == first.case_id && e.agency_id == first.agency_id)
            .take(3)
            .cloned()
            .collect()
    };
    let csc = agency_publisher(&h.nats, "csc-rotherham").await;
    let one = csc.publish(&case[0], Some(0)).await.unwrap();
    let two = csc.publish(&case[1], Some(one.position.sequence)).await.unwrap();
    // Someone decides on stale state: expects the case to end at `one`, but `two` is there.
    match csc.publish(&case[2], Some(one.position.sequence)).await {
        Err(PublishError::Conflict { expected, actual, .. }) => {
            assert_eq!(expected, one.position.sequence);
            assert_eq!(actual, two.position.sequence.to_string());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let _ = EventId::new();
    h.node.stop(Duration::from_secs(5)).await;
}
