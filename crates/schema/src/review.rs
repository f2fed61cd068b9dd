//! Validation of the accountability events that review access (`BreakGlassReviewed`) and record what was
//! done with a multi-agency signal (`SignalOutcomeRecorded`), kept beside `validate.rs` so that file only
//! dispatches to them.

use crate::ids::AgencyId;
use crate::pb;
use crate::validate::Problem;

/// Longest review reason accepted (a reason is a sentence or two, not a report).
pub const REVIEW_REASON_MAX_LEN: usize = 2000;

/// Checks a break-glass review names the access record, the accessing agency, the reviewer, an outcome
/// and a reason.
pub(crate) fn check_break_glass_reviewed(e: &pb::BreakGlassReviewed, problems: &mut Vec<Problem>) {
    let field = |name: &str| format!("event.break_glass_reviewed.{name}");
    let missing =
        |problems: &mut Vec<Problem>, name: &str| problems.push(Problem::Missing { field: field(name) });
    let invalid = |problems: &mut Vec<Problem>, name: &str, reason: String| {
        problems.push(Problem::Invalid {
            field: field(name),
            reason,
        })
    };
    if e.access_record_id.is_empty() {
        missing(problems, "access_record_id");
    } else if uuid::Uuid::parse_str(&e.access_record_id).is_err() {
        invalid(
            problems,
            "access_record_id",
            format!("{:?} is not an access record id (a UUID)", e.access_record_id),
        );
    }
    if e.accessing_agency_id.is_empty() {
        missing(problems, "accessing_agency_id");
    } else if let Err(err) = e.accessing_agency_id.parse::<AgencyId>() {
        invalid(problems, "accessing_agency_id", err.to_string());
    }
    if e.reviewer_id.trim().is_empty() {
        missing(problems, "reviewer_id");
    }
    match pb::BreakGlassReviewOutcome::try_from(e.outcome) {
        Ok(pb::BreakGlassReviewOutcome::Unspecified) => missing(problems, "outcome"),
        Ok(_) => {}
        Err(_) => invalid(problems, "outcome", format!("unknown value {}", e.outcome)),
    }
    if e.reason.trim().is_empty() {
        missing(problems, "reason");
    } else if e.reason.len() > REVIEW_REASON_MAX_LEN {
        invalid(
            problems,
            "reason",
            format!("at most {REVIEW_REASON_MAX_LEN} bytes"),
        );
    }
}

/// Longest signal id accepted: a rule id, `/`, an event id.
pub const SIGNAL_ID_MAX_LEN: usize = 100;

/// Checks a signal id is `<rule id>/<event id>`: the rule id letters, digits, `-` and `_`; the event id a
/// UUID. Returns the reason when it is not.
pub fn check_signal_id(id: &str) -> Result<(), String> {
    if id.len() > SIGNAL_ID_MAX_LEN {
        return Err(format!("at most {SIGNAL_ID_MAX_LEN} bytes"));
    }
    let Some((rule, event)) = id.split_once('/') else {
        return Err(format!(
            "{id:?} is not a signal id (<rule id>/<event id>, e.g. S02/0192…)"
        ));
    };
    if rule.is_empty()
        || !rule
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{rule:?} is not a rule id (letters, digits, '-' and '_')"
        ));
    }
    // A signal that could not take its completing fact's name (another holds it) is `<rule>/<event>~<n>`.
    let (event, nth) = match event.split_once('~') {
        Some((event, n)) => (event, Some(n)),
        None => (event, None),
    };
    if uuid::Uuid::parse_str(event).is_err() {
        return Err(format!("{event:?} is not an event id (a UUID)"));
    }
    if let Some(n) = nth
        && !n.parse::<u32>().is_ok_and(|k| k >= 2 && k.to_string() == n)
    {
        return Err(format!("{n:?} after '~' is not a number from 2"));
    }
    Ok(())
}

