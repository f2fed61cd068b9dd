//! Atomic batch publishing over a real nats-server (sync every write): positions, retries, dedupe,
//! refusals before sending, grouping by agency, and the stream setting it needs.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::streams::Provisioned;
use halcyon_bus::{
    BatchConfig, BatchError, BatchPublisher, Position, Publisher, PublisherConfig, StreamSpec,
};
use halcyon_schema::{AgencyId, StreamName, pb};
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig};

struct Setup {
    _server: NatsServer,
    client: async_nats::Client,
    js: jetstream::Context,
    agencies: ScenarioAgencies,
    envelopes: Vec<pb::Envelope>,
}

async fn setup(children: usize) -> Setup {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let agencies = ScenarioAgencies::deploy();
    let all = [
        &agencies.csc,
        &agencies.police,
        &agencies.school,
        &agencies.ed,
        &agencies.gp,
    ];
    halcyon_bus::streams::apply(&js, &StreamSpec::single_server(), all)
        .await
        .unwrap();
    let envelopes = Scenario::generate(
        &ScenarioConfig {
            children,
            ..Default::default()
        },
        &agencies,
    )
    .envelopes;
    Setup {
        _server: server,
        client,
        js,
        agencies,
        envelopes,
    }
}

fn of_agency(envelopes: &[pb::Envelope], agency: &AgencyId) -> Vec<pb::Envelope> {
    envelopes
        .iter()
        .filter(|e| e.agency_id == agency.as_str())
        .cloned()
        .collect()
}

