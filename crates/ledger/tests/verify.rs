//! The verifier over recorded streams: untouched history verifies clean; each way of altering history is
//! reported at its exact first divergent position with its kind (unit cases and properties).

use halcyon_ledger::{Checkpoint, Divergence, Field, Keyring, Recorder, SigningKey, StoredMessage, Verifier};
use proptest::prelude::*;

const STREAM: &str = "EVENTS_POLICE_SY";

#[derive(Debug, Clone, PartialEq)]
struct Msg {
    sequence: u64,
    subject: String,
    event_id: String,
    payload: Vec<u8>,
}

impl Msg {
    fn stored(&self) -> StoredMessage<'_> {
        StoredMessage {
            sequence: self.sequence,
            subject: &self.subject,
            event_id: &self.event_id,
            payload: &self.payload,
        }
    }
}

fn key() -> SigningKey {
    SigningKey::from_seed([9; 32])
}

fn keys() -> Keyring {
    Keyring::new([key().public_key()])
}

fn stream(n: u64) -> Vec<Msg> {
    (1..=n)
        .map(|s| Msg {
            sequence: s,
            subject: format!("halcyon.events.police-sy.case-{}", s % 4),
            event_id: format!("0190-{s:06}"),
            payload: format!("payload {s} {}", "x".repeat((s % 17) as usize)).into_bytes(),
        })
        .collect()
}

/// Records checkpoints after each message whose index is in `cuts`, and after the last.
fn record(messages: &[Msg], cuts: &[usize]) -> Vec<Checkpoint> {
    let mut r = Recorder::new(STREAM);
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        r.push(&m.stored()).unwrap();
        if cuts.contains(&i) {
            out.extend(r.cut(&key(), "node-1", i as i64));
        }
    }
    out.extend(r.cut(&key(), "node-1", -1));
    out
}

fn verify(
    messages: &[Msg],
    checkpoints: Vec<Checkpoint>,
    exported: Vec<Checkpoint>,
) -> halcyon_ledger::Report {
    let mut v = Verifier::new(STREAM, checkpoints, exported, &keys());
    for m in messages {
        v.push(&m.stored()).unwrap();
    }
    v.finish()
}

/// The stream rebuilt from a copy: the messages renumbered from 1, as JetStream would store them.
fn renumbered(mut messages: Vec<Msg>) -> Vec<Msg> {
    for (i, m) in messages.iter_mut().enumerate() {
        m.sequence = i as u64 + 1;
    }
    messages
}

#[test]
fn untouched_history_verifies_clean_up_to_the_last_checkpoint() {
    let messages = stream(50);
    let report = verify(&messages, record(&messages[..45], &[9, 19, 29]), vec![]);
    assert!(report.is_intact(), "{report}");
    assert_eq!(
        (
            report.verified_up_to,
            report.n_checkpoints,
            report.n_unchecked,
            report.n_messages
        ),
        (45, 4, 5, 50)
    );
    assert_eq!(
        report.to_string(),
        "EVENTS_POLICE_SY: intact up to 45 (50 messages read, 4 signed checkpoints checked; 5 after the last checkpoint, not yet checkpointed)"
    );
}

#[test]
fn a_removed_message_is_a_gap_at_its_sequence() {
    let messages = stream(30);
    let checkpoints = record(&messages, &[9, 19]);
    let mut tampered = messages.clone();
    tampered.remove(13); // sequence 14
    let report = verify(&tampered, checkpoints, vec![]);
    assert_eq!(
        report.first(),
        Some(&Divergence::Gap {
            expected: 14,
            found: Some(15),
            event_id: "0190-000014".into()
        })
    );
    assert_eq!(report.verified_up_to, 10);
}

