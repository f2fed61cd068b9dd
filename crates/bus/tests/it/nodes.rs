//! Several nodes over a real nats-server: a node id claimed twice, duty leases taken, renewed, lost and
//! taken over only after a lapse, and the keeper-term fence that refuses a former keeper's checkpoints.

use std::time::Duration;

use async_nats::jetstream;
use halcyon_bus::checkpoint::{CheckpointError, begin_term, publish_checkpoint};
use halcyon_bus::nodes::{Candidate, EntryError, Heartbeat, NodeEntry, bucket};
use halcyon_bus::{StreamSpec, streams};
use halcyon_ledger::{Recorder, SigningKey, StoredMessage};
use halcyon_testkit::NatsServer;

async fn setup() -> (NatsServer, jetstream::Context) {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let agency = "police-sy".parse().unwrap();
    streams::apply(&js, &StreamSpec::single_server(), [&agency])
        .await
        .unwrap();
    (server, js)
}

fn heartbeat(id: &str, instance: &str) -> Heartbeat {
    Heartbeat {
        node_id: id.into(),
        instance: instance.into(),
        version: "test".into(),
        fingerprint: Default::default(),
        positions: Default::default(),
        clock_offset_ms: None,
        listen: String::new(),
        duties: Vec::new(),
        sent_at_ms: 0,
    }
}