async fn stored(js: &jetstream::Context, agency: &AgencyId) -> u64 {
    let mut stream = js
        .get_stream(StreamName::for_agency(agency).as_str())
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

fn sequences(published: &[halcyon_bus::Published]) -> Vec<u64> {
    published.iter().map(|p| p.position.sequence).collect()
}

#[tokio::test]
async fn a_batch_lands_at_consecutive_sequences_with_each_event_id_as_its_msg_id() {
    let s = setup(20).await;
    let police = of_agency(&s.envelopes, &s.agencies.police);
    let batch = &police[..60];
    let publisher = BatchPublisher::new(s.client.clone(), BatchConfig::default());

    let published = publisher.publish_batch(batch).await.unwrap();

    assert_eq!(sequences(&published), (1..=60).collect::<Vec<_>>());
    let stream = StreamName::for_agency(&s.agencies.police);
    assert!(
        published
            .iter()
            .all(|p| p.position.stream == stream.as_str() && !p.duplicate)
    );
    assert_eq!(stored(&s.js, &s.agencies.police).await, 60);
    // Each event is stored on its case subject, with its event id as Nats-Msg-Id.
    let handle = s.js.get_stream(stream.as_str()).await.unwrap();
    for (envelope, p) in batch.iter().zip(&published).step_by(7) {
        let message = handle.get_raw_message(p.position.sequence).await.unwrap();
        assert_eq!(message.subject.as_str(), Scenario::subject(envelope));
        assert_eq!(
            message.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some(envelope.event_id.as_str())
        );
        assert!(
            message.headers.get("Nats-Batch-Id").is_some(),
            "stored by an atomic batch"
        );
        let decoded: pb::Envelope = prost::Message::decode(message.payload).unwrap();
        assert_eq!(&decoded, envelope);
    }
}

#[tokio::test]
async fn a_resent_identical_batch_is_reported_as_already_stored_without_duplicates() {
    let s = setup(20).await;
    let csc = of_agency(&s.envelopes, &s.agencies.csc);
    let batch = &csc[..40];
    let publisher = BatchPublisher::new(s.client.clone(), BatchConfig::default());
    let first = publisher.publish_batch(batch).await.unwrap();

    // As after a lost commit acknowledgement: the identical batch again.
    let again = publisher.publish_batch(batch).await.unwrap();

    assert_eq!(sequences(&again), sequences(&first));
    assert!(again.iter().all(|p| p.duplicate));
    assert_eq!(stored(&s.js, &s.agencies.csc).await, 40);
}

#[tokio::test]
async fn a_batch_holding_events_stored_before_stores_only_the_new_ones() {
    let s = setup(20).await;
    let school = of_agency(&s.envelopes, &s.agencies.school);
    let single = Publisher::new(s.client.clone(), PublisherConfig::default());
    let mut before = Vec::new();
    for envelope in &school[5..15] {
        before.push(single.publish(envelope, None).await.unwrap().position);
    }
    let publisher = BatchPublisher::new(s.client.clone(), BatchConfig::default());

    let published = publisher.publish_batch(&school[..30]).await.unwrap();

    // Events 5..15 keep their earlier positions; the other twenty are stored once, in batch order.
    let positions: Vec<&Position> = published.iter().map(|p| &p.position).collect();
    assert_eq!(positions[5..15], before.iter().collect::<Vec<_>>()[..]);
    assert!(published[5..15].iter().all(|p| p.duplicate));
    let new: Vec<u64> = published
        .iter()
        .filter(|p| !p.duplicate)
        .map(|p| p.position.sequence)
        .collect();
    assert_eq!(new, (11..=30).collect::<Vec<_>>());
    assert_eq!(stored(&s.js, &s.agencies.school).await, 30);
}

#[tokio::test]
async fn an_event_repeated_inside_a_batch_is_stored_once() {
    // The server refuses the batch (10201, per batch); its events then go one by one.
    let s = setup(10).await;
    let gp = of_agency(&s.envelopes, &s.agencies.gp);
    let mut batch = gp[..5].to_vec();
    batch.push(gp[2].clone());
    let publisher = BatchPublisher::new(s.client.clone(), BatchConfig::default());

    let published = publisher.publish_batch(&batch).await.unwrap();

    assert_eq!(published.len(), 6);
    assert_eq!(published[5].position, published[2].position);
    assert!(published[5].duplicate);
    assert_eq!(stored(&s.js, &s.agencies.gp).await, 5);
}

#[tokio::test]
async fn a_batch_with_invalid_envelopes_is_refused_before_sending_with_every_problem_listed() {
    let s = setup(10).await;
    let mut batch = of_agency(&s.envelopes, &s.agencies.police)[..10].to_vec();
    batch[3].event_id = String::new();
    batch[3].case_id = String::new();
    batch[7].child.as_mut().unwrap().nhs_number = "9990000001".into();
    let publisher = BatchPublisher::new(s.client.clone(), BatchConfig::default());

    let error = publisher.publish_batch(&batch).await.unwrap_err();

    let BatchError::Invalid(invalid) = &error else {
        panic!("expected Invalid, got {error:?}");
    };
    assert_eq!(invalid.iter().map(|i| i.index).collect::<Vec<_>>(), [3, 7]);
    assert_eq!(invalid[0].problems.len(), 2, "{:?}", invalid[0].problems);
    assert_eq!(invalid[1].event_id, batch[7].event_id);
    let text = error.to_string();
    for needle in ["event_id", "case_id", "event 7"] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert!(!error.is_retryable());
    assert_eq!(stored(&s.js, &s.agencies.police).await, 0);
}

#[tokio::test]
async fn a_batch_must_be_one_agencys_and_fit_the_server_limit() {
    let s = setup(40).await;
    let publisher = BatchPublisher::new(s.client.clone(), BatchConfig::default());
    let mut mixed = of_agency(&s.envelopes, &s.agencies.police)[..3].to_vec();
    mixed.push(of_agency(&s.envelopes, &s.agencies.csc)[0].clone());
    assert!(matches!(
        publisher.publish_batch(&mixed).await,
        Err(BatchError::MixedAgencies { index: 3, .. })
    ));
    let long: Vec<pb::Envelope> = s.envelopes.iter().cycle().take(1001).cloned().collect();
    assert!(matches!(
        publisher.publish_batch(&long).await,
        Err(BatchError::TooLong { len: 1001, max: 1000 })
    ));
    let only_police = BatchPublisher::new(
        s.client.clone(),
        BatchConfig {
            agency: Some(s.agencies.police.clone()),
            ..Default::default()
        },
    );
    let csc = of_agency(&s.envelopes, &s.agencies.csc);
    assert!(matches!(
        only_police.publish_batch(&csc[..2]).await,
        Err(BatchError::Denied(_))
    ));
    assert_eq!(publisher.publish_batch(&[]).await.unwrap(), vec![]);
    for agency in [&s.agencies.police, &s.agencies.csc] {
        assert_eq!(stored(&s.js, agency).await, 0);
    }
}

#[tokio::test]
async fn publish_all_groups_each_agencys_events_in_input_order_and_reports_bad_events_alone() {
    let s = setup(30).await;
    let mut input = s.envelopes.clone();
    input[11].event_id = "not-a-uuid".into();
    let publisher = BatchPublisher::new(
        s.client.clone(),
        BatchConfig {
            batch_len: 25,
            ..Default::default()
        },
    );

    let outcomes: Vec<_> = publisher.publish_all(input.clone()).collect().await;

    let mut positions = BTreeMap::new();
    let mut refused = Vec::new();
    for outcome in &outcomes {
        match &outcome.result {
            Ok(published) => {
                assert!(outcome.indices.len() <= 25);
                assert_eq!(published.len(), outcome.indices.len());
                let agencies: BTreeSet<_> = outcome.indices.iter().map(|&i| &input[i].agency_id).collect();
                assert_eq!(agencies.len(), 1, "one agency per batch");
                for (&i, p) in outcome.indices.iter().zip(published) {
                    assert!(positions.insert(i, p.position.clone()).is_none());
                }
            }
            Err(e) => {
                assert!(matches!(e, BatchError::Invalid(_)), "{e:?}");
                refused.extend(outcome.indices.iter().copied());
            }
        }
    }
    assert_eq!(refused, [11]);
    assert_eq!(positions.len(), input.len() - 1);
    // Within each stream, input order is stream order, with no gaps.
    let mut per_stream: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for p in positions.values() {
        per_stream.entry(p.stream.as_str()).or_default().push(p.sequence);
    }
    assert_eq!(per_stream.len(), 5);
    for (stream, seqs) in per_stream {
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{stream}");
    }
}

#[tokio::test]
async fn a_stream_without_atomic_publishing_refuses_and_provisioning_turns_it_on() {
    let s = setup(5).await;
    let name = StreamName::for_agency(&s.agencies.police);
    let mut config =
        s.js.get_stream(name.as_str())
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .clone();
    config.allow_atomic_publish = false;
    s.js.update_stream(config).await.unwrap();
    let publisher = BatchPublisher::new(s.client.clone(), BatchConfig::default());
    let batch = of_agency(&s.envelopes, &s.agencies.police)[..3].to_vec();

    let error = publisher.publish_batch(&batch).await.unwrap_err();
    let BatchError::Rejected {
        err_code,
        description,
    } = &error
    else {
        panic!("expected Rejected, got {error:?}");
    };
    assert_eq!(*err_code, 10174);
    assert!(description.contains("streams apply"), "{description}");

    let provisioned = halcyon_bus::streams::apply(&s.js, &StreamSpec::single_server(), [&s.agencies.police])
        .await
        .unwrap();
    assert_eq!(
        provisioned[0],
        (
            "EVENTS_POLICE_SY".to_owned(),
            Provisioned::Updated(vec!["allow_atomic false -> true".into()])
        )
    );
    assert_eq!(publisher.publish_batch(&batch).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_batch_for_a_stream_that_is_not_there_is_unavailable_and_retryable() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let agencies = ScenarioAgencies::deploy();
    let envelopes = Scenario::generate(&ScenarioConfig::default(), &agencies).envelopes;
    let publisher = BatchPublisher::new(
        client,
        BatchConfig {
            attempts_max: 2,
            backoff_initial: std::time::Duration::from_millis(10),
            ..Default::default()
        },
    );

    let error = publisher
        .publish_batch(&of_agency(&envelopes, &agencies.csc)[..2])
        .await
        .unwrap_err();

    assert!(matches!(error, BatchError::Unavailable(_)), "{error:?}");
    assert!(error.is_retryable());
}
