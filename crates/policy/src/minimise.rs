//! Field minimisation: cut an event to what a projection allows, so a recipient gets only the fields its
//! permit covers. Every event kind is listed, so a new kind in the wire contract does not compile until
//! someone decides what each projection keeps of it.

use halcyon_schema::pb;
use halcyon_schema::pb::event::Kind;

use crate::vocabulary::{FlagContent, Projection};

/// Cuts an event to a projection.
///
/// - `Flag` keeps the event kind and only what CP-IS shares: on a plan start, whether it is an unborn plan
///   and the owning authority's phone numbers; on a looked-after start, the phone numbers. (Start and end
///   dates are the envelope's `occurred_at`; the owning authority is the fact's agency.) No category of
///   abuse and no legal status, unless the policy file grants them in `[flag] extra_fields` (`flag`).
///   Every other kind keeps just its kind, with empty content.
/// - `Summary` drops free-text narratives (summary, rationale, minutes, clinical summary, detail,
///   circumstances, found location, justification, free-text reasons) and referrer details entirely.
/// - `Full` keeps everything except referrer identity (`referrer_name`, `referrer_contact`) unless
///   `referrer_identity_granted` (D12 was permitted for this principal).
pub fn minimise(
    event: &pb::Event,
    projection: Projection,
    referrer_identity_granted: bool,
    flag_content: FlagContent,
) -> pb::Event {
    let kind = event.kind.as_ref().map(|kind| match projection {
        Projection::Flag => flag(kind, flag_content),
        Projection::Summary => summary(kind.clone()),
        Projection::Full => full(kind.clone(), referrer_identity_granted),
    });
    pb::Event { kind }
}

/// The kind with only status-flag fields (and the extra ones the policy grants).
fn flag(kind: &Kind, extra: FlagContent) -> Kind {
    match kind {
        Kind::ChildProtectionPlanStarted(e) => {
            Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted {
                category: if extra.plan_category { e.category } else { 0 },
                unborn: e.unborn,
                contact: e.contact.clone(),
                ..Default::default()
            })
        }
        Kind::CategoryChanged(e) => Kind::CategoryChanged(pb::CategoryChanged {
            category: if extra.plan_category { e.category } else { 0 },
        }),
        Kind::LookedAfterPeriodStarted(e) => Kind::LookedAfterPeriodStarted(pb::LookedAfterPeriodStarted {
            legal_status: if extra.legal_status { e.legal_status } else { 0 },
            contact: e.contact.clone(),
            ..Default::default()
        }),
        // Everything else: the kind alone, with none of its fields.
        Kind::ContactReceived(_)
        | Kind::ReferralReceived(_)
        | Kind::ReferralDecisionRecorded(_)
        | Kind::ReferralAcknowledged(_)
        | Kind::AgencyCheckRequested(_)
        | Kind::AgencyCheckResponded(_)
        | Kind::AssessmentStarted(_)
        | Kind::AssessmentCompleted(_)
        | Kind::StrategyDiscussionHeld(_)
        | Kind::Section47EnquiryStarted(_)
        | Kind::Section47EnquiryConcluded(_)
        | Kind::InitialConferenceHeld(_)
        | Kind::ChildProtectionPlanEnded(_)
        | Kind::CoreGroupMeetingHeld(_)
        | Kind::ReviewConferenceHeld(_)
        | Kind::LookedAfterPeriodEnded(_)
        | Kind::LookedAfterReviewHeld(_)
        | Kind::PoliceProtectionStarted(_)
        | Kind::PoliceProtectionEnded(_)
        | Kind::EmergencyProtectionOrderMade(_)
        | Kind::MissingEpisodeReported(_)
        | Kind::MissingEpisodeClosed(_)
        | Kind::ReturnHomeInterviewCompleted(_)
        | Kind::AttendanceConcernRecorded(_)
        | Kind::ExclusionRecorded(_)
        | Kind::HealthAttendanceRecorded(_)
        | Kind::PoliceIntelligenceRecorded(_)
        | Kind::ExploitationIndicatorRecorded(_)
        | Kind::ConcernRecorded(_)
        | Kind::InvolvementStarted(_)
        | Kind::InvolvementEnded(_)
        | Kind::ConsentRecorded(_)
        | Kind::ConsentWithdrawn(_)
        | Kind::ConsentExemptionRecorded(_)
        | Kind::ShareDecisionRecorded(_)
        | Kind::OriginatorApprovalGranted(_)
        | Kind::IdentifierLinked(_)
        | Kind::RecordCorrected(_)
        | Kind::SeriousIncidentNotified(_)
        | Kind::RapidReviewCompleted(_)
        | Kind::BreakGlassReviewed(_)
        | Kind::SignalOutcomeRecorded(_)
        | Kind::IdentifierUnlinked(_)
        | Kind::NhsNumberSuperseded(_) => empty(kind),
    }
}

