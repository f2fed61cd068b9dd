//! Issue 14: one bad event must never break a child's record, a rebuild or an export. A seeded mutation
//! fuzzer over envelopes, through the real projector and sled (views, deadlines and signals as a node has
//! them): bit flips, truncations, duplicated and dropped fields, wrong wire types, random varints, random
//! strings, and nesting at and around the protobuf decoder's recursion limit on the envelope and on its
//! nested messages (`actor`, `child`, the event). For every input: quarantined with a reason, or projected
//! *and* readable back by its own agency; stored = projected + quarantined + duplicates; the children's
//! records all read; a rebuild (other batch sizes) and its export agree byte for byte.
//!
//! Fixed seed and bounded count here; for a longer run:
//! `HALCYON_FUZZ_CASES=200000 HALCYON_FUZZ_SEED=7 cargo test -p halcyon-tests --test fuzz --release`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use halcyon_policy::{Principal, Purpose, Role};
use halcyon_projector::read::ChildFacts;
use halcyon_projector::{Incoming, Projector};
use halcyon_schema::{AgencyKind, ChildId, Registry, StreamName};
use halcyon_testkit::fuzz::{DECODER_DEPTH_LIMIT, PARTS, mutate, nested_in};
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};
use rand::SeedableRng;

use crate::common::registry;
use rand_chacha::ChaCha20Rng;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A projector as a node builds it: views, deadlines and signals.
fn projector() -> Projector {
    let policy = std::sync::Arc::new(halcyon_policy::Policy::england());
    Projector::temporary()
        .unwrap()
        .with_views(halcyon_projector::view::ViewSpec::new(policy, &registry()))
        .with_deadlines(halcyon_projector::DeadlineSpec::new(std::sync::Arc::new(
            halcyon_timescales::Timescales::england(),
        )))
        .with_signals(halcyon_projector::SignalSpec::new(
            std::sync::Arc::new(halcyon_signals::SignalRules::england()),
            &registry(),
        ))
}

fn principal_of(registry: &Registry, agency: &str) -> Principal {
    let a = registry.get(&agency.parse().unwrap()).unwrap();
    Principal {
        agency: a.id.clone(),
        kind: a.kind,
        role: if a.kind == AgencyKind::Mash {
            Role::MashMember
        } else {
            Role::Practitioner
        },
    }
}

/// Every child with facts, from the export's `F` lines.
fn children(export: &str) -> BTreeMap<ChildId, usize> {
    let mut out = BTreeMap::new();
    for line in export.lines().filter(|l| l.starts_with("F ")) {
        let key = line.split(' ').nth(1).unwrap();
        let child = ChildId::from_bytes(hex::decode(&key[..32]).unwrap().try_into().unwrap());
        *out.entry(child).or_default() += 1;
    }
    out
}

