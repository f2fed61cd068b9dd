//! Issue 8 (deadlines): a child's deadlines are scheduled when the start fact is projected, closed by the end
//! fact, recorded as breached once the evaluation moment passes them; the records depend only on the facts
//! and that moment, so a rebuild evaluated at the same moment exports the same bytes.

use std::sync::Arc;

use bytes::Bytes;
use halcyon_policy::Policy;
use halcyon_projector::{DeadlineSpec, Incoming, Projector, ViewSpec};
use halcyon_schema::pb::{self, event::Kind};
use halcyon_schema::{ChildId, Registry};
use halcyon_timescales::Timescales;
use prost::Message;

const NHS: &str = "9434765919";
const CSC: &str = "csc-rotherham";
/// Monday 2 March 2026, 10:00 UTC.
const MONDAY_10H: i64 = 1_772_445_600_000;
/// T01 and T02 (1 working day, counted from the day after) fall due at the end of Tuesday 3 March.
const TUESDAY_END: i64 = 1_772_582_399_999;
/// Thursday 5 March 2026, 10:00 UTC: two working days after the referral.
const THURSDAY_10H: i64 = 1_772_704_800_000;

fn projector() -> Projector {
    let registry = Registry::from_toml(include_str!("../../../../deploy/agencies.toml")).unwrap();
    Projector::temporary()
        .unwrap()
        .with_views(ViewSpec::new(Arc::new(Policy::england()), &registry))
        .with_deadlines(DeadlineSpec::new(Arc::new(Timescales::england())))
}

fn message(sequence: u64, at_ms: i64, kind: Kind) -> Incoming {
    let envelope = halcyon_testkit::envelope(CSC, "p-1", NHS, at_ms, kind);
    Incoming {
        sequence,
        subject: format!("halcyon.events.{}.{}", envelope.agency_id, envelope.case_id),
        payload: Bytes::from(envelope.encode_to_vec()),
        stored_at_ms: at_ms,
    }
}

fn referral() -> Kind {
    Kind::ReferralReceived(pb::ReferralReceived {
        referrer: Some(pb::ReferrerDetails {
            source_code: "2A".into(),
            ..Default::default()
        }),
        summary: "school reports bruising".into(),
    })
}

fn decision() -> Kind {
    Kind::ReferralDecisionRecorded(pb::ReferralDecisionRecorded {
        outcome: pb::ReferralOutcome::S17Assessment as i32,
        rationale: "needs assessment".into(),
    })
}

fn export(p: &Projector) -> String {
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn child() -> ChildId {
    ChildId::from_nhs(&NHS.parse().unwrap())
}

const STREAM: &str = "EVENTS_CSC-ROTHERHAM";

#[test]
fn a_referral_schedules_its_deadlines_and_the_timer_records_the_ones_that_pass() {
    let p = projector();
    p.apply(STREAM, &[message(1, MONDAY_10H, referral())]).unwrap();
    p.derive_all_views().unwrap();

    let deadlines = p.deadlines_of(&child()).unwrap().deadlines;
    let rules: Vec<&str> = deadlines.iter().map(|d| d.rule_id.as_str()).collect();
    assert_eq!(rules, ["T01", "T02", "T03"]);
    assert!(deadlines.iter().all(|d| d.is_running() && d.owner() == CSC));
    assert_eq!(p.next_due_ms().unwrap(), Some(TUESDAY_END));

    // At the due time itself nothing is late.
    assert!(p.record_breaches(TUESDAY_END).unwrap().is_empty());
    assert!(p.breaches(None).unwrap().is_empty());

    let recorded = p.record_breaches(THURSDAY_10H).unwrap();
    let rules: Vec<&str> = recorded.iter().map(|n| n.deadline.rule_id.as_str()).collect();
    assert_eq!(rules, ["T01", "T02"]);
    assert!(
        recorded
            .iter()
            .all(|n| n.child == child() && n.deadline.is_running())
    );
    // Recorded once: the index no longer holds them, T03 is next.
    assert!(p.record_breaches(THURSDAY_10H).unwrap().is_empty());
    assert!(p.next_due_ms().unwrap() > Some(THURSDAY_10H));
    assert_eq!(p.breaches(Some(&child())).unwrap().len(), 2);
}

#[test]
fn a_late_decision_closes_the_breach_and_a_rebuild_at_the_same_moment_is_identical() {
    let live = projector();
    let messages = [
        message(1, MONDAY_10H, referral()),
        message(2, THURSDAY_10H, decision()),
    ];
    live.apply(STREAM, &messages[..1]).unwrap();
    live.derive_all_views().unwrap();
    live.record_breaches(THURSDAY_10H).unwrap();
    let mut notices = live.deadline_spec().unwrap().subscribe_notices();
    live.apply(STREAM, &messages[1..]).unwrap();
    live.derive_all_views().unwrap();

    let closed = notices.try_recv().unwrap();
    assert_eq!(closed.deadline.rule_id, "T01");
    assert!(closed.deadline.closed_late());
    let by = closed.deadline.ended_by.as_ref().unwrap();
    assert_eq!(
        (by.event_type.as_str(), by.at_ms),
        ("ReferralDecisionRecorded", THURSDAY_10H)
    );
    assert_eq!(closed.deadline.due_at_ms, TUESDAY_END);
    assert!(notices.try_recv().is_err(), "T02 did not change");

    // A rebuild projects everything at once and evaluates at the same moment.
    let rebuilt = projector();
    rebuilt.apply(STREAM, &messages).unwrap();
    rebuilt.derive_all_views().unwrap();
    rebuilt.record_breaches(THURSDAY_10H).unwrap();
    assert_eq!(export(&live), export(&rebuilt));
}

#[test]
fn a_decision_on_time_leaves_no_breach_and_no_index_entry() {
    let p = projector();
    p.apply(
        STREAM,
        &[
            message(1, MONDAY_10H, referral()),
            message(2, MONDAY_10H + 3_600_000, decision()),
            message(
                3,
                MONDAY_10H + 7_200_000,
                Kind::ReferralAcknowledged(pb::ReferralAcknowledged {
                    method: "email".into(),
                }),
            ),
        ],
    )
    .unwrap();
    p.derive_all_views().unwrap();
    assert!(p.record_breaches(THURSDAY_10H).unwrap().is_empty());
    assert!(p.breaches(None).unwrap().is_empty());
    // Only T03 (45 working days) still runs.
    let running: Vec<String> = p
        .deadlines_of(&child())
        .unwrap()
        .deadlines
        .iter()
        .filter(|d| d.is_running())
        .map(|d| d.rule_id.clone())
        .collect();
    assert_eq!(running, ["T03"]);
}
