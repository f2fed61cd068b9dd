//! Issue 19: a child's facts as they stood at a past moment are read from the read models (`facts_at`,
//! `resolve_at`) instead of a replay of every stream. The oracle is the store itself, watched as it was
//! written: one store applies the messages in the order the bus stored them, and after each message the
//! facts under every child and what each identifier resolved to are noted. At the end, for every one of
//! those moments, the read models must say exactly what was noted then — with identity links that file
//! facts under a wrong child, move them back, and link a UPN, in between.

use std::collections::BTreeMap;

use bytes::Bytes;
use halcyon_projector::{Identifier, Incoming, Projector};
use halcyon_schema::{AgencyId, ChildId, StreamName, pb};
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message;

fn link(template: &pb::Envelope, upn: &str, local_id: &str) -> pb::Envelope {
    let mut e = template.clone();
    e.event_id = halcyon_schema::EventId::new().to_string();
    e.event = Some(pb::Event {
        kind: Some(pb::event::Kind::IdentifierLinked(pb::IdentifierLinked {
            upn: upn.into(),
            local_agency_id: if local_id.is_empty() {
                String::new()
            } else {
                e.agency_id.clone()
            },
            local_id: local_id.into(),
            reason: "matched on date of birth and address".into(),
        })),
    });
    e
}

#[test]
fn a_childs_facts_at_every_moment_are_what_the_store_held_then() {
    let s = Scenario::generate(
        &ScenarioConfig {
            children: 3,
            seed: 19,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let (a, b, c) = (&s.children[0], &s.children[1], &s.children[2]);
    let nhs_of = |e: &pb::Envelope| e.child.as_ref().unwrap().nhs_number.clone();
    // Half of A's police events carry only the police's local id, half of B's school events only the UPN.
    let mut events: Vec<pb::Envelope> = Vec::new();
    let (mut police_a, mut school_b) = (0, 0);
    let n = s.envelopes.len();
    let police_of = |nhs: &str| {
        s.envelopes
            .iter()
            .find(|e| e.agency_id == "police-sy" && nhs_of(e) == nhs)
            .unwrap()
            .clone()
    };
    let school_of = |nhs: &str| {
        s.envelopes
            .iter()
            .find(|e| e.agency_id == "school-oakwood" && nhs_of(e) == nhs)
            .unwrap()
            .clone()
    };
    for (i, e) in s.envelopes.iter().enumerate() {
        let mut e = e.clone();
        if e.agency_id == "police-sy" && nhs_of(&e) == a.nhs.to_string() {
            police_a += 1;
            if police_a % 2 == 1 {
                e.child.as_mut().unwrap().nhs_number.clear();
            }
        }
        if e.agency_id == "school-oakwood" && nhs_of(&e) == b.nhs.to_string() {
            school_b += 1;
            if school_b % 2 == 1 {
                e.child.as_mut().unwrap().nhs_number.clear();
            }
        }
        let recorded = e.recorded_at;
        let stamped = |mut l: pb::Envelope| {
            l.occurred_at = recorded;
            l.recorded_at = recorded;
            l
        };
        // A's local id linked to C by mistake, then to A; B's UPN linked to B.
        if i == n * 2 / 5 {
            events.push(stamped(link(
                &police_of(&c.nhs.to_string()),
                "",
                &a.police_local_id,
            )));
        }
        if i == n / 2 {
            events.push(stamped(link(&school_of(&b.nhs.to_string()), b.upn.as_str(), "")));
        }
        if i == n * 7 / 10 {
            events.push(stamped(link(
                &police_of(&a.nhs.to_string()),
                "",
                &a.police_local_id,
            )));
        }
        events.push(e);
    }
    assert!(police_a >= 2 && school_b >= 2, "the scenario has facts to move");

    // Stored in this order, each a millisecond after the last and never before its agency recorded it.
    let mut sequences: BTreeMap<String, u64> = BTreeMap::new();
    let mut stored = i64::MIN;
    let messages: Vec<(String, Incoming)> = events
        .iter()
        .map(|e| {
            let recorded = e
                .recorded_at
                .as_ref()
                .map_or(0, halcyon_schema::convert::timestamp_millis);
            stored = (stored + 1).max(recorded + 60_000);
            let stream = StreamName::for_agency(&e.agency_id.parse().unwrap()).to_string();
            let seq = sequences.entry(stream.clone()).or_default();
            *seq += 1;
            let m = Incoming {
                sequence: *seq,
                subject: Scenario::subject(e),
                payload: Bytes::from(e.encode_to_vec()),
                stored_at_ms: stored,
            };
            (stream, m)
        })
        .collect();

    let police: AgencyId = "police-sy".parse().unwrap();
    let identifiers = [
        Identifier::Local {
            agency: police.clone(),
            local_id: a.police_local_id.clone(),
        },
        Identifier::Upn(b.upn.clone()),
        Identifier::Nhs(a.nhs.clone()),
    ];
    let mut children: Vec<ChildId> = [a, b, c].iter().map(|x| ChildId::from_nhs(&x.nhs)).collect();
    children.push(ChildId::from_local(&police, &a.police_local_id));
    children.push(ChildId::from_upn(&b.upn));

    type Noted = (BTreeMap<ChildId, Vec<(String, u64)>>, Vec<ChildId>);
    let held = |facts: &dyn Fn(&ChildId) -> Vec<halcyon_projector::Fact>| {
        children
            .iter()
            .map(|c| {
                (
                    *c,
                    facts(c).iter().map(|f| (f.stream.clone(), f.sequence)).collect(),
                )
            })
            .collect::<BTreeMap<_, Vec<_>>>()
    };
    let p = Projector::temporary().unwrap();
    let mut noted: Vec<(i64, Noted)> = Vec::new();
    let mut moves = 0;
    for (stream, m) in &messages {
        let at = m.stored_at_ms;
        let before: Vec<ChildId> = identifiers.iter().map(|id| p.resolve(id).unwrap()).collect();
        p.apply(stream, std::slice::from_ref(m)).unwrap();
        let resolved: Vec<ChildId> = identifiers.iter().map(|id| p.resolve(id).unwrap()).collect();
        moves += usize::from(before != resolved);
        noted.push((at, (held(&|c| p.facts(c).unwrap()), resolved)));
    }
    assert_eq!(moves, 3, "three links changed what an identifier denotes");

    let mut checked = 0;
    for (at, (facts, resolved)) in &noted {
        let then = held(&|c| p.facts_at(c, *at).unwrap());
        assert_eq!(&then, facts, "the facts held at {at}");
        let resolved_then: Vec<ChildId> = identifiers
            .iter()
            .map(|id| p.resolve_at(id, *at).unwrap())
            .collect();
        assert_eq!(&resolved_then, resolved, "what the identifiers denoted at {at}");
        checked += 1;
    }
    assert_eq!(checked, messages.len());
    // Before anything was stored, nothing was held.
    let first = noted[0].0;
    assert!(
        children
            .iter()
            .all(|c| p.facts_at(c, first - 1).unwrap().is_empty())
    );
}