#[test]
fn a_changed_payload_is_altered_at_its_sequence() {
    let messages = stream(30);
    let checkpoints = record(&messages, &[9, 19]);
    let mut tampered = messages.clone();
    tampered[21].payload = b"nothing to see here".to_vec();
    let report = verify(&tampered, checkpoints, vec![]);
    let first = report.first().unwrap();
    assert!(
        matches!(first, Divergence::Altered { sequence: 22, field: Field::Payload, event_id, .. } if event_id == "0190-000022"),
        "{report}"
    );
    assert_eq!(report.verified_up_to, 20);
    assert!(
        report
            .to_string()
            .starts_with("EVENTS_POLICE_SY: DIVERGES at 22 — altered payload"),
        "{report}"
    );
}

#[test]
fn a_moved_event_is_an_altered_subject() {
    let messages = stream(12);
    let checkpoints = record(&messages, &[]);
    let mut tampered = messages.clone();
    tampered[4].subject = "halcyon.events.police-sy.other-case".into();
    let first = verify(&tampered, checkpoints, vec![]).first().cloned().unwrap();
    assert_eq!((first.kind(), first.position()), ("altered", 5));
    assert!(matches!(
        first,
        Divergence::Altered {
            field: Field::Subject,
            ..
        }
    ));
}

#[test]
fn a_stream_rebuilt_without_one_event_is_rewritten_history_where_it_was() {
    let messages = stream(30);
    let checkpoints = record(&messages, &[9, 19]);
    let mut copy = messages.clone();
    copy.remove(16); // sequence 17 goes; 18 becomes 17
    let report = verify(&renumbered(copy), checkpoints, vec![]);
    assert_eq!(
        report.first(),
        Some(&Divergence::Rewritten {
            sequence: 17,
            expected_event_id: "0190-000017".into(),
            found_event_id: "0190-000018".into()
        })
    );
}

#[test]
fn a_truncated_stream_is_a_gap_at_the_first_missing_message() {
    let messages = stream(30);
    let checkpoints = record(&messages, &[9, 19]);
    let report = verify(&messages[..25], checkpoints, vec![]);
    assert_eq!(
        report.first(),
        Some(&Divergence::Gap {
            expected: 26,
            found: None,
            event_id: "0190-000026".into()
        })
    );
}

#[test]
fn an_inserted_message_is_reported() {
    let messages = stream(10);
    let mut holey = messages.clone();
    holey.remove(4); // the node saw a stream without 5
    let checkpoints = record(&holey, &[]);
    let report = verify(&messages, checkpoints, vec![]);
    assert_eq!(
        report.first(),
        Some(&Divergence::Inserted {
            sequence: 5,
            event_id: "0190-000005".into()
        })
    );
}

#[test]
fn forged_unknown_and_missing_checkpoints_are_named() {
    let messages = stream(30);
    let checkpoints = record(&messages, &[9, 19]);

    let mut forged = checkpoints.clone();
    forged[1].entries[3].payload_digest = [0; 16];
    let report = verify(&messages, forged, vec![]);
    let first = report.first().unwrap();
    assert!(
        matches!(first, Divergence::BadCheckpoint { from_sequence: 11, to_sequence: 20, reason } if reason.contains("altered or forged")),
        "{report}"
    );
    assert_eq!(report.verified_up_to, 10, "the first checkpoint still holds");

    let stranger = SigningKey::from_seed([1; 32]);
    let mut resigned = checkpoints.clone();
    resigned[2] = resigned[2].clone().sign(&stranger);
    let first = verify(&messages, resigned, vec![]).first().cloned().unwrap();
    assert!(
        matches!(first, Divergence::BadCheckpoint { from_sequence: 21, ref reason, .. } if reason.contains("not among the trusted"))
    );

    // The checkpoint stream lost its last checkpoint, but the exported copy has it.
    let report = verify(&messages, checkpoints[..2].to_vec(), checkpoints.clone());
    assert_eq!(
        report.first(),
        Some(&Divergence::CheckpointMissing {
            from_sequence: 21,
            to_sequence: 30
        })
    );
    assert_eq!(
        report.verified_up_to, 30,
        "the exported checkpoint is still checked against the stream"
    );

    // A checkpoint missing from the middle breaks the chain of checkpoints there.
    let report = verify(
        &messages,
        vec![checkpoints[0].clone(), checkpoints[2].clone()],
        vec![],
    );
    assert!(
        matches!(
            report.first(),
            Some(Divergence::CheckpointChainBroken {
                from_sequence: 11,
                ..
            })
        ),
        "{report}"
    );
}

