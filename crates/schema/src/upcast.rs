//! Schema evolution: the envelope versions a node accepts, the shape each version allows, and the upcast
//! that reads an older envelope as the current shape (docs/contract.md, "Schema evolution").
//!
//! A node accepts the current version and the one before it ([`SCHEMA_VERSION_OLDEST`] to
//! [`SCHEMA_VERSION`]), so a rolling upgrade may move publishers first or nodes first without a quarantine.
//! The bytes are stored exactly as published; the upcast is applied every time they are read (projecting,
//! reading a fact back, rebuilding), so a rebuild gives the same facts whichever version each event came in.
//!
//! Version 2 moved the authority's contact numbers of `ChildProtectionPlanStarted` and
//! `LookedAfterPeriodStarted` into `contact` (`AuthorityContact`). A version-1 envelope may not use
//! `contact`; a version-2 envelope may not use the retired fields.
#![allow(
    deprecated,
    reason = "reading the fields version 1 used is what an upcast is for"
)]

use crate::pb;
use crate::pb::event::Kind;
use crate::validate::Problem;

/// The envelope schema version this build writes and projects.
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest envelope version a node still accepts (and upcasts).
pub const SCHEMA_VERSION_OLDEST: u32 = 1;

/// Reads `envelope` as the current shape: a version-1 envelope's contact numbers move into `contact`
/// (in the event and in a correction's replacement), and its version becomes the current one; a kind whose
/// category is fixed ([`fixed_category`]) gets it, whatever version. An envelope otherwise current, or of a
/// version outside the window (refused by validation), is returned unchanged.
pub fn upcast(mut envelope: pb::Envelope) -> pb::Envelope {
    if let Some(category) = envelope
        .event
        .as_ref()
        .and_then(|e| e.kind.as_ref())
        .and_then(fixed_category)
    {
        envelope.category = category.to_pb() as i32;
    }
    if envelope.schema_version == 1 {
        if let Some(event) = envelope.event.as_mut() {
            upcast_event_v1(event);
        }
        envelope.schema_version = 2;
    }
    envelope
}

/// The category a kind always falls in, whatever its envelope states, where the publisher has no choice: a
/// signal's outcome is part of the signal (D14, read by exactly the signal's recipients). Outcomes published
/// before D14 existed stated D11; they are read as D14 too, and a policy without D14 decides D14 as D11
/// ([`crate::Category::split_from`]), so a review of that time decides them as it did then.
pub fn fixed_category(kind: &Kind) -> Option<crate::Category> {
    matches!(kind, Kind::SignalOutcomeRecorded(_)).then_some(crate::Category::SIGNAL)
}

fn upcast_event_v1(event: &mut pb::Event) {
    let contact = |office: &mut String, out: &mut String| {
        (!office.is_empty() || !out.is_empty()).then(|| pb::AuthorityContact {
            office_hours_phone: std::mem::take(office),
            out_of_hours_phone: std::mem::take(out),
        })
    };
    match event.kind.as_mut() {
        Some(Kind::ChildProtectionPlanStarted(p)) => {
            p.contact = contact(&mut p.office_hours_phone, &mut p.out_of_hours_phone);
        }
        Some(Kind::LookedAfterPeriodStarted(l)) => {
            l.contact = contact(&mut l.office_hours_phone, &mut l.out_of_hours_phone);
        }
        Some(Kind::RecordCorrected(c)) => {
            if let Some(replacement) = c.replacement.as_mut() {
                upcast_event_v1(replacement);
            }
        }
        _ => {}
    }
}

/// Whether `version` is one a node accepts.
pub fn accepted(version: u32) -> bool {
    (SCHEMA_VERSION_OLDEST..=SCHEMA_VERSION).contains(&version)
}

