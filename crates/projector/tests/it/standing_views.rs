//! Issue 19: a standing view is derived only for an agency the policy could grant something of the child
//! (`ViewSpec::derive` skips the others). The oracle asks the policy about every fact for every registered
//! agency — a county registry with a hundred more schools and surgeries that know none of the children —
//! without the skip, and the derived views must hold exactly what it permits, agency by agency.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use halcyon_policy::{Decision, Policy, Principal, Purpose, Request, Role, decide};
use halcyon_projector::view::policy_fact;
use halcyon_projector::{Incoming, Projector, SharingState, ViewSpec};
use halcyon_schema::{AgencyKind, Registry, StreamName, pb};
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message;

fn county() -> Registry {
    let mut toml = include_str!("../../../../deploy/agencies.toml").to_owned();
    for i in 0..60 {
        toml.push_str(&format!(
            "\n[[agency]]\nid = \"school-extra-{i:02}\"\nkind = \"school\"\nareas = [\"rotherham\"]\nname = \"School {i}\"\noffice_hours_phone = \"01632 961{i:03}\"\n"
        ));
    }
    for i in 0..40 {
        toml.push_str(&format!(
            "\n[[agency]]\nid = \"health-gp-extra-{i:02}\"\nkind = \"health-community\"\nareas = [\"rotherham\"]\nname = \"Surgery {i}\"\noffice_hours_phone = \"01632 962{i:03}\"\n"
        ));
    }
    Registry::from_toml(&toml).unwrap()
}

#[test]
fn standing_views_hold_exactly_what_the_policy_permits_each_registered_agency() {
    let registry = county();
    let policy = Arc::new(Policy::england());
    let spec = ViewSpec::new(policy.clone(), &registry);
    let s = Scenario::generate(
        &ScenarioConfig {
            children: 6,
            seed: 1919,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    // One extra school takes part in every strategy discussion: an involvement recorded by another agency,
    // with nothing of its own about the child.
    let mut envelopes = s.envelopes.clone();
    let mut strategies = 0;
    for e in &mut envelopes {
        if let Some(pb::event::Kind::StrategyDiscussionHeld(d)) =
            e.event.as_mut().and_then(|e| e.kind.as_mut())
        {
            d.participant_agency_ids.push("school-extra-00".into());
            strategies += 1;
        }
    }
    assert!(strategies > 0);
    let p = Projector::temporary().unwrap().with_views(spec.clone());
    let mut sequences = std::collections::BTreeMap::<String, u64>::new();
    for e in &envelopes {
        let stream = StreamName::for_agency(&e.agency_id.parse().unwrap()).to_string();
        let seq = sequences.entry(stream.clone()).or_default();
        *seq += 1;
        let stored = e
            .recorded_at
            .as_ref()
            .map_or(0, halcyon_schema::convert::timestamp_millis)
            + 60_000;
        p.apply(
            &stream,
            &[Incoming {
                sequence: *seq,
                subject: Scenario::subject(e),
                payload: Bytes::from(e.encode_to_vec()),
                stored_at_ms: stored,
            }],
        )
        .unwrap();
    }
    p.derive_all_views().unwrap();

    let (mut agencies_seen, mut empty) = (0, 0);
    for child in &s.children {
        let id = halcyon_schema::ChildId::from_nhs(&child.nhs);
        let facts = p.facts(&id).unwrap();
        assert!(!facts.is_empty());
        let sharing = SharingState::derive(&facts);
        for agency in registry.iter() {
            let principal = Principal {
                agency: agency.id.clone(),
                kind: agency.kind,
                role: if agency.kind == AgencyKind::Mash {
                    Role::MashMember
                } else {
                    Role::Practitioner
                },
            };
            let state = sharing.for_agency_in(&agency.id, &registry);
            let permitted: BTreeSet<String> = facts
                .iter()
                .filter(|f| {
                    let Some(fact) = policy_fact(f, &sharing, &principal) else {
                        return false;
                    };
                    let request = Request {
                        principal: &principal,
                        purpose: Purpose::Safeguarding,
                        fact: &fact,
                        state: &state,
                        break_glass: None,
                        now_ms: 0,
                    };
                    matches!(decide(&policy, &request), Decision::Permit(_))
                })
                .map(|f| f.envelope.event_id.clone())
                .collect();
            let viewed: BTreeSet<String> = p
                .view(&agency.id, &id)
                .unwrap()
                .into_iter()
                .map(|e| e.event_id)
                .collect();
            assert_eq!(viewed, permitted, "{} of child {id}", agency.id);
            agencies_seen += 1;
            empty += usize::from(permitted.is_empty());
        }
    }
    assert_eq!(agencies_seen, 6 * registry.iter().count());
    eprintln!("{empty} of {agencies_seen} standing views are empty");
    let involved: halcyon_schema::AgencyId = "school-extra-00".parse().unwrap();
    assert!(
        s.children.iter().any(|c| !p
            .view(&involved, &halcyon_schema::ChildId::from_nhs(&c.nhs))
            .unwrap()
            .is_empty()),
        "the school in the strategy discussions sees what that entitles it to"
    );
    for kind in [AgencyKind::School, AgencyKind::HealthCommunity] {
        eprintln!(
            "{kind}: granted without a relationship: {}",
            policy.grants_without_relationship(kind)
        );
    }
    assert!(
        empty > 0 && empty < agencies_seen,
        "some views are empty, some are not"
    );
}
