//! Issue 8 (signals): a child's multi-agency signals are derived from its facts beside its views; the record
//! names the rule and cites the facts by reference (agency, stream, sequence, event id), fires at the
//! occurred-at of the completing fact, carries the outcome a recipient recorded, and depends only on the set
//! of facts — whatever order the streams are applied in, the export is the same.

use std::sync::Arc;

use halcyon_policy::Policy;
use halcyon_projector::signals::{self, SignalSpec};
use halcyon_projector::{Incoming, Projector, ViewSpec};
use halcyon_schema::ChildId;
use halcyon_schema::pb::{self, event::Kind};
use halcyon_signals::SignalRules;

use crate::common::{Published, registry, stream};
use prost::Message;

const NHS: &str = "9434765919";
const DAY: i64 = 86_400_000;
/// Monday 2 March 2026, 10:00 UTC.
const T0: i64 = 1_772_445_600_000;

fn spec() -> SignalSpec {
    SignalSpec::new(Arc::new(SignalRules::england()), &registry())
}

fn projector() -> Projector {
    Projector::temporary()
        .unwrap()
        .with_views(ViewSpec::new(Arc::new(Policy::england()), &registry()))
        .with_signals(spec())
}

fn publish(agency: &'static str, sequence: u64, at_ms: i64, kind: Kind) -> Published {
    Published::new(
        agency,
        sequence,
        at_ms,
        halcyon_testkit::envelope(agency, "p-1", NHS, at_ms, kind),
    )
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

fn referral() -> Kind {
    Kind::ReferralReceived(pb::ReferralReceived {
        referrer: None,
        summary: "worries".into(),
    })
}

fn outcome(signal_id: &str, outcome: pb::SignalOutcome, by: &str) -> Kind {
    Kind::SignalOutcomeRecorded(pb::SignalOutcomeRecorded {
        signal_id: signal_id.into(),
        outcome: outcome as i32,
        recorded_by: by.into(),
        reason: "strategy discussion arranged".into(),
    })
}

/// The issue 8 pattern: the police record two missing episodes, a school absences, A&E an intoxication
/// attendance, within six weeks; the children's social care authority holds a referral.
fn scenario() -> Vec<Published> {
    vec![
        publish("csc-rotherham", 1, T0, referral()),
        publish("police-sy", 1, T0 + DAY, missing()),
        publish("police-sy", 2, T0 + 8 * DAY, missing()),
        publish("school-oakwood", 1, T0 + 15 * DAY, absence()),
        publish("health-rgh-ed", 1, T0 + 20 * DAY, intoxication()),
    ]
}

/// Applies each agency's messages as one stream, agencies in the given order, then derives.
fn apply(p: &Projector, events: &[Published], agencies: &[&str]) {
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

const AGENCIES: [&str; 5] = [
    "csc-rotherham",
    "police-sy",
    "school-oakwood",
    "health-rgh-ed",
    "mash-rotherham",
];

fn export(p: &Projector) -> String {
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn child() -> ChildId {
    ChildId::from_nhs(&NHS.parse().unwrap())
}

#[test]
fn issue_8_the_pattern_raises_one_signal_citing_its_facts_by_reference() {
    let events = scenario();
    let p = projector();
    let mut notices = p.signal_spec().unwrap().subscribe_notices();
    apply(&p, &events, &AGENCIES);
    let stored = p.signals_of(&child()).unwrap();
    assert_eq!(stored.lead_authority, "csc-rotherham");
    assert_eq!(stored.signals.len(), 1, "{stored:?}");
    let s = &stored.signals[0];
    assert_eq!(s.rule_id, "S02");
    assert_eq!(s.fired_at_ms, T0 + 20 * DAY);
    assert_eq!(s.id(), format!("S02/{}", events[4].envelope.event_id));
    let cited: Vec<(&str, &str, u64, &str)> = s
        .facts
        .iter()
        .map(|f| {
            (
                f.agency_id.as_str(),
                f.stream.as_str(),
                f.sequence,
                f.event_id.as_str(),
            )
        })
        .collect();
    let want: Vec<(String, String, u64, String)> = events[1..]
        .iter()
        .map(|e| {
            (
                e.agency.to_owned(),
                stream(e.agency),
                e.message.sequence,
                e.envelope.event_id.clone(),
            )
        })
        .collect();
    let want: Vec<(&str, &str, u64, &str)> = want
        .iter()
        .map(|(a, s, q, e)| (a.as_str(), s.as_str(), *q, e.as_str()))
        .collect();
    assert_eq!(cited, want);
    assert!(s.outcome.is_none());
    // The record holds references only: no narrative of any fact is in it.
    let bytes = p.signals_of(&child()).unwrap().encode_to_vec();
    for text in ["did not return", "intoxicated", "worries"] {
        assert!(!String::from_utf8_lossy(&bytes).contains(text));
    }
    // Told once, when it fired.
    let notice = notices.try_recv().expect("a notice");
    assert_eq!(notice.signal, *s);
    assert!(notices.try_recv().is_err());
}

#[test]
fn issue_8_signals_do_not_depend_on_the_order_streams_are_applied_in() {
    let events = scenario();
    let forward = projector();
    apply(&forward, &events, &AGENCIES);
    let backward = projector();
    let mut reversed = AGENCIES;
    reversed.reverse();
    apply(&backward, &events, &reversed);
    assert!(export(&forward).lines().any(|l| l.starts_with("S ")));
    assert_eq!(export(&forward), export(&backward));
}

#[test]
fn a_recipients_outcome_is_applied_and_anyone_elses_is_not() {
    let mut events = scenario();
    let id = format!("S02/{}", events[4].envelope.event_id);
    events.push(publish(
        "school-oakwood",
        2,
        T0 + 22 * DAY,
        outcome(&id, pb::SignalOutcome::NoAction, "dsl-1"),
    ));
    let p = projector();
    apply(&p, &events, &AGENCIES);
    assert!(p.signals_of(&child()).unwrap().signals[0].outcome.is_none());

    let mut notices = p.signal_spec().unwrap().subscribe_notices();
    let recorded = publish(
        "mash-rotherham",
        1,
        T0 + 21 * DAY,
        outcome(&id, pb::SignalOutcome::ActionTaken, "mash-07"),
    );
    events.push(recorded.clone());
    apply(&p, &events, &["mash-rotherham"]);
    let s = &p.signals_of(&child()).unwrap().signals[0];
    let o = s.outcome.as_ref().expect("the MASH's outcome");
    assert_eq!(o.outcome, pb::SignalOutcome::ActionTaken as i32);
    assert_eq!(
        (o.agency_id.as_str(), o.recorded_by.as_str()),
        ("mash-rotherham", "mash-07")
    );
    let fact = o.fact.as_ref().unwrap();
    assert_eq!(
        (fact.stream.as_str(), fact.sequence, fact.event_id.as_str()),
        ("EVENTS_MASH-ROTHERHAM", 1, recorded.envelope.event_id.as_str())
    );
    assert_eq!(notices.try_recv().expect("the outcome is announced").signal, *s);

    // The as-of derivation: nothing before the attendance, the signal without its outcome before the
    // outcome, and with it after.
    let facts = p.facts(&child()).unwrap();
    let spec = p.signal_spec().unwrap();
    assert!(
        signals::derive_until(spec, &facts, T0 + 20 * DAY - 1)
            .signals
            .is_empty()
    );
    let then = signals::derive_until(spec, &facts, T0 + 20 * DAY);
    assert_eq!(then.signals.len(), 1);
    assert!(then.signals[0].outcome.is_none());
    assert_eq!(signals::derive_until(spec, &facts, i64::MAX).signals[0], *s);
}

#[test]
fn a_fact_outside_the_window_raises_nothing() {
    let mut events = scenario();
    // The attendance 43 days after the first missing episode: the first episode is outside S02's 42 days,
    // so the episodes are no longer "repeat" within the window.
    events[4] = publish("health-rgh-ed", 1, T0 + DAY + 43 * DAY, intoxication());
    let p = projector();
    apply(&p, &events, &AGENCIES);
    assert!(p.signals_of(&child()).unwrap().signals.is_empty());
    assert!(!export(&p).lines().any(|l| l.starts_with("S ")));
}

/// Issue 19: every child's signals come a page of children at a time. Three children each completing the
/// pattern: one child a page, in child order, and no token after the last.
#[test]
fn signals_of_every_child_come_a_page_of_children_at_a_time() {
    let children = halcyon_testkit::Scenario::generate(
        &halcyon_testkit::ScenarioConfig {
            children: 3,
            ..Default::default()
        },
        &halcyon_testkit::ScenarioAgencies::deploy(),
    )
    .children;
    let p = projector();
    let mut sequences = std::collections::BTreeMap::<&str, u64>::new();
    for child in &children {
        for e in scenario() {
            let mut envelope = e.envelope.clone();
            envelope.child.as_mut().unwrap().nhs_number = child.nhs.to_string();
            let seq = sequences.entry(e.agency).or_default();
            *seq += 1;
            let message = Published::new(e.agency, *seq, e.message.stored_at_ms, envelope).message;
            p.apply(&stream(e.agency), &[message]).unwrap();
        }
    }
    p.derive_all_views().unwrap();
    let mut expected: Vec<ChildId> = children.iter().map(|c| ChildId::from_nhs(&c.nhs)).collect();
    expected.sort();
    let (mut pages, mut after) = (Vec::new(), None);
    loop {
        let (page, next) = p.signals_page(after.as_ref(), 1).unwrap();
        pages.push(
            page.iter()
                .map(|(c, s)| (*c, s.signals.len()))
                .collect::<Vec<_>>(),
        );
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages.len() <= 3, "the pages end");
    }
    let wanted: Vec<Vec<(ChildId, usize)>> = expected.iter().map(|c| vec![(*c, 1)]).collect();
    assert_eq!(pages, wanted);
    let (all, next) = p.signals_page(None, 100).unwrap();
    assert_eq!((all.len(), next), (3, None));
}
