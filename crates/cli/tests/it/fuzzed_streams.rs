//! Issue 14, as the outside fuzzer found it: mutated envelopes published over NATS on their agencies'
//! subjects (bit flips, truncations, wrong types, random strings, nesting at the decoder's limit…) among
//! valid ones. The node projects or quarantines every message and answers for every child; then
//! `halcyon export` of the live read models and `halcyon rebuild` from the streams both succeed and agree
//! byte for byte, with every message either a fact or a quarantine record.

use crate::common;

use std::collections::BTreeMap;

use common::{caught_up, free_port, halcyon_ok as halcyon, serve_at, stop};
use halcyon_grpc::pb::{self, query_service_client::QueryServiceClient};
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig};
use rand::SeedableRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_streams_are_projected_or_quarantined_and_rebuild_and_export_agree() {
    let nats = NatsServer::start();
    halcyon(&["streams", "apply", "--nats-url", &nats.url()]);
    let dir = tempfile::tempdir().unwrap();
    let (live, rebuilt) = (dir.path().join("live"), dir.path().join("rebuilt"));
    let port = free_port();
    let node = serve_at(&nats, &live, port, "fuzzed", false);

    let scenario = Scenario::generate(
        &ScenarioConfig {
            children: 30,
            seed: 14,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(14);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let n = 1500;
    for i in 0..n {
        let mut e = scenario.envelopes[i % scenario.envelopes.len()].clone();
        e.event_id = halcyon_schema::EventId::new().to_string();
        let (payload, _) = halcyon_testkit::fuzz::mutate(&mut rng, &e);
        let ack = js
            .publish(Scenario::subject(&e), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        last.insert(ack.stream, ack.sequence);
    }
    caught_up(port, &last).await;
    // Every child answers its owner (the CSC holds a case for each): a view, or NOT_FOUND where every event
    // of the child was mutated into quarantine — never an error.
    let mut client = QueryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut answered = 0;
    for child in &scenario.children {
        let mut request = tonic::Request::new(pb::FindChildRequest {
            context: Some(pb::RequestContext {
                purpose: pb::Purpose::Safeguarding as i32,
                ..Default::default()
            }),
            identifier: Some(pb::find_child_request::Identifier::NhsNumber(
                child.nhs.to_string(),
            )),
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer demo-csc-rotherham".parse().unwrap());
        let answer = client.find_child(request).await;
        match &answer {
            Ok(_) => answered += 1,
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(_) => panic!("a child's record failed: {answer:?}"),
        }
    }
    assert!(answered > 0, "no child answered its owner");
    stop(node);

    let (a, b) = common::export_live_and_rebuilt(&nats.url(), &live, &rebuilt, dir.path());
    let count = |prefix: &str| a.lines().filter(|l| l.starts_with(prefix)).count();
    let (facts, quarantined, duplicates) = (count("F "), count("Q "), count("D "));
    eprintln!("{n} messages: {facts} facts, {quarantined} quarantined, {duplicates} duplicates");
    assert_eq!(
        facts + quarantined + duplicates,
        n,
        "every message is a fact, a quarantine record or a duplicate"
    );
    assert!(facts > 0 && quarantined > 0);
    assert!(
        a == b,
        "the live export differs from the rebuild's ({} vs {} bytes)",
        a.len(),
        b.len()
    );
}
