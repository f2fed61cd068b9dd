//! Issue 7, tamper evidence: a node keeps each stream's hash chain and publishes signed checkpoints; history
//! altered on a real nats-server — a message removed, a payload changed in the server's store on disk, the
//! stream rebuilt from a modified copy, the checkpoint stream itself rebuilt — is found by verification at
//! its first divergent position with what differs; untouched history verifies clean, also across a node
//! restart that resumes the chain from the last checkpoint.

use crate::common;

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures::StreamExt;
use halcyon_bus::checkpoint::{
    CHECKPOINT_STREAM, ChainMessage, chain_messages, checkpoint_subject, last_checkpoint, read_checkpoints,
    verify_stream,
};
use halcyon_ledger::{Checkpoint, Divergence, Field, Keyring, PublicKey};
use halcyon_node::{Node, NodeConfig};
use halcyon_testkit::{Auth, NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};
use prost::Message as _;

/// A stream the test provisions itself, without `deny_delete`, as someone with admin rights could.
const LOOSE_STREAM: &str = "EVENTS_TAMPER_TEST";
const LOOSE_SUBJECTS: &str = "halcyon.events.tamper-test.>";

fn keys() -> Keyring {
    let text = std::fs::read_to_string(workspace_root().join("deploy/checkpoint-dev.key.pub")).unwrap();
    Keyring::new([PublicKey::parse(&text).unwrap()])
}

/// An open server (the tamperer has every right) with a node keeping chains in front of it.
async fn open_node(nats: &NatsServer, data: &std::path::Path) -> Node {
    let config = NodeConfig {
        nats_credentials: halcyon_bus::Credentials::default(),
        ..common::node_config(nats, data)
    };
    common::start_node(config).await.expect("node starts")
}

async fn admin(nats: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(nats.url()).await.unwrap())
}