#[tokio::test]
async fn a_node_id_in_use_by_a_live_node_is_refused_and_a_stopped_one_s_is_taken_over() {
    let (_server, js) = setup().await;
    let kv = bucket(&js).await.unwrap();
    let quiet = Duration::from_millis(600);
    let mut first = NodeEntry::claim(kv.clone(), &heartbeat("node-a", "run-1"), quiet)
        .await
        .unwrap();
    // While the first run keeps beating, a second claim of the id is refused.
    let beating = tokio::spawn(async move {
        for _ in 0..10 {
            first.beat(&heartbeat("node-a", "run-1")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first
    });
    let refused = NodeEntry::claim(kv.clone(), &heartbeat("node-a", "run-2"), quiet)
        .await
        .unwrap_err();
    assert!(matches!(refused, EntryError::InUse { .. }), "{refused}");
    assert!(refused.to_string().contains("\"node-a\" is in use"), "{refused}");
    let mut first = beating.await.unwrap();
    // Once it has stopped, the entry is taken over after the quiet time, and the old run's writes fail.
    let mut second = NodeEntry::claim(kv.clone(), &heartbeat("node-a", "run-2"), quiet)
        .await
        .unwrap();
    second.beat(&heartbeat("node-a", "run-2")).await.unwrap();
    let lost = first.beat(&heartbeat("node-a", "run-1")).await.unwrap_err();
    assert!(matches!(lost, EntryError::InUse { .. }), "{lost}");
}

#[tokio::test]
async fn a_lease_is_taken_only_after_its_holder_stops_renewing_it_for_its_whole_time() {
    let (_server, js) = setup().await;
    let kv = bucket(&js).await.unwrap();
    let ttl = Duration::from_millis(900);
    let mut a = Candidate::new(kv.clone(), "test", "node-a", "a", ttl);
    let mut b = Candidate::new(kv.clone(), "test", "node-b", "b", ttl);
    let mut held = a.try_take().await.unwrap().expect("a free lease is taken");
    assert!(held.is_valid());
    // While a renews, b never gets it, however often it tries.
    for _ in 0..8 {
        assert!(b.try_take().await.unwrap().is_none());
        assert!(held.renew().await.unwrap());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // a stops renewing: b takes it once the lease has lapsed by b's reckoning, and not before a's ran out.
    let mut taken = None;
    for _ in 0..40 {
        if let Some(lease) = b.try_take().await.unwrap() {
            taken = Some(lease);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken = taken.expect("the lapsed lease was taken");
    assert!(
        !held.is_valid(),
        "the new holder took it while the old one still counted on it"
    );
    assert!(taken.is_valid());
    // a's late renewal finds the lease gone.
    assert!(held.renew().await.is_err());
}

#[tokio::test]
async fn a_former_keeper_s_checkpoint_is_refused_once_a_later_term_has_begun() {
    let (_server, js) = setup().await;
    let client = js.clone();
    let key = SigningKey::from_seed([7; 32]);
    let first_term = begin_term(&js, "node-a", 1).await.unwrap();
    let mut recorder = Recorder::new("EVENTS_POLICE_SY");
    let stored = |sequence: u64| StoredMessage {
        sequence,
        subject: "halcyon.events.police-sy.case-1",
        event_id: "e",
        payload: b"x",
    };
    recorder.push(&stored(1)).unwrap();
    let c1 = recorder.cut(&key, "node-a", 1).unwrap();
    publish_checkpoint(&client, &c1, first_term)
        .await
        .expect("in its own term");
    // Another node takes the duty and begins its term; the first node's next checkpoint is refused.
    let second_term = begin_term(&js, "node-b", 2).await.unwrap();
    recorder.push(&stored(2)).unwrap();
    let c2 = recorder.cut(&key, "node-a", 2).unwrap();
    let refused = publish_checkpoint(&client, &c2, first_term).await.unwrap_err();
    assert!(matches!(refused, CheckpointError::Fenced { .. }), "{refused}");
    // The same checkpoint in the current term is accepted.
    publish_checkpoint(&client, &c2, second_term)
        .await
        .expect("in the current term");
    let all = halcyon_bus::checkpoint::read_checkpoints(&js, None)
        .await
        .unwrap();
    assert_eq!(all.checkpoints.len(), 2, "terms are not listed as checkpoints");
    assert!(all.unreadable.is_empty(), "{:?}", all.unreadable);
}

#[tokio::test]
async fn a_retried_checkpoint_whose_first_attempt_was_stored_is_dropped_not_a_second_branch() {
    let (_server, js) = setup().await;
    let key = SigningKey::from_seed([9; 32]);
    let term = begin_term(&js, "node-a", 1).await.unwrap();
    let stored = |sequence: u64| StoredMessage {
        sequence,
        subject: "halcyon.events.police-sy.case-1",
        event_id: "e",
        payload: b"x",
    };
    // The first attempt covers 1..=1 and is stored, but its acknowledgement is lost; the retry, cut after
    // one more message, covers 1..=2 from the same predecessor.
    let mut first = Recorder::new("EVENTS_POLICE_SY");
    first.push(&stored(1)).unwrap();
    let c1 = first.cut(&key, "node-a", 1).unwrap();
    publish_checkpoint(&js, &c1, term).await.unwrap();
    let mut retry = Recorder::new("EVENTS_POLICE_SY");
    retry.push(&stored(1)).unwrap();
    retry.push(&stored(2)).unwrap();
    let c1b = retry.cut(&key, "node-a", 2).unwrap();
    let dropped = publish_checkpoint(&js, &c1b, term).await.unwrap_err();
    assert!(matches!(dropped, CheckpointError::Conflict { .. }), "{dropped}");
    let all = halcyon_bus::checkpoint::read_checkpoints(&js, None)
        .await
        .unwrap();
    assert_eq!(all.checkpoints.len(), 1, "no two checkpoints extend the same one");
}

#[tokio::test]
async fn a_heartbeat_whose_acknowledgement_was_lost_is_adopted_not_taken_for_another_node() {
    let (_server, js) = setup().await;
    let kv = bucket(&js).await.unwrap();
    let mine = heartbeat("node-a", "run-1");
    let mut entry = NodeEntry::claim(kv.clone(), &mine, Duration::from_millis(100))
        .await
        .unwrap();
    // The node's own write stored behind its back (as when the acknowledgement of a write is lost).
    kv.put("node.node-a", serde_json::to_vec(&mine).unwrap().into())
        .await
        .unwrap();
    entry.beat(&mine).await.expect("its own earlier write is adopted");
    // Another instance's write is not.
    kv.put(
        "node.node-a",
        serde_json::to_vec(&heartbeat("node-a", "run-2")).unwrap().into(),
    )
    .await
    .unwrap();
    assert!(matches!(entry.beat(&mine).await, Err(EntryError::InUse { .. })));
}
