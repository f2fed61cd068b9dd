//! Issue 21, schema evolution over real NATS, sled and gRPC: during a rolling upgrade where publishers move
//! at different times, a node receives envelopes of the previous schema version and the current one,
//! interleaved. It must quarantine none of them and answer every agency exactly as a node that received
//! them all in the current version answers.
//!
//! The previous version's shape is written here by hand from the contract's comments (version 1 kept the
//! authority's numbers in the plan's and the looked-after period's own fields; version 2 put them in
//! `contact`), not with the node's upcast.
#![allow(
    deprecated,
    reason = "writing version-1 envelopes means setting the fields version 1 had"
)]

use crate::common;

use std::time::Duration;

use halcyon_grpc::pb;
use halcyon_policy::Purpose;
use halcyon_testkit::workspace_root;
use pb::event::Kind;

/// The same envelope as a version-1 publisher sends it.
fn as_version_1(e: &pb::Envelope) -> pb::Envelope {
    let mut v1 = e.clone();
    v1.schema_version = 1;
    match v1.event.as_mut().and_then(|ev| ev.kind.as_mut()) {
        Some(Kind::ChildProtectionPlanStarted(p)) => {
            let c = p.contact.take().unwrap_or_default();
            (p.office_hours_phone, p.out_of_hours_phone) = (c.office_hours_phone, c.out_of_hours_phone);
        }
        Some(Kind::LookedAfterPeriodStarted(l)) => {
            let c = l.contact.take().unwrap_or_default();
            (l.office_hours_phone, l.out_of_hours_phone) = (c.office_hours_phone, c.out_of_hours_phone);
        }
        _ => {}
    }
    v1
}

/// The agencies with a demo practitioner token (deploy/tokens.toml: `demo-<agency>`).
fn agencies_with_tokens() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("deploy/tokens.toml")).unwrap();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("agency = \""))
        .map(|a| a.trim_end_matches('"').to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every agency's answer about every child (the view, or the refusal's code), and A&E's flag checks.
async fn answers(
    h: &common::Harness,
    nhs_numbers: &[String],
    after: &[halcyon_bus::Position],
) -> Vec<String> {
    let mut client = h.client().await;
    let mut out = Vec::new();
    for agency in agencies_with_tokens() {
        for nhs in nhs_numbers {
            let request = common::authorised(
                pb::FindChildRequest {
                    context: Some(common::context(Purpose::Safeguarding, after)),
                    identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.clone())),
                },
                &format!("demo-{agency}"),
            );
            out.push(match client.find_child(request).await {
                Ok(view) => format!("{agency} {nhs}: {:?}", view.into_inner()),
                Err(status) => format!("{agency} {nhs}: refused {:?}", status.code()),
            });
        }
    }
    for nhs in nhs_numbers {
        let flag = client
            .check_flag(common::authorised(
                pb::CheckFlagRequest {
                    context: Some(common::context(Purpose::DirectCare, after)),
                    nhs_number: nhs.clone(),
                },
                "demo-health-rgh-ed",
            ))
            .await
            .unwrap()
            .into_inner();
        out.push(format!("flag {nhs}: {flag:?}"));
    }
    out
}

/// Messages the node quarantined.
fn quarantined(h: &common::Harness) -> u64 {
    h.node.projector().counts().unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_of_both_versions_interleaved_give_the_views_all_current_would_give() {
    let scenario = common::children(4);
    let current = scenario.envelopes.clone();
    assert!(current.iter().all(|e| e.schema_version == 2));
    // Every other envelope from a publisher still on version 1.
    let mixed: Vec<pb::Envelope> = current
        .iter()
        .enumerate()
        .map(|(i, e)| if i % 2 == 0 { as_version_1(e) } else { e.clone() })
        .collect();
    let reshaped = mixed
        .iter()
        .zip(&current)
        .filter(|(m, c)| m.schema_version == 1 && m.event != c.event)
        .count();
    assert!(
        reshaped > 0,
        "some version-1 envelopes carry the authority's numbers in the old fields"
    );

    let (all_current, interleaved) = (common::Harness::start().await, common::Harness::start().await);
    let after_current = common::publish_as_agencies(&all_current.nats.url(), &current).await;
    let after_mixed = common::publish_as_agencies(&interleaved.nats.url(), &mixed).await;
    assert_eq!(after_current, after_mixed, "the same positions on both servers");
    let nhs: Vec<String> = scenario.children.iter().map(|c| c.nhs.to_string()).collect();

    let expected = answers(&all_current, &nhs, &after_current).await;
    let got = answers(&interleaved, &nhs, &after_mixed).await;
    assert_eq!(
        quarantined(&interleaved),
        0,
        "nothing of either version quarantined"
    );
    assert_eq!(quarantined(&all_current), 0);
    assert!(
        expected.iter().any(|a| a.contains("office_hours_phone: \"0")),
        "some answer carries the authority's numbers"
    );
    assert_eq!(expected.len(), got.len());
    for (e, g) in expected.iter().zip(&got) {
        let who = e.split(':').next().unwrap_or_default();
        assert!(
            e == g,
            "{who}: the answers differ\nall current: {e}\ninterleaved: {g}"
        );
    }
    all_current.node.stop(Duration::from_secs(5)).await;
    interleaved.node.stop(Duration::from_secs(5)).await;
}
