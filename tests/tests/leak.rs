//! Issue 6: no leaks. Over a generated scenario, every principal of every agency kind asks about every child
//! for every purpose; every fact returned must be one the policy permits to that principal, for that
//! purpose and the child's state, and must carry only the fields of its projection. Referrer identity
//! never appears without its grant.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use halcyon_policy::{
    Decision, Policy, Principal, Purpose, Request, Role, decide, minimise, referrer_identity_granted,
};
use halcyon_projector::view::policy_fact;
use halcyon_projector::{Fact, SharingState};
use halcyon_schema::convert::timestamp_millis;
use halcyon_schema::pb;
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_returned_fact_is_permitted_and_minimised() {
    let h = common::Harness::start().await;
    let s = Scenario::generate(
        &ScenarioConfig {
            children: 6,
            seed: 11,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let policy = Policy::england();
    let registry = common::registry();
    let mut client = h.client().await;

    // The oracle's copy of each child's facts, in the node's order: (occurred at, agency, sequence).
    let mut sequences: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_child: BTreeMap<String, Vec<Fact>> = BTreeMap::new();
    for e in &s.envelopes {
        let seq = sequences.entry(e.agency_id.clone()).or_default();
        *seq += 1;
        by_child
            .entry(e.child.as_ref().unwrap().nhs_number.clone())
            .or_default()
            .push(Fact {
                stream: String::new(),
                sequence: *seq,
                stored_at_ms: 0,
                envelope: e.clone(),
            });
    }
    for facts in by_child.values_mut() {
        facts.sort_by_key(|f| {
            (
                timestamp_millis(f.envelope.occurred_at.as_ref().unwrap()),
                f.envelope.agency_id.clone(),
                f.sequence,
            )
        });
    }

    let (mut calls, mut returned, mut withheld) = (0, 0, 0);
    for agency in registry.iter() {
        let role = if agency.kind == halcyon_schema::AgencyKind::Mash {
            Role::MashMember
        } else {
            Role::Practitioner
        };
        let principal = Principal {
            agency: agency.id.clone(),
            kind: agency.kind,
            role,
        };
        for purpose in Purpose::ALL.iter().copied() {
            for (nhs, facts) in &by_child {
                let view = common::find_by_nhs(&mut client, agency.id.as_str(), nhs, purpose, &after)
                    .await
                    .unwrap();
                calls += 1;
                // Asked again with nothing new projected, the node reuses the view it decided (ViewMemo):
                // the answer must be the one a fresh decision gave.
                let again = common::find_by_nhs(&mut client, agency.id.as_str(), nhs, purpose, &after)
                    .await
                    .unwrap();
                assert_eq!(again, view, "{} asked twice for {purpose}", agency.id);
                let sharing = SharingState::derive(facts);
                let state = sharing.for_agency(&principal.agency);
                let now_ms = timestamp_millis(&halcyon_schema::convert::timestamp_from_datetime(
                    time::OffsetDateTime::now_utc(),
                ));
                withheld += view.withheld.iter().map(|w| w.count).sum::<u32>();
                for shown in &view.facts {
                    returned += 1;
                    let fact = facts
                        .iter()
                        .find(|f| f.envelope.event_id == shown.event_id)
                        .expect("a fact of this child");
                    let pfact = policy_fact(fact, &sharing, &principal).unwrap();
                    let req = Request {
                        principal: &principal,
                        purpose,
                        fact: &pfact,
                        state: &state,
                        break_glass: None,
                        now_ms,
                    };
                    let Decision::Permit(permit) = decide(&policy, &req) else {
                        panic!(
                            "{} got {} ({}) for {purpose} though the policy denies it",
                            agency.id, shown.event_type, pfact.category
                        )
                    };
                    assert_eq!(shown.projection, permit.projection.to_pb() as i32);
                    let referrer = referrer_identity_granted(&policy, &req);
                    let expected =
                        minimise(fact.envelope.event.as_ref().unwrap(), permit.projection, referrer);
                    assert_eq!(
                        shown.event.as_ref(),
                        Some(&expected),
                        "{} saw more of {} than its projection",
                        agency.id,
                        shown.event_type
                    );
                    if let Some(pb::event::Kind::ReferralReceived(r)) =
                        shown.event.as_ref().and_then(|e| e.kind.as_ref())
                        && r.referrer.as_ref().is_some_and(|d| !d.referrer_name.is_empty())
                    {
                        assert!(
                            referrer,
                            "{} saw the referrer's identity without a grant",
                            agency.id
                        );
                    }
                }
            }
        }
    }
    assert_eq!(calls, registry.len() * Purpose::ALL.len() * by_child.len());
    assert!(
        returned > 100 && withheld > 100,
        "a test that exercises both: {returned} shown, {withheld} withheld"
    );
    h.node.stop(Duration::from_secs(5)).await;
}