/// The same kind with no content.
fn empty(kind: &Kind) -> Kind {
    macro_rules! empty_kinds {
        ($($k:ident),* $(,)?) => {
            match kind {
                $(Kind::$k(_) => Kind::$k(Default::default()),)*
            }
        };
    }
    empty_kinds!(
        ContactReceived,
        ReferralReceived,
        ReferralDecisionRecorded,
        ReferralAcknowledged,
        AgencyCheckRequested,
        AgencyCheckResponded,
        AssessmentStarted,
        AssessmentCompleted,
        StrategyDiscussionHeld,
        Section47EnquiryStarted,
        Section47EnquiryConcluded,
        InitialConferenceHeld,
        ChildProtectionPlanStarted,
        CategoryChanged,
        ChildProtectionPlanEnded,
        CoreGroupMeetingHeld,
        ReviewConferenceHeld,
        LookedAfterPeriodStarted,
        LookedAfterPeriodEnded,
        LookedAfterReviewHeld,
        PoliceProtectionStarted,
        PoliceProtectionEnded,
        EmergencyProtectionOrderMade,
        MissingEpisodeReported,
        MissingEpisodeClosed,
        ReturnHomeInterviewCompleted,
        AttendanceConcernRecorded,
        ExclusionRecorded,
        HealthAttendanceRecorded,
        PoliceIntelligenceRecorded,
        ExploitationIndicatorRecorded,
        ConcernRecorded,
        InvolvementStarted,
        InvolvementEnded,
        ConsentRecorded,
        ConsentWithdrawn,
        ConsentExemptionRecorded,
        ShareDecisionRecorded,
        OriginatorApprovalGranted,
        IdentifierLinked,
        RecordCorrected,
        SeriousIncidentNotified,
        RapidReviewCompleted,
        BreakGlassReviewed,
        SignalOutcomeRecorded,
        IdentifierUnlinked,
        NhsNumberSuperseded,
    )
}

/// The kind without narratives or referrer details.
fn summary(mut kind: Kind) -> Kind {
    match &mut kind {
        Kind::ContactReceived(e) => {
            e.referrer = None;
            e.summary.clear();
        }
        Kind::ReferralReceived(e) => {
            e.referrer = None;
            e.summary.clear();
        }
        Kind::ReferralDecisionRecorded(e) => e.rationale.clear(),
        Kind::ReferralAcknowledged(_) => {}
        Kind::AgencyCheckRequested(_) => {}
        Kind::AgencyCheckResponded(e) => e.summary.clear(),
        Kind::AssessmentStarted(_) => {}
        Kind::AssessmentCompleted(e) => e.late_reason.clear(),
        Kind::StrategyDiscussionHeld(e) => e.summary.clear(),
        Kind::Section47EnquiryStarted(e) => e.summary.clear(),
        Kind::Section47EnquiryConcluded(_) => {}
        Kind::InitialConferenceHeld(e) => e.minutes_summary.clear(),
        Kind::ChildProtectionPlanStarted(_) => {}
        Kind::CategoryChanged(_) => {}
        Kind::ChildProtectionPlanEnded(e) => e.reason.clear(),
        Kind::CoreGroupMeetingHeld(e) => e.summary.clear(),
        Kind::ReviewConferenceHeld(e) => e.summary.clear(),
        Kind::LookedAfterPeriodStarted(_) => {}
        Kind::LookedAfterPeriodEnded(e) => e.reason.clear(),
        Kind::LookedAfterReviewHeld(e) => e.summary.clear(),
        Kind::PoliceProtectionStarted(e) => e.reason.clear(),
        Kind::PoliceProtectionEnded(_) => {}
        Kind::EmergencyProtectionOrderMade(_) => {}
        Kind::MissingEpisodeReported(e) => e.circumstances.clear(),
        Kind::MissingEpisodeClosed(e) => e.found_location.clear(),
        Kind::ReturnHomeInterviewCompleted(e) => e.summary.clear(),
        Kind::AttendanceConcernRecorded(_) => {}
        Kind::ExclusionRecorded(e) => e.reason.clear(),
        Kind::HealthAttendanceRecorded(e) => e.clinical_summary.clear(),
        Kind::PoliceIntelligenceRecorded(e) => e.summary.clear(),
        Kind::ExploitationIndicatorRecorded(e) => e.detail.clear(),
        Kind::ConcernRecorded(e) => e.summary.clear(),
        Kind::InvolvementStarted(_) => {}
        Kind::InvolvementEnded(_) => {}
        Kind::ConsentRecorded(_) => {}
        Kind::ConsentWithdrawn(_) => {}
        Kind::ConsentExemptionRecorded(e) => e.justification.clear(),
        Kind::ShareDecisionRecorded(e) => e.reason.clear(),
        Kind::OriginatorApprovalGranted(e) => e.reason.clear(),
        Kind::IdentifierLinked(e) => e.reason.clear(),
        Kind::RecordCorrected(e) => {
            e.reason.clear();
            // The replacement is cut as the event it stands for.
            if let Some(r) = e.replacement.as_mut() {
                r.kind = r.kind.take().map(summary);
            }
        }
        Kind::SeriousIncidentNotified(e) => e.summary.clear(),
        Kind::RapidReviewCompleted(e) => e.summary.clear(),
        Kind::BreakGlassReviewed(e) => e.reason.clear(),
        Kind::SignalOutcomeRecorded(e) => e.reason.clear(),
        Kind::IdentifierUnlinked(e) => e.reason.clear(),
        Kind::NhsNumberSuperseded(e) => e.reason.clear(),
    }
    kind
}

