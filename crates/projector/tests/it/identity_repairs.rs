//! Issue 20 (identity repairs): a wrong identifier link undone puts the facts it moved back under the child
//! they were recorded for, for every agency, and the read models equal a rebuild's in any stream order; an
//! NHS number superseded by a new one merges the two records — one child, both histories, found by either
//! number, later facts under the old number filed with it — and the record before the merge can still be
//! told. Expectations are written by event id from the rules in docs/corrections.md.

use std::sync::Arc;

use crate::common::{Published, registry, stream};
use halcyon_policy::Policy;
use halcyon_projector::{Identifier, Incoming, Projector, ViewSpec};
use halcyon_schema::pb::{self, event::Kind};
use halcyon_schema::{ChildId, NhsNumber, Upn};

const DAY: i64 = 86_400_000;
/// Monday 2 March 2026, 10:00 UTC.
const T0: i64 = 1_772_445_600_000;
const NHS_A: &str = "9434765919";
const NHS_B: &str = "9434765870";
const UPN: &str = "H801200001001";

fn projector() -> Projector {
    Projector::temporary()
        .unwrap()
        .with_views(ViewSpec::new(Arc::new(Policy::england()), &registry()))
}

/// An event about the child named by `nhs` (or, with `nhs` empty, only by `upn`).
fn publish(agency: &'static str, sequence: u64, at_ms: i64, nhs: &str, upn: &str, kind: Kind) -> Published {
    let mut envelope = halcyon_testkit::envelope(agency, "r-1", nhs, at_ms, kind);
    envelope.child.as_mut().unwrap().upn = upn.into();
    Published::new(agency, sequence, at_ms, envelope)
}

fn apply_in_order(p: &Projector, events: &[Published], agencies: &[&str]) {
    for agency in agencies {
        let messages: Vec<Incoming> = events
            .iter()
            .filter(|e| e.agency == *agency)
            .map(|e| e.message.clone())
            .collect();
        if !messages.is_empty() {
            p.apply(&stream(agency), &messages).unwrap();
            p.derive_views().unwrap();
        }
    }
    p.derive_all_views().unwrap();
}

fn apply_each(p: &Projector, events: &[Published]) {
    for e in events {
        p.apply(&stream(e.agency), std::slice::from_ref(&e.message))
            .unwrap();
        p.derive_views().unwrap();
    }
    p.derive_all_views().unwrap();
}

fn export(p: &Projector) -> String {
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn ids(p: &Projector, child: &ChildId) -> Vec<String> {
    p.facts(child)
        .unwrap()
        .into_iter()
        .map(|f| f.envelope.event_id)
        .collect()
}

/// Every agency's standing view of `child`, as (agency, event id).
fn views(p: &Projector, child: &ChildId) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for agency in registry().iter() {
        for entry in p.view(&agency.id, child).unwrap() {
            out.push((agency.id.to_string(), entry.event_id));
        }
    }
    out
}

fn nhs(s: &str) -> NhsNumber {
    s.parse().unwrap()
}

fn concern(sessions_missed: u32) -> Kind {
    Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
        attendance_percent: 70,
        sessions_missed,
    })
}

fn link(upn: &str) -> Kind {
    Kind::IdentifierLinked(pb::IdentifierLinked {
        upn: upn.into(),
        reason: "matched on name and date of birth".into(),
        ..Default::default()
    })
}

fn unlink(upn: &str) -> Kind {
    Kind::IdentifierUnlinked(pb::IdentifierUnlinked {
        upn: upn.into(),
        reason: "a different pupil with the same name".into(),
        ..Default::default()
    })
}

fn referral() -> Kind {
    Kind::ReferralReceived(pb::ReferralReceived {
        referrer: None,
        summary: "worries".into(),
    })
}

#[test]
fn a_wrong_link_undone_puts_the_moved_facts_back_and_equals_a_rebuild() {
    // Child A is known to the authority by NHS number; the school records two concerns about a pupil by UPN
    // only, links the UPN to child A by mistake, then undoes it.
    let events = vec![
        publish("csc-rotherham", 1, T0, NHS_A, "", referral()),
        publish("school-oakwood", 1, T0 + DAY, "", UPN, concern(11)),
        publish("school-oakwood", 2, T0 + 2 * DAY, "", UPN, concern(12)),
        publish("school-oakwood", 3, T0 + 3 * DAY, NHS_A, "", link(UPN)),
        publish("school-oakwood", 4, T0 + 4 * DAY, NHS_A, "", unlink(UPN)),
    ];
    let a = ChildId::from_nhs(&nhs(NHS_A));
    let pupil = ChildId::from_upn(&UPN.parse::<Upn>().unwrap());
    let concerns = [
        events[1].envelope.event_id.clone(),
        events[2].envelope.event_id.clone(),
    ];

    let p = projector();
    apply_each(&p, &events[..4]);
    // Linked: the concerns are filed under A, and A's views may show them.
    assert!(concerns.iter().all(|c| ids(&p, &a).contains(c)));
    assert!(ids(&p, &pupil).is_empty());
    assert_eq!(p.resolve(&Identifier::Upn(UPN.parse().unwrap())).unwrap(), a);

    apply_each(&p, &events[4..]);
    // Undone: back under the pupil's own record, for every agency; A's views name neither.
    assert_eq!(ids(&p, &pupil), concerns.to_vec());
    assert!(!concerns.iter().any(|c| ids(&p, &a).contains(c)));
    assert!(
        !views(&p, &a).iter().any(|(_, id)| concerns.contains(id)),
        "{:?}",
        views(&p, &a)
    );
    assert_eq!(p.resolve(&Identifier::Upn(UPN.parse().unwrap())).unwrap(), pupil);
    assert!(p.quarantine(None).unwrap().is_empty());
    // What stood before the undo can still be told: at the link, the concerns were A's.
    let at_link = p.facts_at(&a, T0 + 3 * DAY).unwrap();
    assert!(
        concerns
            .iter()
            .all(|c| at_link.iter().any(|f| f.envelope.event_id == *c))
    );

    // A rebuild, the streams in either order, gives the same read models.
    let live = export(&p);
    for order in [
        ["csc-rotherham", "school-oakwood"],
        ["school-oakwood", "csc-rotherham"],
    ] {
        let rebuilt = projector();
        apply_in_order(&rebuilt, &events, &order);
        assert_eq!(export(&rebuilt), live, "{order:?}");
    }
}