/// Checks a signal outcome names the signal, an outcome and who recorded it, and gives a reason when no
/// action is taken.
pub(crate) fn check_signal_outcome_recorded(e: &pb::SignalOutcomeRecorded, problems: &mut Vec<Problem>) {
    let field = |name: &str| format!("event.signal_outcome_recorded.{name}");
    if e.signal_id.is_empty() {
        problems.push(Problem::Missing {
            field: field("signal_id"),
        });
    } else if let Err(reason) = check_signal_id(&e.signal_id) {
        problems.push(Problem::Invalid {
            field: field("signal_id"),
            reason,
        });
    }
    let outcome = pb::SignalOutcome::try_from(e.outcome);
    match outcome {
        Ok(pb::SignalOutcome::Unspecified) => problems.push(Problem::Missing {
            field: field("outcome"),
        }),
        Ok(_) => {}
        Err(_) => problems.push(Problem::Invalid {
            field: field("outcome"),
            reason: format!("unknown value {}", e.outcome),
        }),
    }
    if e.recorded_by.trim().is_empty() {
        problems.push(Problem::Missing {
            field: field("recorded_by"),
        });
    }
    if e.reason.len() > REVIEW_REASON_MAX_LEN {
        problems.push(Problem::Invalid {
            field: field("reason"),
            reason: format!("at most {REVIEW_REASON_MAX_LEN} bytes"),
        });
    } else if outcome == Ok(pb::SignalOutcome::NoAction) && e.reason.trim().is_empty() {
        problems.push(Problem::Invalid {
            field: field("reason"),
            reason: "missing: an outcome of no action needs a reason".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of_outcome(e: &pb::SignalOutcomeRecorded) -> Vec<String> {
        let mut p = Vec::new();
        check_signal_outcome_recorded(e, &mut p);
        p.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_signal_outcome_names_signal_outcome_recorder_and_a_reason_for_no_action() {
        let ok = pb::SignalOutcomeRecorded {
            signal_id: "S02/0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c".into(),
            outcome: pb::SignalOutcome::ActionTaken as i32,
            recorded_by: "mash-07".into(),
            reason: String::new(),
        };
        assert_eq!(problems_of_outcome(&ok), Vec::<String>::new());
        // A signal named after a fact another signal's name already holds.
        assert_eq!(
            check_signal_id("S01/0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c~2"),
            Ok(())
        );
        for bad in ["~1", "~", "~x", "~-2", "~02", "~+2"] {
            assert!(
                check_signal_id(&format!("S01/0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c{bad}")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            problems_of_outcome(&pb::SignalOutcomeRecorded::default()),
            vec![
                "event.signal_outcome_recorded.signal_id: missing",
                "event.signal_outcome_recorded.outcome: missing",
                "event.signal_outcome_recorded.recorded_by: missing",
            ]
        );
        let no_action = pb::SignalOutcomeRecorded {
            outcome: pb::SignalOutcome::NoAction as i32,
            reason: "  ".into(),
            ..ok.clone()
        };
        assert_eq!(
            problems_of_outcome(&no_action),
            vec!["event.signal_outcome_recorded.reason: missing: an outcome of no action needs a reason"]
        );
        let bad = pb::SignalOutcomeRecorded {
            signal_id: "S02 0192".into(),
            outcome: 9,
            ..ok
        };
        let p = problems_of_outcome(&bad);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("not a signal id"), "{p:?}");
        assert_eq!(p[1], "event.signal_outcome_recorded.outcome: unknown value 9");
        assert!(check_signal_id("S/x").is_err());
        assert!(check_signal_id("S 1/0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c").is_err());
    }

    fn review() -> pb::BreakGlassReviewed {
        pb::BreakGlassReviewed {
            access_record_id: "0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c".into(),
            audit_sequence: 12,
            accessing_agency_id: "yjs-rotherham".into(),
            reviewer_id: "dpo-01".into(),
            outcome: pb::BreakGlassReviewOutcome::Justified as i32,
            reason: "child missing overnight; access proportionate".into(),
        }
    }

    fn problems(e: &pb::BreakGlassReviewed) -> Vec<String> {
        let mut p = Vec::new();
        check_break_glass_reviewed(e, &mut p);
        p.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_complete_review_passes() {
        assert_eq!(problems(&review()), Vec::<String>::new());
    }

    #[test]
    fn every_missing_or_bad_field_is_named() {
        let p = problems(&pb::BreakGlassReviewed::default());
        assert_eq!(
            p,
            vec![
                "event.break_glass_reviewed.access_record_id: missing",
                "event.break_glass_reviewed.accessing_agency_id: missing",
                "event.break_glass_reviewed.reviewer_id: missing",
                "event.break_glass_reviewed.outcome: missing",
                "event.break_glass_reviewed.reason: missing",
            ]
        );
        let mut bad = review();
        bad.access_record_id = "record-7".into();
        bad.accessing_agency_id = "Youth Justice".into();
        bad.outcome = 99;
        bad.reason = "x".repeat(REVIEW_REASON_MAX_LEN + 1);
        let p = problems(&bad);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(
            p[0].starts_with("event.break_glass_reviewed.access_record_id: \"record-7\""),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("event.break_glass_reviewed.accessing_agency_id: invalid agency id"),
            "{p:?}"
        );
        assert_eq!(p[2], "event.break_glass_reviewed.outcome: unknown value 99");
        assert!(
            p[3].starts_with("event.break_glass_reviewed.reason: at most"),
            "{p:?}"
        );
    }

    #[test]
    fn an_envelope_with_an_incomplete_review_is_refused_by_name() {
        let envelope = pb::Envelope {
            event_id: crate::EventId::new().to_string(),
            case_id: "access-reviews".into(),
            agency_id: "csc-rotherham".into(),
            occurred_at: Some(crate::convert::timestamp_from_millis(1_767_603_600_000)),
            recorded_at: Some(crate::convert::timestamp_from_millis(1_767_603_600_000)),
            actor: Some(pb::Actor {
                practitioner_id: "dpo-01".into(),
                role: "privacy officer".into(),
                system: "halcyon".into(),
            }),
            child: Some(pb::ChildIdentifiers {
                nhs_number: "9434765919".into(),
                ..Default::default()
            }),
            category: pb::DataCategory::D13AccessLog as i32,
            schema_version: crate::SCHEMA_VERSION,
            lawful_basis: pb::LawfulBasis::LegalObligation as i32,
            event: Some(pb::Event {
                kind: Some(pb::event::Kind::BreakGlassReviewed(pb::BreakGlassReviewed {
                    reason: String::new(),
                    ..review()
                })),
            }),
        };
        assert!(crate::validate_envelope(envelope.clone()).is_err());
        let problems: Vec<String> = crate::validate_envelope(envelope)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems, vec!["event.break_glass_reviewed.reason: missing"]);
    }
}
