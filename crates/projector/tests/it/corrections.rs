//! Issue 20 (corrections): a fact its recording agency corrects reads as corrected in every read model, one
//! entered in error is gone from them, and a correction by anyone else is quarantined with the reason.
//! Expectations are written from the rules in docs/corrections.md, by event id, not asked of the code.

use std::sync::Arc;

use halcyon_policy::Policy;
use halcyon_projector::deadlines::DeadlineSpec;
use halcyon_projector::read::ChildFacts;
use halcyon_projector::signals::SignalSpec;
use halcyon_projector::{Incoming, Projector, ViewSpec};
use halcyon_schema::ChildId;
use halcyon_schema::pb::{self, event::Kind};
use halcyon_signals::SignalRules;
use halcyon_timescales::Timescales;

use crate::common::{Published, registry, stream};

const NHS: &str = "9434765919";
const DAY: i64 = 86_400_000;
/// Monday 2 March 2026, 10:00 UTC.
const T0: i64 = 1_772_445_600_000;

fn projector() -> Projector {
    Projector::temporary()
        .unwrap()
        .with_views(ViewSpec::new(Arc::new(Policy::england()), &registry()))
        .with_deadlines(DeadlineSpec::new(Arc::new(Timescales::england())))
        .with_signals(SignalSpec::new(Arc::new(SignalRules::england()), &registry()))
}

fn publish(agency: &'static str, sequence: u64, at_ms: i64, kind: Kind) -> Published {
    Published::new(
        agency,
        sequence,
        at_ms,
        halcyon_testkit::envelope(agency, "c-1", NHS, at_ms, kind),
    )
}

fn apply(p: &Projector, events: &[Published]) {
    for e in events {
        p.apply(&stream(e.agency), std::slice::from_ref(&e.message))
            .unwrap();
        p.derive_views().unwrap();
    }
    p.derive_all_views().unwrap();
}

fn child() -> ChildId {
    ChildId::from_nhs(&NHS.parse().unwrap())
}

fn referral() -> Kind {
    Kind::ReferralReceived(pb::ReferralReceived {
        referrer: None,
        summary: "worries raised by a neighbour".into(),
    })
}

fn missing() -> Kind {
    Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
        circumstances: "did not return from school".into(),
    })
}

fn absence() -> Kind {
    Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
        attendance_percent: 71,
        sessions_missed: 18,
    })
}

fn intoxication() -> Kind {
    Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
        setting: "ED".into(),
        reason: pb::AttendanceReason::Intoxication as i32,
        clinical_summary: "brought in intoxicated".into(),
    })
}

fn entered_in_error(event_id: &str) -> Kind {
    Kind::RecordCorrected(Box::new(pb::RecordCorrected {
        corrected_event_id: event_id.into(),
        reason: "recorded against the wrong child".into(),
        replacement: None,
        entered_in_error: true,
    }))
}

/// The signal pattern of issue 8 (police twice missing, a school's absences, A&E intoxication) and a
/// referral to children's social care, which starts T01 (decision within one working day).
fn scenario() -> Vec<Published> {
    vec![
        publish("csc-rotherham", 1, T0, referral()),
        publish("police-sy", 1, T0 + DAY, missing()),
        publish("police-sy", 2, T0 + 8 * DAY, missing()),
        publish("school-oakwood", 1, T0 + 15 * DAY, absence()),
        publish("health-rgh-ed", 1, T0 + 20 * DAY, intoxication()),
    ]
}

/// Every agency's standing view of the child, as event ids.
fn seen_by_anyone(p: &Projector) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for agency in registry().iter() {
        for entry in p.view(&agency.id, &child()).unwrap() {
            out.push((agency.id.to_string(), entry.event_id));
        }
    }
    out
}