/// The fields `event` (at `path`) uses that its envelope's `version` does not have: each named, with what
/// to use instead.
pub(crate) fn check_shape(version: u32, event: &pb::Event, path: &str, problems: &mut Vec<Problem>) {
    let (kind_name, retired, contact) = match event.kind.as_ref() {
        Some(Kind::ChildProtectionPlanStarted(p)) => (
            "child_protection_plan_started",
            [&p.office_hours_phone, &p.out_of_hours_phone],
            p.contact.is_some(),
        ),
        Some(Kind::LookedAfterPeriodStarted(l)) => (
            "looked_after_period_started",
            [&l.office_hours_phone, &l.out_of_hours_phone],
            l.contact.is_some(),
        ),
        Some(Kind::RecordCorrected(c)) => {
            if let Some(replacement) = c.replacement.as_ref() {
                check_shape(
                    version,
                    replacement,
                    &format!("{path}.record_corrected.replacement"),
                    problems,
                );
            }
            return;
        }
        _ => return,
    };
    match version {
        1 if contact => problems.push(Problem::Invalid {
            field: format!("{path}.{kind_name}.contact"),
            reason: "not in schema version 1 (publish version 2 to use it)".into(),
        }),
        2 => {
            for (name, value) in ["office_hours_phone", "out_of_hours_phone"]
                .into_iter()
                .zip(retired)
            {
                if !value.is_empty() {
                    problems.push(Problem::Invalid {
                        field: format!("{path}.{kind_name}.{name}"),
                        reason: "retired in schema version 2 (use contact)".into(),
                    });
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_v1() -> pb::Event {
        pb::Event {
            kind: Some(Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted {
                category: pb::PlanCategory::Neglect as i32,
                office_hours_phone: "01632 960001".into(),
                out_of_hours_phone: "01632 960002".into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_signal_outcome_is_read_as_the_signal_category_whatever_its_envelope_stated() {
        // Outcomes published before D14 existed stated D11 (exploitation), which police and schools read.
        for version in [1, 2] {
            let envelope = pb::Envelope {
                schema_version: version,
                category: pb::DataCategory::D11Exploitation as i32,
                event: Some(pb::Event {
                    kind: Some(Kind::SignalOutcomeRecorded(pb::SignalOutcomeRecorded {
                        signal_id: "S02/x".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            };
            assert_eq!(
                upcast(envelope).category,
                pb::DataCategory::D14Signal as i32,
                "version {version}"
            );
        }
        // Any other kind keeps the category its publisher stated.
        let plan = pb::Envelope {
            schema_version: 2,
            category: pb::DataCategory::D5ConferencePlan as i32,
            event: Some(plan_v1()),
            ..Default::default()
        };
        assert_eq!(upcast(plan).category, pb::DataCategory::D5ConferencePlan as i32);
    }

    #[test]
    fn a_version_1_plan_reads_as_version_2_with_its_numbers_in_contact() {
        let envelope = pb::Envelope {
            schema_version: 1,
            event: Some(plan_v1()),
            ..Default::default()
        };
        let up = upcast(envelope);
        assert_eq!(up.schema_version, 2);
        let Some(Kind::ChildProtectionPlanStarted(p)) = up.event.unwrap().kind else {
            panic!("a plan")
        };
        // Written out by hand: what a version-2 publisher sends for the same plan.
        assert_eq!(
            p,
            pb::ChildProtectionPlanStarted {
                category: pb::PlanCategory::Neglect as i32,
                contact: Some(pb::AuthorityContact {
                    office_hours_phone: "01632 960001".into(),
                    out_of_hours_phone: "01632 960002".into(),
                }),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_correction_s_replacement_is_upcast_too_and_current_envelopes_are_untouched() {
        let correction = pb::Event {
            kind: Some(Kind::RecordCorrected(Box::new(pb::RecordCorrected {
                replacement: Some(Box::new(plan_v1())),
                ..Default::default()
            }))),
        };
        let up = upcast(pb::Envelope {
            schema_version: 1,
            event: Some(correction),
            ..Default::default()
        });
        let Some(Kind::RecordCorrected(c)) = up.event.unwrap().kind else {
            panic!()
        };
        let Some(Kind::ChildProtectionPlanStarted(p)) = c.replacement.unwrap().kind else {
            panic!()
        };
        assert!(p.office_hours_phone.is_empty());
        assert_eq!(p.contact.unwrap().out_of_hours_phone, "01632 960002");

        let current = pb::Envelope {
            schema_version: 2,
            event: Some(plan_v1()),
            ..Default::default()
        };
        assert_eq!(upcast(current.clone()), current);
    }

    #[test]
    fn each_version_refuses_the_other_s_fields_by_name() {
        let mut problems = Vec::new();
        check_shape(2, &plan_v1(), "event", &mut problems);
        let named: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            named,
            [
                "event.child_protection_plan_started.office_hours_phone: retired in schema version 2 (use contact)",
                "event.child_protection_plan_started.out_of_hours_phone: retired in schema version 2 (use contact)",
            ]
        );
        let v2 = upcast(pb::Envelope {
            schema_version: 1,
            event: Some(plan_v1()),
            ..Default::default()
        })
        .event
        .unwrap();
        let mut problems = Vec::new();
        check_shape(1, &v2, "event", &mut problems);
        assert_eq!(
            problems[0].to_string(),
            "event.child_protection_plan_started.contact: not in schema version 1 (publish version 2 to use it)"
        );
        assert!(accepted(1) && accepted(2) && !accepted(0) && !accepted(3));
    }
}
