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

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use halcyon_policy::{Principal, Purpose, Role};
use halcyon_projector::read::ChildFacts;
use halcyon_projector::{Incoming, Projector};
use halcyon_schema::{AgencyKind, ChildId, Registry, StreamName, pb};
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// prost's recursion limit (`prost::encoding::DecodeContext`): how many nested messages or groups a
/// decode may enter.
const DECODER_DEPTH_LIMIT: usize = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn registry() -> Registry {
    Registry::from_toml(&std::fs::read_to_string(workspace_root().join("deploy/agencies.toml")).unwrap())
        .unwrap()
}

/// A projector as a node builds it: views, deadlines and signals.
fn projector() -> Projector {
    let policy = std::sync::Arc::new(halcyon_policy::Policy::england());
    Projector::temporary()
        .unwrap()
        .with_views(halcyon_projector::view::ViewSpec::new(policy, &registry()))
        .with_deadlines(halcyon_api::deadlines::spec(halcyon_api::deadlines::england()))
        .with_signals(halcyon_api::signals::spec(
            halcyon_api::signals::england(),
            &registry(),
        ))
}

// ── protobuf wire helpers ─────────────────────────────────────────────────────────────────────────────

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint((u64::from(field) << 3) | u64::from(wire), out);
}

/// An unknown field (number 999) holding `depth` nested groups: decoding it enters `depth` levels.
fn nested_groups(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..depth {
        tag(999, 3, &mut out);
    }
    for _ in 0..depth {
        tag(999, 4, &mut out);
    }
    out
}

/// `message` with `extra` appended inside it (as unknown fields of that message).
fn with_unknown(message: &impl Message, extra: &[u8]) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    bytes.extend_from_slice(extra);
    bytes
}

/// A length-delimited field `field` holding `inner`.
fn length_delimited(field: u32, inner: &[u8], out: &mut Vec<u8>) {
    tag(field, 2, out);
    varint(inner.len() as u64, out);
    out.extend_from_slice(inner);
}

/// The envelope with groups nested `depth` deep inside one of its parts, at the decoder's depth for that
/// part: the envelope itself, `actor` (field 6), `child` (field 7), or the event's kind (field 11 → kind).
fn nested_in(e: &pb::Envelope, part: usize, depth: usize) -> Vec<u8> {
    let groups = nested_groups(depth);
    match part {
        0 => with_unknown(e, &groups),
        1 | 2 => {
            let mut without = e.clone();
            let inner = if part == 1 {
                with_unknown(without.actor.take().as_ref().unwrap(), &groups)
            } else {
                with_unknown(without.child.take().as_ref().unwrap(), &groups)
            };
            let mut bytes = without.encode_to_vec();
            length_delimited(if part == 1 { 6 } else { 7 }, &inner, &mut bytes);
            bytes
        }
        _ => {
            // Inside the event kind's own message: Event { kind = N: message }.
            let mut without = e.clone();
            let event = without.event.take().unwrap();
            let kind = event.kind.as_ref().unwrap();
            let kind_bytes = event.encode_to_vec();
            // The kind is the event's only field: re-frame its payload with the groups appended.
            let (field, payload) = split_field(&kind_bytes);
            let _ = kind;
            let mut inner = payload.to_vec();
            inner.extend_from_slice(&groups);
            let mut event_bytes = Vec::new();
            length_delimited(field, &inner, &mut event_bytes);
            let mut bytes = without.encode_to_vec();
            length_delimited(11, &event_bytes, &mut bytes);
            bytes
        }
    }
}

/// The field number and payload of a message holding one length-delimited field.
fn split_field(bytes: &[u8]) -> (u32, &[u8]) {
    let mut buf = bytes;
    let key = prost::encoding::decode_varint(&mut buf).unwrap();
    let len = prost::encoding::decode_varint(&mut buf).unwrap() as usize;
    ((key >> 3) as u32, &buf[..len])
}

// ── mutations ─────────────────────────────────────────────────────────────────────────────────────────

fn mutate(rng: &mut ChaCha20Rng, e: &pb::Envelope) -> (Vec<u8>, &'static str) {
    let bytes = e.encode_to_vec();
    match rng.random_range(0..10) {
        0 => {
            let mut b = bytes;
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            (b, "bit flips")
        }
        1 => {
            let n = rng.random_range(0..bytes.len());
            (bytes[..n].to_vec(), "truncated")
        }
        2 => {
            // A field sent twice: the envelope's bytes, then one of its fields again.
            let mut b = bytes.clone();
            let mut again = pb::Envelope::default();
            match rng.random_range(0..4) {
                0 => again.child = e.child.clone(),
                1 => again.event = e.event.clone(),
                2 => again.agency_id = e.agency_id.clone(),
                _ => again.occurred_at = e.occurred_at,
            }
            b.extend_from_slice(&again.encode_to_vec());
            (b, "duplicated field")
        }
        3 => {
            let mut d = e.clone();
            match rng.random_range(0..6) {
                0 => d.event = None,
                1 => d.child = None,
                2 => d.actor = None,
                3 => d.recorded_at = None,
                4 => d.event_id.clear(),
                _ => d.category = 0,
            }
            (d.encode_to_vec(), "dropped field")
        }
        4 => {
            // A known message field sent as a varint, or a string field sent as a nested message.
            let mut b = bytes;
            let field = [6u32, 7, 11, 4][rng.random_range(0..4)];
            tag(field, 0, &mut b);
            varint(rng.random(), &mut b);
            (b, "wrong wire type")
        }
        5 => {
            let mut b = bytes;
            tag(rng.random_range(1..20), 0, &mut b);
            varint(rng.random(), &mut b);
            (b, "random varint")
        }
        6 => {
            let mut d = e.clone();
            let s: String = (0..rng.random_range(0..300))
                .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
                .collect();
            match rng.random_range(0..5) {
                0 => d.case_id = s,
                1 => d.child.as_mut().unwrap().given_name = s,
                2 => d.child.as_mut().unwrap().local_id = s,
                3 => d.actor.as_mut().unwrap().practitioner_id = s,
                _ => d.child.as_mut().unwrap().date_of_birth = s,
            }
            (d.encode_to_vec(), "random string")
        }
        7 | 8 => {
            // Nesting at and around the decoder's limit, in each part.
            let part = rng.random_range(0..4);
            let below = [1, 2, 2, 3, 3, 4][part.min(3)];
            let depth = DECODER_DEPTH_LIMIT - below + rng.random_range(0..4) - 1;
            (nested_in(e, part, depth), "deep nesting")
        }
        _ => (bytes, "unmutated"),
    }
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
    let now = halcyon_api::query::now_ms();
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
            let (view, _) = halcyon_api::view::view_of(
                &halcyon_policy::Policy::england(),
                &principal_of(&registry, &agency),
                Purpose::Safeguarding,
                None,
                *child,
                &decoded,
                0..decoded.facts.len(),
                now,
            );
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
    let base = Scenario::generate(
        &ScenarioConfig {
            children: 1,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let template = &base.envelopes[0];
    let now = halcyon_api::query::now_ms();
    let p = projector();
    let stream = StreamName::for_agency(&template.agency_id.parse().unwrap()).to_string();
    let mut sequence = 0;
    for (part, name) in ["envelope", "actor", "child", "event kind"].iter().enumerate() {
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