#[test]
fn a_referral_entered_in_error_leaves_every_view_and_stops_its_deadline() {
    let events = scenario();
    let referral_id = events[0].envelope.event_id.clone();
    let p = projector();
    apply(&p, &events);
    // Before: the referral is in some agency's view and starts T01.
    assert!(seen_by_anyone(&p).iter().any(|(_, id)| *id == referral_id));
    let t01 = format!("T01/{referral_id}");
    assert!(
        p.deadlines_of(&child())
            .unwrap()
            .deadlines
            .iter()
            .any(|d| d.key() == t01)
    );

    let correction = publish("csc-rotherham", 2, T0 + 2 * DAY, entered_in_error(&referral_id));
    apply(&p, std::slice::from_ref(&correction));

    let seen = seen_by_anyone(&p);
    assert!(
        !seen
            .iter()
            .any(|(_, id)| *id == referral_id || *id == correction.envelope.event_id),
        "the referral (or its correction) is still in a view: {seen:?}"
    );
    assert!(
        !p.deadlines_of(&child())
            .unwrap()
            .deadlines
            .iter()
            .any(|d| d.key() == t01),
        "T01 still runs for a referral entered in error"
    );
    // The record itself is immutable: both facts are still held, as recorded.
    let held: Vec<String> = p
        .facts(&child())
        .unwrap()
        .into_iter()
        .map(|f| f.envelope.event_id)
        .collect();
    assert!(held.contains(&referral_id) && held.contains(&correction.envelope.event_id));
    // Every answer reads the facts through ChildFacts: the referral is not among them.
    let read = ChildFacts::new(p.facts(&child()).unwrap());
    assert!(!read.facts.iter().any(|f| f.envelope.event_id == referral_id));
    assert!(p.quarantine(None).unwrap().is_empty());
}

#[test]
fn a_signal_whose_completing_fact_is_withdrawn_stands_withdrawn_and_its_recipients_are_told() {
    let events = scenario();
    let p = projector();
    apply(&p, &events);
    let completing = events[4].envelope.event_id.clone();
    let id = format!("S02/{completing}");
    let before = p.signals_of(&child()).unwrap();
    assert_eq!(before.signals.len(), 1);
    assert_eq!(before.signals[0].id(), id);
    assert!(before.signals[0].withdrawn.is_none());

    let mut notices = p.signal_spec().unwrap().subscribe_notices();
    let correction = publish("health-rgh-ed", 2, T0 + 21 * DAY, entered_in_error(&completing));
    apply(&p, std::slice::from_ref(&correction));

    let after = p.signals_of(&child()).unwrap();
    assert_eq!(after.signals.len(), 1, "{after:?}");
    let s = &after.signals[0];
    assert_eq!(s.id(), id, "the signal keeps its id");
    let w = s.withdrawn.as_ref().expect("withdrawn");
    assert_eq!(w.withdrawn_event_id, completing);
    assert_eq!(w.correction_event_id, correction.envelope.event_id);
    assert_eq!(w.withdrawn_at_ms, T0 + 21 * DAY);
    let notice = notices.try_recv().expect("the recipients are told");
    assert_eq!(notice.signal, *s);
}

#[test]
fn a_correction_by_another_agency_is_quarantined_with_the_reason_and_changes_nothing() {
    let events = scenario();
    let referral_id = events[0].envelope.event_id.clone();
    let p = projector();
    apply(&p, &events);
    let views_before = seen_by_anyone(&p);
    let deadlines_before = p.deadlines_of(&child()).unwrap();

    // The police withdraw the children's social care referral: refused.
    let foreign = publish("police-sy", 3, T0 + 2 * DAY, entered_in_error(&referral_id));
    apply(&p, std::slice::from_ref(&foreign));

    let quarantined = p.quarantine(None).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let q = &quarantined[0];
    assert_eq!((q.stream.as_str(), q.sequence), (stream("police-sy").as_str(), 3));
    assert_eq!(q.event_id.as_deref(), Some(foreign.envelope.event_id.as_str()));
    let reasons = q.reasons();
    assert!(
        reasons.contains("recorded by csc-rotherham") && reasons.contains("only the agency that recorded"),
        "{reasons}"
    );
    assert_eq!(seen_by_anyone(&p), views_before);
    assert_eq!(p.deadlines_of(&child()).unwrap(), deadlines_before);

    // A correction of an event this child does not have is refused too, naming the event.
    let nowhere = "0190a000-0000-7000-8000-000000000001";
    let stray = publish("csc-rotherham", 2, T0 + 2 * DAY, entered_in_error(nowhere));
    apply(&p, &[stray]);
    let reasons: Vec<String> = p.quarantine(None).unwrap().iter().map(|q| q.reasons()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(nowhere) && r.contains("not among this child's facts")),
        "{reasons:?}"
    );
}

