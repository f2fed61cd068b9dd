//! Issue 3: bad input is kept and explained, never dropped, never stops the projector. Six kinds of bad
//! event among valid ones, over real NATS: every message in the streams is either projected or quarantined
//! with its reason.

use crate::common;

use std::time::Duration;

use halcyon_bus::{Credentials, connect};
use halcyon_testkit::Scenario;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_kinds_of_bad_input_are_quarantined_and_the_rest_projected() {
    let h = common::Harness::start().await;
    let s = common::children(2);
    let police: Vec<_> = s
        .envelopes
        .iter()
        .filter(|e| e.agency_id == "police-sy")
        .cloned()
        .collect();
    let template = police[0].clone();
    let fresh = |e: &halcyon_grpc::pb::Envelope| {
        let mut e = e.clone();
        e.event_id = halcyon_schema::EventId::new().to_string();
        e
    };
    let mut unknown_version = fresh(&template);
    unknown_version.schema_version = 99;
    let mut mismatch = fresh(&template);
    mismatch.agency_id = "csc-rotherham".into();
    let mut bad_nhs = fresh(&template);
    bad_nhs.child.as_mut().unwrap().nhs_number = "9876544321".into();
    let mut missing = fresh(&template);
    missing.occurred_at = None;
    let full = fresh(&template).encode_to_vec();
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (
            b"\x00\xffnot protobuf at all\x13".to_vec(),
            "payload: cannot decode",
        ),
        (full[..full.len() / 2].to_vec(), "payload: cannot decode"),
        (
            unknown_version.encode_to_vec(),
            "schema_version: unknown version 99",
        ),
        (
            mismatch.encode_to_vec(),
            "agency_id: envelope claims \"csc-rotherham\"",
        ),
        (bad_nhs.encode_to_vec(), "child.nhs_number: invalid NHS number"),
        (missing.encode_to_vec(), "occurred_at: missing"),
    ];

    let client = connect(
        &h.nats.url(),
        &Credentials::agency("police-sy", "police-sy-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = Scenario::subject(&template);
    let mut last = None;
    // Valid and bad events interleaved: good, bad, good, bad...
    for (i, good) in police.iter().enumerate() {
        let ack = js
            .publish(Scenario::subject(good), good.encode_to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
        last = Some((ack.stream, ack.sequence));
        if let Some((payload, _)) = bad.get(i) {
            let ack = js
                .publish(subject.clone(), payload.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
            last = Some((ack.stream, ack.sequence));
        }
    }
    assert!(
        police.len() >= bad.len(),
        "the scenario interleaves every bad kind"
    );
    let (stream, sequence) = last.unwrap();
    h.node
        .projector()
        .wait_for(&[(stream.clone(), sequence)], Duration::from_secs(30))
        .await
        .unwrap();

    let (facts, quarantined, duplicates) = h.node.projector().counts().unwrap();
    assert_eq!(
        facts + quarantined + duplicates,
        sequence,
        "every message in the stream is accounted for"
    );
    assert_eq!(
        (facts as usize, quarantined as usize, duplicates),
        (police.len(), bad.len(), 0)
    );
    let records = h.node.projector().quarantine(None).unwrap();
    for (record, (_, reason)) in records.iter().zip(&bad) {
        assert!(
            record.reasons().contains(reason),
            "expected {reason:?} in {:?}",
            record.reasons()
        );
        assert_eq!(record.stream, stream);
        assert_eq!(record.agency.as_deref(), Some("police-sy"));
    }
    // The projector kept going: a later valid event is projected.
    let later = fresh(&template);
    let ack = js
        .publish(subject, later.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    h.node
        .projector()
        .wait_for(&[(ack.stream, ack.sequence)], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(h.node.projector().counts().unwrap().0 as usize, police.len() + 1);
    h.node.stop(Duration::from_secs(5)).await;
}