#[test]
fn only_the_agency_that_linked_an_identifier_may_unlink_it() {
    let events = vec![
        publish("csc-rotherham", 1, T0, NHS_A, "", referral()),
        publish("school-oakwood", 1, T0 + DAY, "", UPN, concern(11)),
        publish("school-oakwood", 2, T0 + 3 * DAY, NHS_A, "", link(UPN)),
        publish("police-sy", 1, T0 + 4 * DAY, NHS_A, "", unlink(UPN)),
    ];
    let p = projector();
    apply_each(&p, &events);
    let a = ChildId::from_nhs(&nhs(NHS_A));
    assert!(
        ids(&p, &a).contains(&events[1].envelope.event_id),
        "the link stands"
    );
    let q = p.quarantine(None).unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        q[0].reasons()
            .contains("only the agency that linked an identifier may unlink it"),
        "{}",
        q[0].reasons()
    );
}

#[test]
fn a_superseded_nhs_number_merges_both_histories_into_one_child_found_by_either_number() {
    // The police and the authority know the child by an old NHS number (B), A&E by the new one (A); A&E
    // records that A supersedes B. A later police fact still quoting B joins the merged record.
    let events = vec![
        publish(
            "police-sy",
            1,
            T0,
            NHS_B,
            "",
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
                circumstances: "did not come home".into(),
            }),
        ),
        publish(
            "health-rgh-ed",
            1,
            T0 + DAY,
            NHS_B,
            "",
            Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                setting: "ED".into(),
                reason: pb::AttendanceReason::Injury as i32,
                clinical_summary: "wrist".into(),
            }),
        ),
        publish(
            "health-rgh-ed",
            2,
            T0 + 2 * DAY,
            NHS_A,
            "",
            Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                setting: "ED".into(),
                reason: pb::AttendanceReason::Intoxication as i32,
                clinical_summary: "intoxicated".into(),
            }),
        ),
        publish(
            "health-rgh-ed",
            3,
            T0 + 3 * DAY,
            NHS_A,
            "",
            Kind::NhsNumberSuperseded(pb::NhsNumberSuperseded {
                superseded_nhs_number: NHS_B.into(),
                reason: "duplicate record merged by the NHS".into(),
            }),
        ),
        publish(
            "police-sy",
            2,
            T0 + 4 * DAY,
            NHS_B,
            "",
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
                circumstances: "again".into(),
            }),
        ),
    ];
    let (a, b) = (ChildId::from_nhs(&nhs(NHS_A)), ChildId::from_nhs(&nhs(NHS_B)));
    let p = projector();
    apply_each(&p, &events);
    assert!(
        p.quarantine(None).unwrap().is_empty(),
        "{:?}",
        p.quarantine(None).unwrap()
    );
    // One child, found by either number.
    assert_eq!(p.resolve(&Identifier::Nhs(nhs(NHS_B))).unwrap(), a);
    assert_eq!(p.resolve(&Identifier::Nhs(nhs(NHS_A))).unwrap(), a);
    // Both histories, and the later fact under the old number, under the merged child; nothing left behind.
    let merged = ids(&p, &a);
    for e in &events {
        assert!(
            merged.contains(&e.envelope.event_id),
            "{} missing",
            e.envelope.event_id
        );
    }
    assert!(ids(&p, &b).is_empty());
    // Before the merge the two records stood apart.
    let before: Vec<String> = p
        .facts_at(&a, T0 + 2 * DAY)
        .unwrap()
        .into_iter()
        .map(|f| f.envelope.event_id)
        .collect();
    assert_eq!(before, vec![events[2].envelope.event_id.clone()]);
    let b_before: Vec<String> = p
        .facts_at(&b, T0 + 2 * DAY)
        .unwrap()
        .into_iter()
        .map(|f| f.envelope.event_id)
        .collect();
    assert_eq!(
        b_before,
        vec![
            events[0].envelope.event_id.clone(),
            events[1].envelope.event_id.clone()
        ]
    );
}

#[test]
fn an_agency_that_knows_only_one_record_may_not_merge_them() {
    let events = vec![
        publish(
            "police-sy",
            1,
            T0,
            NHS_B,
            "",
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
                circumstances: "did not come home".into(),
            }),
        ),
        publish("school-oakwood", 1, T0 + DAY, NHS_A, "", concern(13)),
        publish(
            "school-oakwood",
            2,
            T0 + 2 * DAY,
            NHS_A,
            "",
            Kind::NhsNumberSuperseded(pb::NhsNumberSuperseded {
                superseded_nhs_number: NHS_B.into(),
                reason: "guess".into(),
            }),
        ),
    ];
    let p = projector();
    apply_each(&p, &events);
    assert_eq!(
        p.resolve(&Identifier::Nhs(nhs(NHS_B))).unwrap(),
        ChildId::from_nhs(&nhs(NHS_B)),
        "the records stay apart"
    );
    let q = p.quarantine(None).unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        q[0].reasons()
            .contains("recorded nothing about the superseded number"),
        "{}",
        q[0].reasons()
    );
}