#[test]
fn a_corrected_fact_reads_as_its_replacement_with_a_mark_and_keeps_its_place() {
    let events = scenario();
    let referral_id = events[0].envelope.event_id.clone();
    let p = projector();
    apply(&p, &events);
    let replacement = Kind::ReferralReceived(pb::ReferralReceived {
        referrer: None,
        summary: "worries raised by a teacher".into(),
    });
    let correction = publish(
        "csc-rotherham",
        2,
        T0 + 3 * DAY,
        Kind::RecordCorrected(Box::new(pb::RecordCorrected {
            corrected_event_id: referral_id.clone(),
            reason: "the referrer was misrecorded".into(),
            replacement: Some(Box::new(pb::Event {
                kind: Some(replacement.clone()),
            })),
            entered_in_error: false,
        })),
    );
    apply(&p, std::slice::from_ref(&correction));
    let read = ChildFacts::new(p.facts(&child()).unwrap());
    let fact = read
        .facts
        .iter()
        .find(|f| f.envelope.event_id == referral_id)
        .expect("the corrected referral is still read");
    assert_eq!(fact.kind(), Some(&replacement));
    assert_eq!(fact.occurred_ms(), T0, "it keeps its own time");
    let mark = fact.corrected.as_ref().expect("marked corrected");
    assert_eq!(mark.correction_event_id, correction.envelope.event_id);
    assert_eq!(mark.corrected_at_ms, T0 + 3 * DAY);
    assert!(!mark.entered_in_error);
    // Still in the views, and T01 still runs from it.
    assert!(seen_by_anyone(&p).iter().any(|(_, id)| *id == referral_id));
    let t01 = format!("T01/{referral_id}");
    assert!(
        p.deadlines_of(&child())
            .unwrap()
            .deadlines
            .iter()
            .any(|d| d.key() == t01)
    );
    // A replacement of another kind is refused.
    let wrong_kind = publish(
        "csc-rotherham",
        3,
        T0 + 4 * DAY,
        Kind::RecordCorrected(Box::new(pb::RecordCorrected {
            corrected_event_id: referral_id,
            reason: "wrong".into(),
            replacement: Some(Box::new(pb::Event {
                kind: Some(missing()),
            })),
            entered_in_error: false,
        })),
    );
    apply(&p, &[wrong_kind]);
    let reasons: Vec<String> = p.quarantine(None).unwrap().iter().map(|q| q.reasons()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("the replacement is a MissingEpisodeReported")),
        "{reasons:?}"
    );
}

#[test]
fn read_models_with_corrections_do_not_depend_on_the_order_the_streams_are_applied_in() {
    let mut events = scenario();
    let referral_id = events[0].envelope.event_id.clone();
    let completing = events[4].envelope.event_id.clone();
    events.push(publish(
        "csc-rotherham",
        2,
        T0 + 2 * DAY,
        entered_in_error(&referral_id),
    ));
    events.push(publish(
        "health-rgh-ed",
        2,
        T0 + 21 * DAY,
        entered_in_error(&completing),
    ));
    let export = |order: &[&str]| {
        let p = projector();
        for agency in order {
            let messages: Vec<Incoming> = events
                .iter()
                .filter(|e| e.agency == *agency)
                .map(|e| e.message.clone())
                .collect();
            p.apply(&stream(agency), &messages).unwrap();
            p.derive_views().unwrap();
        }
        p.derive_all_views().unwrap();
        let mut out = Vec::new();
        p.export(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let forwards = export(&["csc-rotherham", "police-sy", "school-oakwood", "health-rgh-ed"]);
    let backwards = export(&["health-rgh-ed", "school-oakwood", "police-sy", "csc-rotherham"]);
    assert_eq!(forwards, backwards);
}

#[test]
fn a_deadline_met_by_a_fact_entered_in_error_runs_again() {
    let events = scenario();
    let referral_id = events[0].envelope.event_id.clone();
    let decision = publish(
        "csc-rotherham",
        2,
        T0 + 3_600_000,
        Kind::ReferralDecisionRecorded(pb::ReferralDecisionRecorded {
            outcome: pb::ReferralOutcome::S17Assessment as i32,
            rationale: "needs an assessment".into(),
        }),
    );
    let p = projector();
    apply(&p, &events);
    apply(&p, std::slice::from_ref(&decision));
    let t01 = format!("T01/{referral_id}");
    let find = |p: &Projector| {
        p.deadlines_of(&child())
            .unwrap()
            .deadlines
            .into_iter()
            .find(|d| d.key() == t01)
            .expect("T01 runs from the referral")
    };
    assert!(!find(&p).is_running(), "met by the decision");
    let withdraw = publish(
        "csc-rotherham",
        3,
        T0 + 2 * DAY,
        entered_in_error(&decision.envelope.event_id),
    );
    apply(&p, std::slice::from_ref(&withdraw));
    let t01_now = find(&p);
    assert!(
        t01_now.is_running(),
        "the decision was entered in error: T01 is open again"
    );
    assert!(t01_now.ended_by.is_none());
}