fn export(p: &Projector) -> String {
    p.derive_all_views().unwrap();
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn every_fuzzed_event_is_quarantined_or_readable_and_rebuilds_agree() {
    let seed = env_or("HALCYON_FUZZ_SEED", 14);
    let cases = env_or("HALCYON_FUZZ_CASES", 6000) as usize;
    let registry = registry();
    let base = Scenario::generate(
        &ScenarioConfig {
            children: 40,
            seed,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let now = halcyon_schema::clock::now_ms();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut streams: BTreeMap<String, Vec<Incoming>> = BTreeMap::new();
    let mut kinds: BTreeMap<(String, u64), &'static str> = BTreeMap::new();
    for i in 0..cases {
        let template = &base.envelopes[i % base.envelopes.len()];
        let mut e = template.clone();
        e.event_id = halcyon_schema::EventId::new().to_string();
        let (payload, kind) = mutate(&mut rng, &e);
        let stream = StreamName::for_agency(&e.agency_id.parse().unwrap()).to_string();
        let list = streams.entry(stream.clone()).or_default();
        let sequence = list.len() as u64 + 1;
        kinds.insert((stream, sequence), kind);
        list.push(Incoming {
            sequence,
            subject: Scenario::subject(&e),
            payload: Bytes::from(payload),
            stored_at_ms: now,
        });
    }

    // Live: batches of up to 1,000, as a node's consumer delivers them.
    let live = projector();
    let (mut projected, mut quarantined, mut duplicates) = (0usize, 0usize, 0usize);
    for (stream, messages) in &streams {
        for chunk in messages.chunks(1000) {
            let out = live.apply(stream, chunk).unwrap();
            projected += out.projected as usize;
            quarantined += out.quarantined as usize;
            duplicates += out.duplicates as usize;
        }
    }
    assert_eq!(
        projected + quarantined + duplicates,
        cases,
        "stored = projected + quarantined + duplicates"
    );

    // Every quarantined event has its reasons.
    let records = live.quarantine(None).unwrap();
    assert_eq!(records.len(), quarantined);
    let mut quarantined_at: BTreeSet<(String, u64)> = BTreeSet::new();
    for r in &records {
        assert!(
            !r.problems.is_empty(),
            "{}:{} quarantined without a reason",
            r.stream,
            r.sequence
        );
        quarantined_at.insert((r.stream.clone(), r.sequence));
    }

    // Every projected event reads back, and its own agency sees it.
    let dump = export(&live);
    let by_child = children(&dump);
    let mut read_back: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut unreadable = Vec::new();
    for (child, n_keys) in &by_child {
        let facts = match live.facts(child) {
            Ok(facts) => facts,
            Err(e) => {
                unreadable.push(format!("child {child}: {e}"));
                continue;
            }
        };
        assert_eq!(facts.len(), *n_keys, "child {child}: every stored fact reads");
        let decoded = ChildFacts::new(facts);
        let agencies: BTreeSet<String> = decoded
            .facts
            .iter()
            .map(|f| f.envelope.agency_id.clone())
            .collect();
        for agency in agencies {
            let policy = halcyon_policy::Policy::england();
            let principal = principal_of(&registry, &agency);
            let asker = halcyon_projector::disclose::Asker {
                policy: &policy,
                registry: &registry,
                principal: &principal,
                purpose: Purpose::Safeguarding,
                break_glass: None,
                now_ms: now,
            };
            let (view, _) =
                halcyon_projector::disclose::view_of(&asker, *child, &decoded, 0..decoded.facts.len());
            let shown: BTreeSet<&str> = view.facts.iter().map(|f| f.event_id.as_str()).collect();
            for f in decoded.facts.iter().filter(|f| f.envelope.agency_id == agency) {
                assert!(
                    shown.contains(f.envelope.event_id.as_str()),
                    "{agency} cannot read its own fact"
                );
            }
        }
        read_back.extend(decoded.facts.iter().map(|f| (f.stream.clone(), f.sequence)));
    }
    let mut lost: BTreeMap<&str, usize> = BTreeMap::new();
    for (position, kind) in &kinds {
        if !quarantined_at.contains(position) && !read_back.contains(position) {
            *lost.entry(kind).or_default() += 1;
        }
    }
    assert!(
        unreadable.is_empty(),
        "{} children unreadable (e.g. {:?}); events neither quarantined nor readable, by mutation: {lost:?}",
        unreadable.len(),
        unreadable.first()
    );
    assert!(
        lost.values().sum::<usize>() <= duplicates,
        "events neither quarantined nor readable, by mutation: {lost:?}"
    );

    // A rebuild with other batch sizes, and its export, give the same bytes.
    let rebuilt = projector();
    for (stream, messages) in &streams {
        for chunk in messages.chunks(7) {
            rebuilt.apply(stream, chunk).unwrap();
        }
    }
    assert!(
        export(&rebuilt) == dump,
        "a rebuild's export differs from the live one"
    );
    let tally: BTreeMap<&str, usize> = kinds.values().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(*k).or_default() += 1;
        m
    });
    eprintln!(
        "fuzz seed {seed}: {cases} inputs ({tally:?}); {projected} projected, {quarantined} quarantined, \
         {duplicates} duplicates; {} children",
        by_child.len()
    );
}

/// Nesting swept through the decoder's limit in each part of the envelope: below it the event is
/// projected and reads back; at and beyond it, it is quarantined with the decoder's reason. Both sides of
/// the boundary are reached in every part.
#[test]
fn nesting_at_the_decoders_limit_is_refused_or_readable_in_every_part() {
    let base = common::children(1);
    let template = &base.envelopes[0];
    let now = halcyon_schema::clock::now_ms();
    let p = projector();
    let stream = StreamName::for_agency(&template.agency_id.parse().unwrap()).to_string();
    let mut sequence = 0;
    for (part, name) in PARTS.iter().enumerate() {
        let (mut projected, mut refused) = (0, 0);
        for depth in DECODER_DEPTH_LIMIT - 6..=DECODER_DEPTH_LIMIT + 1 {
            let mut e = template.clone();
            e.event_id = halcyon_schema::EventId::new().to_string();
            sequence += 1;
            let out = p
                .apply(
                    &stream,
                    &[Incoming {
                        sequence,
                        subject: Scenario::subject(&e),
                        payload: Bytes::from(nested_in(&e, part, depth)),
                        stored_at_ms: now,
                    }],
                )
                .unwrap();
            if out.projected == 1 {
                projected += 1;
                let child = p
                    .resolve(&halcyon_projector::Identifier::Nhs(
                        template.child.as_ref().unwrap().nhs_number.parse().unwrap(),
                    ))
                    .unwrap();
                let facts = p.facts(&child).unwrap();
                assert!(
                    facts.iter().any(|f| f.envelope.event_id == e.event_id),
                    "{name} nested {depth} deep was projected but does not read back"
                );
            } else {
                refused += 1;
                let record = p.quarantine(None).unwrap().pop().unwrap();
                assert!(
                    record
                        .problems
                        .iter()
                        .any(|r| r.to_string().contains("recursion limit")),
                    "{name} nested {depth} deep: {:?}",
                    record.problems
                );
            }
        }
        assert!(
            projected > 0 && refused > 0,
            "{name}: the sweep must cross the limit ({projected} projected, {refused} refused)"
        );
    }
    assert!(p.damaged().is_empty(), "{:?}", p.damaged());
}
