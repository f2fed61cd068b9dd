//! Given/when/then tests of the store: exactly-once batches, dedupe by event id, quarantine, identity links,
//! and order independence.

use bytes::Bytes;
use halcyon_projector::{Identifier, Incoming, Projector};
use halcyon_schema::pb;
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message;

fn incoming(seq: u64, envelope: &pb::Envelope) -> Incoming {
    Incoming {
        sequence: seq,
        subject: Scenario::subject(envelope),
        payload: Bytes::from(envelope.encode_to_vec()),
        stored_at_ms: stored_ms(envelope),
    }
}

/// When the bus stored an event: a minute after its agency recorded it (the projector quarantines an event
/// recorded after it was stored).
fn stored_ms(envelope: &pb::Envelope) -> i64 {
    envelope
        .recorded_at
        .as_ref()
        .map_or(0, halcyon_schema::convert::timestamp_millis)
        + 60_000
}

fn scenario(children: usize) -> Scenario {
    Scenario::generate(
        &ScenarioConfig {
            children,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    )
}

/// Splits a scenario into per-stream message lists, numbered as JetStream would.
fn streams(s: &Scenario) -> std::collections::BTreeMap<String, Vec<Incoming>> {
    let mut out: std::collections::BTreeMap<String, Vec<Incoming>> = Default::default();
    for e in &s.envelopes {
        let stream = halcyon_schema::StreamName::for_agency(&e.agency_id.parse().unwrap()).to_string();
        let list = out.entry(stream).or_default();
        let seq = list.len() as u64 + 1;
        list.push(incoming(seq, e));
    }
    out
}

fn export(p: &Projector) -> String {
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn a_replayed_batch_is_applied_once() {
    let s = scenario(3);
    let p = Projector::temporary().unwrap();
    for (stream, msgs) in streams(&s) {
        let first = p.apply(&stream, &msgs).unwrap();
        assert_eq!(first.projected as usize, msgs.len());
        let again = p.apply(&stream, &msgs).unwrap();
        assert_eq!((again.projected, again.skipped as usize), (0, msgs.len()));
        assert_eq!(p.checkpoint(&stream), msgs.len() as u64);
    }
    let (facts, quarantined, duplicates) = p.counts().unwrap();
    assert_eq!(
        (facts as usize, quarantined, duplicates),
        (s.envelopes.len(), 0, 0)
    );
}

#[test]
fn the_same_event_id_later_in_the_stream_is_a_recorded_duplicate() {
    let s = scenario(1);
    let e = &s.envelopes[0];
    let p = Projector::temporary().unwrap();
    let out = p.apply("EVENTS_X", &[incoming(1, e), incoming(2, e)]).unwrap();
    assert_eq!((out.projected, out.duplicates), (1, 1));
    assert_eq!(p.counts().unwrap(), (1, 0, 1));
}

#[test]
fn a_re_send_in_a_later_batch_after_a_restart_and_a_link_is_a_recorded_duplicate() {
    let s = scenario(1);
    let child = &s.children[0];
    let police = s.envelopes.iter().find(|e| e.agency_id == "police-sy").unwrap();
    let mut local_only = police.clone();
    local_only.child.as_mut().unwrap().nhs_number.clear();
    let mut link = police.clone();
    link.event_id = halcyon_schema::EventId::new().to_string();
    // A day later, so the moved first copy is the only fact at its moment under the linked child.
    link.occurred_at.as_mut().unwrap().seconds += 86_400;
    link.recorded_at.as_mut().unwrap().seconds += 86_400;
    link.event = Some(pb::Event {
        kind: Some(pb::event::Kind::IdentifierLinked(pb::IdentifierLinked {
            upn: String::new(),
            local_agency_id: "police-sy".into(),
            local_id: child.police_local_id.clone(),
            reason: "confirmed by date of birth and address".into(),
        })),
    });
    let dir = std::env::temp_dir().join(format!(
        "halcyon-projector-resend-{}-{}",
        std::process::id(),
        halcyon_schema::clock::now_ms()
    ));
    {
        let p = Projector::open(&dir).unwrap();
        p.apply("EVENTS_POLICE_SY", &[incoming(1, &local_only)]).unwrap();
        let again = p.apply("EVENTS_POLICE_SY", &[incoming(2, &local_only)]).unwrap();
        assert_eq!((again.projected, again.duplicates), (0, 1), "a later batch");
        p.apply("EVENTS_POLICE_SY", &[incoming(3, &link)]).unwrap();
        let moved = p.apply("EVENTS_POLICE_SY", &[incoming(4, &local_only)]).unwrap();
        assert_eq!(
            (moved.projected, moved.duplicates),
            (0, 1),
            "the first copy, moved by the link"
        );
        p.flush().unwrap();
    }
    let p = Projector::open(&dir).unwrap();
    let out = p
        .apply(
            "EVENTS_POLICE_SY",
            &[incoming(5, &local_only), incoming(6, &link), incoming(7, police)],
        )
        .unwrap();
    assert_eq!(
        (out.projected, out.duplicates),
        (0, 3),
        "after a restart: the first copy (moved by the link), the link, and the same event id now filed by \
         NHS number, which the link made the same child"
    );
    let nhs_child = p.resolve(&Identifier::Nhs(child.nhs.clone())).unwrap();
    assert_eq!(p.facts(&nhs_child).unwrap().len(), 2);
    assert_eq!(p.counts().unwrap(), (2, 0, 5));
    drop(p);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_messages_are_quarantined_with_reasons_and_do_not_stop_the_batch() {
    let s = scenario(1);
    let good = &s.envelopes[0];
    let mut other_agency = good.clone();
    other_agency.agency_id = "police-sy".into();
    other_agency.event_id = halcyon_schema::EventId::new().to_string();
    let garbage = Incoming {
        sequence: 2,
        subject: Scenario::subject(good),
        payload: Bytes::from_static(b"\xff\xff\xff"),
        stored_at_ms: 1,
    };
    let p = Projector::temporary().unwrap();
    let mut msgs = vec![incoming(1, good), garbage, incoming(3, &other_agency)];
    msgs[2].subject = Scenario::subject(good);
    let out = p.apply("EVENTS_SCHOOL_OAKWOOD", &msgs).unwrap();
    assert_eq!((out.projected, out.quarantined), (1, 2));
    let q = p.quarantine(None).unwrap();
    assert!(
        q[0].reasons().starts_with("payload: cannot decode"),
        "{}",
        q[0].reasons()
    );
    assert!(
        q[1].reasons()
            .contains("agency_id: envelope claims \"police-sy\""),
        "{}",
        q[1].reasons()
    );
    assert_eq!(
        p.quarantine(Some(&"school-oakwood".parse().unwrap()))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        p.quarantine(Some(&"police-sy".parse().unwrap())).unwrap().len(),
        0
    );
}

#[test]
fn interleaving_of_streams_does_not_change_the_read_models() {
    let s = scenario(8);
    let streams = streams(&s);
    let spec = || {
        let registry =
            halcyon_schema::Registry::from_toml(include_str!("../../../../deploy/agencies.toml")).unwrap();
        halcyon_projector::ViewSpec::new(std::sync::Arc::new(halcyon_policy::Policy::england()), &registry)
    };
    let forwards = Projector::temporary().unwrap().with_views(spec());
    for (stream, msgs) in &streams {
        for chunk in msgs.chunks(7) {
            forwards.apply(stream, chunk).unwrap();
            // Derive some views part-way: when views are derived must not change them.
            forwards.derive_views().unwrap();
        }
    }
    forwards.derive_all_views().unwrap();
    let backwards = Projector::temporary().unwrap().with_views(spec());
    for (stream, msgs) in streams.iter().rev() {
        backwards.apply(stream, msgs).unwrap();
    }
    assert!(backwards.views_stale().unwrap());
    backwards.derive_all_views().unwrap();
    assert!(!backwards.views_stale().unwrap());
    let exported = export(&forwards);
    assert!(
        exported.lines().any(|l| l.starts_with("V ")),
        "views are part of the export"
    );
    assert_eq!(exported, export(&backwards));
}

#[test]
fn a_local_id_is_linked_only_by_an_explicit_event_and_facts_follow_it() {
    let s = scenario(1);
    let child = &s.children[0];
    let police = s.envelopes.iter().find(|e| e.agency_id == "police-sy").unwrap();
    let mut local_only = police.clone();
    local_only.child.as_mut().unwrap().nhs_number.clear();
    let p = std::sync::Arc::new(Projector::temporary().unwrap());
    // The node's cache of resolved identifiers sees the link too: any applied batch retires its answers.
    let cache = halcyon_projector::read::FactCache::of(&p);
    p.apply("EVENTS_POLICE_SY", &[incoming(1, &local_only)]).unwrap();
    let nhs_child = p.resolve(&Identifier::Nhs(child.nhs.clone())).unwrap();
    let local = Identifier::Local {
        agency: "police-sy".parse().unwrap(),
        local_id: child.police_local_id.clone(),
    };
    assert_ne!(p.resolve(&local).unwrap(), nhs_child, "no automatic link");
    let unlinked = cache.resolve(&p, &local).unwrap();
    assert_eq!(
        cache.resolved(&local),
        Some(unlinked),
        "kept while nothing is applied"
    );
    assert_eq!(p.facts(&nhs_child).unwrap().len(), 0);

    let mut link = police.clone();
    link.event_id = halcyon_schema::EventId::new().to_string();
    link.event = Some(pb::Event {
        kind: Some(pb::event::Kind::IdentifierLinked(pb::IdentifierLinked {
            upn: String::new(),
            local_agency_id: "police-sy".into(),
            local_id: child.police_local_id.clone(),
            reason: "confirmed by date of birth and address".into(),
        })),
    });
    p.apply("EVENTS_POLICE_SY", &[incoming(2, &link)]).unwrap();
    assert_eq!(p.resolve(&local).unwrap(), nhs_child);
    assert_eq!(cache.resolved(&local), None, "the link retired the cached answer");
    assert_eq!(cache.resolve(&p, &local).unwrap(), nhs_child);
    assert_eq!(
        p.facts(&nhs_child).unwrap().len(),
        2,
        "the local-only fact moved to the linked child"
    );
}

#[test]
fn a_gap_in_a_stream_is_refused_and_nothing_is_applied() {
    let s = scenario(1);
    let p = Projector::temporary().unwrap();
    p.apply("EVENTS_X", &[incoming(1, &s.envelopes[0])]).unwrap();
    let err = p.apply("EVENTS_X", &[incoming(3, &s.envelopes[1])]).unwrap_err();
    assert!(
        err.to_string().contains("expected sequence 2 next but got 3"),
        "{err}"
    );
    assert_eq!(p.checkpoint("EVENTS_X"), 1);
    assert_eq!(p.counts().unwrap().0, 1);
}