/// Creates the loose stream and publishes `n` messages with event ids; returns their ids by sequence.
async fn fill_loose_stream(js: &jetstream::Context, n: u64) -> Vec<String> {
    js.create_stream(stream::Config {
        name: LOOSE_STREAM.into(),
        subjects: vec![LOOSE_SUBJECTS.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 1..=n {
        let id = format!("0190-tamper-{i:04}");
        let payload = format!("payload-{i:04}-ORIGINAL {}", "x".repeat(i as usize % 13));
        let ack = js
            .send_publish(
                format!("halcyon.events.tamper-test.case-{}", i % 3),
                PublishMessage::build().payload(payload.into()).message_id(&id),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.sequence, i);
        ids.push(id);
    }
    ids
}

/// Every stored message of `stream`, as a copy an attacker would take.
async fn copy_of(js: &jetstream::Context, stream: &str) -> Vec<ChainMessage> {
    let last = js
        .get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    let mut messages = std::pin::pin!(chain_messages(js, stream, 1, None).await.unwrap());
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        let done = m.sequence >= last;
        out.push(m);
        if done {
            break;
        }
    }
    out
}

/// Deletes `stream` and creates it again with the same settings from `messages` (subjects, event ids and
/// payloads as given), as one rebuilding history from a modified copy would.
async fn rebuild(js: &jetstream::Context, stream: &str, messages: &[ChainMessage]) {
    let config = js
        .get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    js.delete_stream(stream).await.unwrap();
    js.create_stream(config).await.unwrap();
    for m in messages {
        js.send_publish(
            m.subject.clone(),
            PublishMessage::build()
                .payload(m.payload.clone())
                .message_id(&m.event_id),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untouched_history_verifies_clean_and_a_restarted_node_resumes_its_chain() {
    let h = common::Harness::start().await;
    let scenario = common::children(8);
    let positions = common::publish_as_agencies(&h.nats.url(), &scenario.envelopes).await;
    // The auditor reads as the operator user; the node wrote the checkpoints as halcyon-node.
    let js = common::operator(&h.nats).await;
    for p in &positions {
        common::wait_checkpointed(&js, &p.stream, p.sequence).await;
        let v = verify_stream(&js, &p.stream, &keys(), &[]).await.unwrap();
        assert!(v.is_intact(), "{}", v.report);
        assert_eq!(v.report.verified_up_to, p.sequence, "{}", v.report);
        assert_eq!(v.report.n_unchecked, 0);
    }

    // A new node (new read models) on the same server resumes each chain from its last checkpoint.
    let common::Harness { nats, node, data } = h;
    node.stop(Duration::from_secs(5)).await;
    let data2 = tempfile::tempdir().unwrap();
    let node = common::start_node(common::node_config(&nats, data2.path()))
        .await
        .unwrap();
    let more = Scenario::generate(
        &ScenarioConfig {
            seed: 77,
            children: 4,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let later = common::publish_as_agencies(&nats.url(), &more.envelopes).await;
    for p in &later {
        common::wait_checkpointed(&js, &p.stream, p.sequence).await;
        let stored = read_checkpoints(&js, Some(&p.stream)).await.unwrap();
        assert!(stored.unreadable.is_empty());
        let mut next = 1;
        for c in &stored.checkpoints {
            assert_eq!(
                c.checkpoint.from_sequence, next,
                "{}: one chain of checkpoints, resumed rather than restarted",
                p.stream
            );
            next = c.checkpoint.to_sequence + 1;
        }
        let v = verify_stream(&js, &p.stream, &keys(), &[]).await.unwrap();
        assert!(v.is_intact(), "{}", v.report);
        assert_eq!(v.report.verified_up_to, p.sequence);
    }
    node.stop(Duration::from_secs(5)).await;
    drop(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_message_is_a_gap_at_its_sequence() {
    let nats = NatsServer::start_with(Auth::Open, true);
    let data = tempfile::tempdir().unwrap();
    let node = open_node(&nats, data.path()).await;
    let js = admin(&nats).await;
    let ids = fill_loose_stream(&js, 40).await;
    common::wait_checkpointed(&js, LOOSE_STREAM, 40).await;
    node.stop(Duration::from_secs(5)).await;

    let clean = verify_stream(&js, LOOSE_STREAM, &keys(), &[]).await.unwrap();
    assert!(clean.is_intact(), "{}", clean.report);

    assert!(
        js.get_stream(LOOSE_STREAM)
            .await
            .unwrap()
            .delete_message(17)
            .await
            .unwrap()
    );
    let v = verify_stream(&js, LOOSE_STREAM, &keys(), &[]).await.unwrap();
    assert_eq!(
        v.report.first(),
        Some(&Divergence::Gap {
            expected: 17,
            found: Some(18),
            event_id: ids[16].clone()
        }),
        "{}",
        v.report
    );
    assert!(v.report.verified_up_to < 17);
    assert!(
        v.report.to_string().contains("DIVERGES at 17 — gap: message 17"),
        "{}",
        v.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_edited_in_the_store_on_disk_is_found_at_its_sequence() {
    let mut nats = NatsServer::start_with(Auth::Open, true);
    let data = tempfile::tempdir().unwrap();
    let node = open_node(&nats, data.path()).await;
    let js = admin(&nats).await;
    let ids = fill_loose_stream(&js, 30).await;
    common::wait_checkpointed(&js, LOOSE_STREAM, 30).await;
    node.stop(Duration::from_secs(5)).await;
    drop(js);

    // With the server stopped, change message 23's payload in its message block, byte for byte.
    nats.kill();
    let blocks = find_dir(nats.dir(), LOOSE_STREAM)
        .expect("the stream's folder")
        .join("msgs");
    let mut changed = 0;
    for entry in std::fs::read_dir(&blocks).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "blk") {
            let mut bytes = std::fs::read(&path).unwrap();
            let (from, to) = (b"payload-0023-ORIGINAL", b"payload-0023-FORGED!!");
            if let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
                bytes[at..at + to.len()].copy_from_slice(to);
                std::fs::write(&path, bytes).unwrap();
                changed += 1;
            }
        }
    }
    assert_eq!(changed, 1, "message 23 found in {}", blocks.display());
    nats.start_again();

    // nats-server 2.15 finds its own record checksum broken on recovery and drops message 23 and all after
    // it; a server that kept the edited record would show it altered. Either way the first divergent
    // position is 23.
    let js = admin(&nats).await;
    let v = verify_stream(&js, LOOSE_STREAM, &keys(), &[]).await.unwrap();
    let first = v.report.first().cloned().expect("detected");
    assert_eq!(first.position(), 23, "{}", v.report);
    assert!(
        matches!(&first, Divergence::Altered { field: Field::Payload, event_id, .. } | Divergence::Gap { event_id, .. } if *event_id == ids[22]),
        "{}",
        v.report
    );
    assert!(v.report.verified_up_to < 23, "{}", v.report);
}

/// Publishes a scenario on an open server with a node in front, waits until the police stream is fully
/// checkpointed, stops the node; returns the stream's name and its last sequence.
async fn police_history(nats: &NatsServer) -> (String, u64) {
    let data = tempfile::tempdir().unwrap();
    let node = open_node(nats, data.path()).await;
    let scenario = common::children(6);
    let positions = common::publish_as_agencies(&nats.url(), &scenario.envelopes).await;
    let police = positions
        .into_iter()
        .find(|p| p.stream == "EVENTS_POLICE_SY")
        .expect("the scenario has police events");
    assert!(police.sequence >= 10, "{police}");
    common::wait_checkpointed(&admin(nats).await, &police.stream, police.sequence).await;
    node.stop(Duration::from_secs(5)).await;
    (police.stream, police.sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_changed_in_a_rebuilt_stream_is_altered_at_its_sequence() {
    let nats = NatsServer::start_with(Auth::Open, true);
    let (stream, last) = police_history(&nats).await;
    let js = admin(&nats).await;
    let clean = verify_stream(&js, &stream, &keys(), &[]).await.unwrap();
    assert!(clean.is_intact(), "{}", clean.report);
    assert_eq!(clean.report.verified_up_to, last);

    // The same events at the same sequences with the same ids; one occurred a day earlier than recorded.
    let k = last / 2;
    let mut copy = copy_of(&js, &stream).await;
    let m = &mut copy[k as usize - 1];
    let mut envelope = halcyon_grpc::pb::Envelope::decode(m.payload.clone()).unwrap();
    envelope.occurred_at.as_mut().unwrap().seconds -= 86_400;
    m.payload = envelope.encode_to_vec().into();
    let event_id = m.event_id.clone();
    rebuild(&js, &stream, &copy).await;

    let v = verify_stream(&js, &stream, &keys(), &[]).await.unwrap();
    assert!(
        matches!(v.report.first(), Some(Divergence::Altered { sequence, field: Field::Payload, event_id: e, .. }) if *sequence == k && *e == event_id),
        "{}",
        v.report
    );
    assert!(v.report.verified_up_to < k);
    assert!(
        v.report
            .to_string()
            .contains(&format!("DIVERGES at {k} — altered payload")),
        "{}",
        v.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rebuilt_from_a_copy_without_one_event_is_rewritten_history_where_it_was() {
    let nats = NatsServer::start_with(Auth::Open, true);
    let (stream, last) = police_history(&nats).await;
    let js = admin(&nats).await;
    let k = last / 2;
    let mut copy = copy_of(&js, &stream).await;
    let removed = copy.remove(k as usize - 1);
    let successor = copy[k as usize - 1].event_id.clone();
    rebuild(&js, &stream, &copy).await;

    let v = verify_stream(&js, &stream, &keys(), &[]).await.unwrap();
    assert_eq!(
        v.report.first(),
        Some(&Divergence::Rewritten {
            sequence: k,
            expected_event_id: removed.event_id,
            found_event_id: successor,
        }),
        "{}",
        v.report
    );
    assert!(v.report.verified_up_to < k);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_copy_still_convicts_a_history_whose_checkpoints_were_rebuilt_too() {
    let nats = NatsServer::start_with(Auth::Open, true);
    let (stream, last) = police_history(&nats).await;
    let js = admin(&nats).await;
    let exported: Vec<Checkpoint> = read_checkpoints(&js, None)
        .await
        .unwrap()
        .checkpoints
        .into_iter()
        .map(|c| c.checkpoint)
        .collect();
    assert!(exported.iter().any(|c| c.stream == stream));

    // The events are rebuilt with one payload changed and the CHECKPOINTS stream emptied: the stream
    // alone has nothing left to check against.
    let k = last - 1;
    let mut copy = copy_of(&js, &stream).await;
    copy[k as usize - 1].payload = b"not what was recorded".to_vec().into();
    rebuild(&js, &stream, &copy).await;
    rebuild(&js, CHECKPOINT_STREAM, &[]).await;
    assert!(last_checkpoint(&js, &stream).await.unwrap().is_none());
    let alone = verify_stream(&js, &stream, &keys(), &[]).await.unwrap();
    assert_eq!(alone.report.n_checkpoints, 0);
    assert_eq!(alone.report.n_unchecked, last, "{}", alone.report);

    let v = verify_stream(&js, &stream, &keys(), &exported).await.unwrap();
    assert!(
        matches!(
            v.report.first(),
            Some(Divergence::CheckpointMissing { from_sequence: 1, .. })
        ),
        "{}",
        v.report
    );
    assert!(
        v.report.divergences.iter().any(
            |d| matches!(d, Divergence::Altered { sequence, field: Field::Payload, .. } if *sequence == k)
        ),
        "{}",
        v.report
    );
    assert_eq!(
        checkpoint_subject(&stream),
        format!("halcyon.checkpoints.{stream}")
    );
}

/// The folder named `name` under `dir` (the server's store layout differs between versions).
fn find_dir(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == name) {
                return Some(path);
            }
            if let Some(found) = find_dir(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

/// An open server with a node keeping chains; agencies ask about children one call at a time, so AUDIT
/// holds one message per call, all checkpointed; the node stopped. Returns AUDIT's last sequence.
async fn audit_history(nats: &NatsServer) -> u64 {
    let data = tempfile::tempdir().unwrap();
    let node = open_node(nats, data.path()).await;
    let scenario = common::children(4);
    let positions = common::publish_as_agencies(&nats.url(), &scenario.envelopes).await;
    let mut client =
        halcyon_grpc::pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
            .await
            .unwrap();
    for child in &scenario.children {
        for agency in ["police-sy", "csc-rotherham", "school-oakwood"] {
            // Found or not, each call leaves an access record.
            let _ = common::find_by_nhs(
                &mut client,
                agency,
                child.nhs.as_str(),
                halcyon_policy::Purpose::Safeguarding,
                &positions,
            )
            .await;
        }
    }
    let js = admin(nats).await;
    let last = js
        .get_stream(AUDIT)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    assert!(last >= 12, "one AUDIT message per call: {last}");
    common::wait_checkpointed(&js, AUDIT, last).await;
    node.stop(Duration::from_secs(5)).await;
    last
}

const AUDIT: &str = halcyon_schema::subject::AUDIT_STREAM;

/// Issue 20: the access log is chained and checkpointed like the agency streams, and verification finds an
/// access record altered, removed or moved, at its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_record_altered_removed_or_reordered_is_found_at_its_position() {
    let nats = NatsServer::start_with(Auth::Open, true);
    let last = audit_history(&nats).await;
    let js = admin(&nats).await;
    let clean = verify_stream(&js, AUDIT, &keys(), &[]).await.unwrap();
    assert!(clean.is_intact(), "{}", clean.report);
    assert_eq!(clean.report.verified_up_to, last);
    let original = copy_of(&js, AUDIT).await;
    let k = last / 2;

    // Altered: the record says another agency read the child.
    let mut altered = original.clone();
    let m = &mut altered[k as usize - 1];
    let mut records = halcyon_grpc::pb::AccessRecords::decode(m.payload.clone()).unwrap();
    records.records[0].agency_id = "vol-safe-haven".into();
    m.payload = records.encode_to_vec().into();
    rebuild(&js, AUDIT, &altered).await;
    let v = verify_stream(&js, AUDIT, &keys(), &[]).await.unwrap();
    assert!(
        matches!(v.report.first(), Some(Divergence::Altered { sequence, field: Field::Payload, .. }) if *sequence == k),
        "{}",
        v.report
    );

    // Put back as it was: intact again (the same subjects, ids and payloads at the same positions).
    rebuild(&js, AUDIT, &original).await;
    assert!(verify_stream(&js, AUDIT, &keys(), &[]).await.unwrap().is_intact());

    // Removed: the record at k is gone, its successor stands in its place.
    let mut removed = original.clone();
    let gone = removed.remove(k as usize - 1);
    rebuild(&js, AUDIT, &removed).await;
    let v = verify_stream(&js, AUDIT, &keys(), &[]).await.unwrap();
    assert_eq!(
        v.report.first(),
        Some(&Divergence::Rewritten {
            sequence: k,
            expected_event_id: gone.event_id.clone(),
            found_event_id: original[k as usize].event_id.clone(),
        }),
        "{}",
        v.report
    );

    // Reordered: the records at k and k + 1 swapped.
    let mut swapped = original.clone();
    swapped.swap(k as usize - 1, k as usize);
    rebuild(&js, AUDIT, &swapped).await;
    let v = verify_stream(&js, AUDIT, &keys(), &[]).await.unwrap();
    assert_eq!(
        v.report.first(),
        Some(&Divergence::Rewritten {
            sequence: k,
            expected_event_id: original[k as usize - 1].event_id.clone(),
            found_event_id: original[k as usize].event_id.clone(),
        }),
        "{}",
        v.report
    );
    assert!(v.report.verified_up_to < k);
}