/// The kind in full, less referrer identity unless granted.
fn full(mut kind: Kind, referrer_identity_granted: bool) -> Kind {
    if !referrer_identity_granted && let Some(r) = halcyon_schema::catalogue::referrer_mut(&mut kind) {
        r.referrer_name.clear();
        r.referrer_contact.clear();
    }
    if let Kind::RecordCorrected(e) = &mut kind
        && let Some(r) = e.replacement.as_mut()
    {
        r.kind = r.kind.take().map(|k| full(k, referrer_identity_granted));
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral() -> pb::Event {
        pb::Event {
            kind: Some(Kind::ReferralReceived(pb::ReferralReceived {
                referrer: Some(pb::ReferrerDetails {
                    source_code: "2A".into(),
                    referrer_name: "Ms A Teacher".into(),
                    referrer_contact: "01632 960999".into(),
                }),
                summary: "bruising seen on arm during PE".into(),
            })),
        }
    }

    #[test]
    fn a_corrections_replacement_is_cut_as_the_event_it_stands_for() {
        let correction = pb::Event {
            kind: Some(Kind::RecordCorrected(Box::new(pb::RecordCorrected {
                corrected_event_id: "0190a000-0000-7000-8000-000000000001".into(),
                reason: "misrecorded".into(),
                replacement: Some(Box::new(referral())),
                entered_in_error: false,
            }))),
        };
        let cut = |p, referrer| match minimise(&correction, p, referrer, FlagContent::default()).kind {
            Some(Kind::RecordCorrected(e)) => (e.reason, e.replacement.and_then(|r| r.kind)),
            other => panic!("{other:?}"),
        };
        let Some(Kind::ReferralReceived(summary)) = cut(Projection::Summary, false).1 else {
            panic!("a referral")
        };
        assert!(summary.summary.is_empty() && summary.referrer.is_none());
        let (reason, full) = cut(Projection::Full, false);
        let Some(Kind::ReferralReceived(full)) = full else {
            panic!("a referral")
        };
        assert_eq!(reason, "misrecorded");
        assert_eq!(full.summary, "bruising seen on arm during PE");
        let referrer = full.referrer.expect("referrer");
        assert!(referrer.referrer_name.is_empty() && referrer.referrer_contact.is_empty());
    }

    fn plan_started() -> pb::Event {
        pb::Event {
            kind: Some(Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted {
                category: pb::PlanCategory::Neglect as i32,
                unborn: false,
                contact: Some(pb::AuthorityContact {
                    office_hours_phone: "01632 960001".into(),
                    out_of_hours_phone: "01632 960002".into(),
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn full_removes_referrer_identity_unless_granted() {
        let Some(Kind::ReferralReceived(cut)) = minimise(&referral(), Projection::Full, false, NONE).kind
        else {
            panic!("kind changed");
        };
        let r = cut.referrer.unwrap();
        assert_eq!(
            (
                r.source_code.as_str(),
                r.referrer_name.as_str(),
                r.referrer_contact.as_str()
            ),
            ("2A", "", "")
        );
        assert_eq!(cut.summary, "bruising seen on arm during PE");
        assert_eq!(minimise(&referral(), Projection::Full, true, NONE), referral());
    }

    #[test]
    fn summary_drops_narratives_and_referrer_details_even_when_identity_is_granted() {
        let Some(Kind::ReferralReceived(cut)) = minimise(&referral(), Projection::Summary, true, NONE).kind
        else {
            panic!("kind changed");
        };
        assert_eq!(cut, pb::ReferralReceived::default());
        let health = pb::Event {
            kind: Some(Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                setting: "ED".into(),
                reason: pb::AttendanceReason::Intoxication as i32,
                clinical_summary: "brought in by friends at 02:00".into(),
            })),
        };
        let Some(Kind::HealthAttendanceRecorded(cut)) =
            minimise(&health, Projection::Summary, false, NONE).kind
        else {
            panic!("kind changed");
        };
        assert_eq!(
            (cut.setting.as_str(), cut.reason, cut.clinical_summary.as_str()),
            ("ED", 2, "")
        );
    }

    const NONE: FlagContent = FlagContent {
        plan_category: false,
        legal_status: false,
    };

    fn looked_after() -> pb::Event {
        pb::Event {
            kind: Some(Kind::LookedAfterPeriodStarted(pb::LookedAfterPeriodStarted {
                legal_status: pb::LegalStatus::S31 as i32,
                contact: Some(pb::AuthorityContact {
                    office_hours_phone: "01632 960001".into(),
                    out_of_hours_phone: "01632 960002".into(),
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_flag_keeps_the_owning_authoritys_numbers_and_no_category_or_legal_status() {
        let Some(Kind::ChildProtectionPlanStarted(plan)) =
            minimise(&plan_started(), Projection::Flag, true, NONE).kind
        else {
            panic!("kind changed");
        };
        assert_eq!(
            plan,
            pb::ChildProtectionPlanStarted {
                category: 0,
                unborn: false,
                contact: Some(pb::AuthorityContact {
                    office_hours_phone: "01632 960001".into(),
                    out_of_hours_phone: "01632 960002".into(),
                }),
                ..Default::default()
            }
        );
        let Some(Kind::LookedAfterPeriodStarted(la)) =
            minimise(&looked_after(), Projection::Flag, true, NONE).kind
        else {
            panic!("kind changed");
        };
        assert_eq!(la.legal_status, 0);
        assert_eq!(la.contact.unwrap().office_hours_phone, "01632 960001");
        let changed = pb::Event {
            kind: Some(Kind::CategoryChanged(pb::CategoryChanged {
                category: pb::PlanCategory::SexualAbuse as i32,
            })),
        };
        assert_eq!(
            minimise(&changed, Projection::Flag, true, NONE),
            pb::Event {
                kind: Some(Kind::CategoryChanged(Default::default()))
            }
        );
    }

    #[test]
    fn a_policy_may_grant_the_category_and_legal_status_with_the_flag() {
        let all = FlagContent {
            plan_category: true,
            legal_status: true,
        };
        assert_eq!(
            minimise(&plan_started(), Projection::Flag, true, all),
            plan_started()
        );
        assert_eq!(
            minimise(&looked_after(), Projection::Flag, true, all),
            looked_after()
        );
    }

    #[test]
    fn a_flag_keeps_nothing_of_other_kinds() {
        let ended = pb::Event {
            kind: Some(Kind::ChildProtectionPlanEnded(pb::ChildProtectionPlanEnded {
                reason: "stepped down".into(),
            })),
        };
        assert_eq!(
            minimise(&ended, Projection::Flag, true, NONE),
            pb::Event {
                kind: Some(Kind::ChildProtectionPlanEnded(Default::default()))
            }
        );
        assert_eq!(
            minimise(&referral(), Projection::Flag, true, NONE),
            pb::Event {
                kind: Some(Kind::ReferralReceived(Default::default()))
            }
        );
        assert_eq!(
            minimise(&pb::Event { kind: None }, Projection::Full, true, NONE),
            pb::Event { kind: None }
        );
    }
}
