//! A model-based randomized test of the projector, in the style of sled's own: random batches from random
//! streams (overlapping what was applied already, as a redelivery after a crash does), re-sent events,
//! unreadable messages, views derived at random moments, and restarts (the store closed and opened again,
//! each stream resuming from its own checkpoint, as a node does) — and at the end the read models must equal
//! those of one clean pass over the same streams, byte for byte (`export`). The model is the clean pass.
//! Run in CI with a fixed seed and a bounded number of cases.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use halcyon_projector::{DeadlineSpec, Incoming, Projector, SignalSpec, ViewSpec};
use halcyon_schema::{Registry, StreamName};
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};
use prost::Message;

fn registry() -> Registry {
    Registry::from_toml(include_str!("../../../../deploy/agencies.toml")).unwrap()
}

/// Opens the store in `path`. sled releases its file lock from a background thread after the previous
/// handle is dropped, so a restart in the same process may find it still held for a moment: try again then
/// (a node restarts as a new process, which never meets this).
fn reopen(path: &Path) -> Projector {
    for _ in 0..500 {
        match Projector::open(path) {
            Ok(p) => return p,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
    panic!(
        "{} stayed locked after the previous handle was dropped",
        path.display()
    )
}

/// A projector with every read model: views, deadlines, signals.
fn open(path: Option<&Path>) -> Projector {
    let p = match path {
        Some(path) => reopen(path),
        None => Projector::temporary().unwrap(),
    };
    let registry = registry();
    p.with_views(ViewSpec::new(
        Arc::new(halcyon_policy::Policy::england()),
        &registry,
    ))
    .with_deadlines(DeadlineSpec::new(Arc::new(
        halcyon_timescales::Timescales::england(),
    )))
    .with_signals(SignalSpec::new(
        Arc::new(halcyon_signals::SignalRules::england()),
        &registry,
    ))
}

fn export(p: &Projector) -> String {
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The streams: a scenario's events by agency, with some events sent again later in their stream (the same
/// event id: a recorded duplicate) and some messages that are not envelopes at all (quarantined).
fn streams(seed: u64) -> BTreeMap<String, Vec<Incoming>> {
    let scenario = Scenario::generate(
        &ScenarioConfig {
            children: 3,
            seed,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let mut by_stream: BTreeMap<String, Vec<(String, Bytes, i64)>> = BTreeMap::new();
    for (i, e) in scenario.envelopes.iter().enumerate() {
        let stream = StreamName::for_agency(&e.agency_id.parse().unwrap()).to_string();
        let stored = e
            .recorded_at
            .as_ref()
            .map_or(0, halcyon_schema::convert::timestamp_millis)
            + 60_000;
        let list = by_stream.entry(stream).or_default();
        list.push((Scenario::subject(e), Bytes::from(e.encode_to_vec()), stored));
        if i % 11 == 3 {
            list.push((Scenario::subject(e), Bytes::from(e.encode_to_vec()), stored + 1));
        }
        if i % 17 == 5 {
            list.push((
                Scenario::subject(e),
                Bytes::from_static(b"\x0a\xff not an envelope"),
                stored + 2,
            ));
        }
    }
    by_stream
        .into_iter()
        .map(|(stream, list)| {
            let messages = list
                .into_iter()
                .enumerate()
                .map(|(i, (subject, payload, stored_at_ms))| Incoming {
                    sequence: i as u64 + 1,
                    subject,
                    payload,
                    stored_at_ms,
                })
                .collect();
            (stream, messages)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    /// The next `len` messages of stream `stream % n`, delivered from `back` messages before the cursor.
    Apply { stream: usize, back: usize, len: usize },
    /// Derive the views of the children changed since the last derivation.
    DeriveViews,
    /// Close the store and open it again; each stream resumes from its checkpoint.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..16usize, 0..4usize, 1..12usize).prop_map(|(stream, back, len)| Op::Apply { stream, back, len }),
        2 => Just(Op::DeriveViews),
        1 => Just(Op::Restart),
    ]
}

/// The read models after `ops`, then the rest of every stream.
fn run(streams: &BTreeMap<String, Vec<Incoming>>, ops: &[Op], dir: &Path) -> String {
    let names: Vec<&String> = streams.keys().collect();
    let mut p = open(Some(dir));
    let mut cursor: BTreeMap<&str, usize> = names.iter().map(|s| (s.as_str(), 0)).collect();
    for op in ops {
        match op {
            Op::Apply { stream, back, len } => {
                let name = names[stream % names.len()];
                let messages = &streams[name];
                let at = cursor[name.as_str()];
                let from = at.saturating_sub(*back);
                let to = (at + len).min(messages.len());
                if from < to {
                    p.apply(name, &messages[from..to]).unwrap();
                }
                cursor.insert(name, to.max(at));
            }
            Op::DeriveViews => {
                p.derive_views().unwrap();
            }
            Op::Restart => {
                p.flush().unwrap();
                drop(p);
                p = open(Some(dir));
                for name in &names {
                    cursor.insert(name, p.checkpoint(name) as usize);
                }
            }
        }
    }
    for name in &names {
        let at = cursor[name.as_str()];
        p.apply(name, &streams[*name][at..]).unwrap();
    }
    p.derive_all_views().unwrap();
    export(&p)
}

fn clean_pass(streams: &BTreeMap<String, Vec<Incoming>>) -> String {
    let p = open(None);
    for (name, messages) in streams {
        p.apply(name, messages).unwrap();
    }
    p.derive_all_views().unwrap();
    export(&p)
}

#[test]
fn random_batches_duplicates_and_restarts_give_the_store_of_one_clean_pass() {
    let streams = streams(2026);
    let model = clean_pass(&streams);
    assert!(
        model.lines().any(|l| l.starts_with("Q ")),
        "the streams hold quarantined messages"
    );
    assert!(model.lines().any(|l| l.starts_with("V ")), "views are compared");
    for line in model.lines() {
        assert!(
            halcyon_projector::keys::PREFIXES
                .iter()
                .any(|(p, _)| line.as_bytes()[0] == *p),
            "a record under a prefix not declared in keys.rs: {line:.40}"
        );
    }
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(15),
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let dir = tempfile::tempdir().unwrap();
            let got = run(&streams, &ops, &dir.path().join("sled"));
            prop_assert!(
                got == model,
                "the read models differ from one clean pass after {ops:?}"
            );
            Ok(())
        })
        .unwrap();
}