#[test]
fn a_rewritten_and_re_signed_checkpoint_conflicts_with_the_exported_copy() {
    let messages = stream(20);
    let checkpoints = record(&messages, &[9]);
    // Someone with the key rewrites event 15 and re-records from there on.
    let mut copy = messages.clone();
    copy[14].payload = b"rewritten".to_vec();
    let rerecorded = record(&copy, &[9]);
    let report = verify(&copy, rerecorded, checkpoints);
    assert!(
        matches!(report.first(), Some(Divergence::CheckpointChainBroken { from_sequence: 11, reason }) if reason.contains("different contents")),
        "{report}"
    );
}

#[derive(Debug, Clone)]
enum Tamper {
    Remove(usize),
    Payload(usize),
    Subject(usize),
    RebuildWithout(usize),
    RebuildWithExtra(usize),
    Truncate(usize),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    (0usize..6, any::<prop::sample::Index>()).prop_map(|(k, i)| {
        let i = i.index(1000);
        match k {
            0 => Tamper::Remove(i),
            1 => Tamper::Payload(i),
            2 => Tamper::Subject(i),
            3 => Tamper::RebuildWithout(i),
            4 => Tamper::RebuildWithExtra(i),
            _ => Tamper::Truncate(i),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any recording verifies clean; any single alteration is reported at its exact position and kind, and
    /// everything before it that a checkpoint covers is still verified.
    #[test]
    fn every_alteration_is_found_at_its_first_divergent_position(
        n in 1u64..120,
        cuts in prop::collection::vec(0usize..120, 0..12),
        t in tamper(),
    ) {
        let messages = stream(n);
        let checkpoints = record(&messages, &cuts);
        let clean = verify(&messages, checkpoints.clone(), checkpoints.clone());
        prop_assert!(clean.is_intact(), "{}", clean);
        prop_assert_eq!(clean.verified_up_to, n);

        let len = messages.len();
        let (tampered, position, kind) = match t {
            Tamper::Remove(i) => {
                let i = i % len;
                let mut m = messages.clone();
                m.remove(i);
                (m, i as u64 + 1, "gap")
            }
            Tamper::Payload(i) => {
                let i = i % len;
                let mut m = messages.clone();
                m[i].payload.push(b'!');
                (m, i as u64 + 1, "altered")
            }
            Tamper::Subject(i) => {
                let i = i % len;
                let mut m = messages.clone();
                m[i].subject.push_str(".moved");
                (m, i as u64 + 1, "altered")
            }
            Tamper::RebuildWithout(i) => {
                let i = i % len;
                let mut m = messages.clone();
                m.remove(i);
                // Removing the last message leaves nothing shifted: the stream just ends early.
                (renumbered(m), i as u64 + 1, if i + 1 == len { "gap" } else { "rewritten" })
            }
            Tamper::RebuildWithExtra(i) => {
                let i = i % len;
                let mut m = messages.clone();
                m.insert(i, Msg { sequence: 0, subject: "halcyon.events.police-sy.x".into(), event_id: "forged".into(), payload: b"forged".to_vec() });
                (renumbered(m), i as u64 + 1, "rewritten")
            }
            Tamper::Truncate(i) => {
                let i = i % len;
                (messages[..i].to_vec(), i as u64 + 1, "gap")
            }
        };
        let report = verify(&tampered, checkpoints, vec![]);
        let first = report.first().cloned();
        prop_assert!(first.is_some(), "not detected: {}", report);
        let first = first.unwrap();
        prop_assert_eq!((first.kind(), first.position()), (kind, position), "{}", report);
        prop_assert!(report.verified_up_to < position);
    }
}
