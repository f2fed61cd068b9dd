//! The input: one of a child's facts, reduced to what the timescales need. Plain data, independent of
//! protobuf, so the projector (or a test, or a replay) can build it from whatever it holds;
//! [`Occurrence::from_event`] builds it from a decoded event in the one place that knows which event field
//! each [`Condition`] reads.

use halcyon_schema::EventKindExt;
use halcyon_schema::pb;
use halcyon_schema::pb::event::Kind;

use crate::rule::{Condition, Conditions};

/// One fact about a child, as the deadline rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The envelope's event id: names the fact that started, met or stopped a deadline.
    pub event_id: String,
    /// When it happened (the envelope's `occurred_at`), Unix milliseconds UTC.
    pub at_ms: i64,
    /// The event's type name, e.g. `ReferralReceived` (`EventKindExt::type_name`).
    pub event_type: String,
    /// The publishing agency, and its case: together the scope of most rules.
    pub agency_id: String,
    pub case_id: String,
    /// The other agency a request is addressed to, or a response answers: for `AgencyCheckRequested`
    /// the agency asked, for `AgencyCheckResponded` the agency that asked.
    pub counterpart_agency_id: Option<String>,
    /// The [`Condition`]s the event meets.
    pub conditions: Conditions,
}

impl Occurrence {
    pub fn new(
        event_id: impl Into<String>,
        at_ms: i64,
        event_type: impl Into<String>,
        agency_id: impl Into<String>,
        case_id: impl Into<String>,
    ) -> Occurrence {
        Occurrence {
            event_id: event_id.into(),
            at_ms,
            event_type: event_type.into(),
            agency_id: agency_id.into(),
            case_id: case_id.into(),
            counterpart_agency_id: None,
            conditions: Conditions::default(),
        }
    }

    /// The same occurrence, also meeting `condition`.
    pub fn with(mut self, condition: Condition) -> Occurrence {
        self.conditions.insert(condition);
        self
    }

    /// The same occurrence, addressed to (or answering) `agency_id`.
    pub fn with_counterpart(mut self, agency_id: impl Into<String>) -> Occurrence {
        self.counterpart_agency_id = Some(agency_id.into());
        self
    }

    /// Builds an occurrence from a decoded event: its type name, the conditions it meets, and its
    /// counterpart agency.
    pub fn from_event(
        event_id: impl Into<String>,
        at_ms: i64,
        agency_id: impl Into<String>,
        case_id: impl Into<String>,
        kind: &Kind,
    ) -> Occurrence {
        let mut occurrence = Occurrence::new(event_id, at_ms, kind.type_name(), agency_id, case_id);
        let mut meets = |condition: Condition, holds: bool| {
            if holds {
                occurrence.conditions.insert(condition);
            }
        };
        match kind {
            Kind::StrategyDiscussionHeld(e) => meets(Condition::Section47Decided, e.section47_decided),
            Kind::InitialConferenceHeld(e) => meets(Condition::PlanMade, e.plan_made),
            Kind::ReviewConferenceHeld(e) => meets(Condition::PlanContinues, e.plan_continues),
            Kind::ReferralDecisionRecorded(e) => meets(
                Condition::DecisionWithoutAssessment,
                matches!(
                    e.outcome(),
                    pb::ReferralOutcome::NoFurtherAction
                        | pb::ReferralOutcome::Signpost
                        | pb::ReferralOutcome::EarlyHelp
                ),
            ),
            Kind::AgencyCheckRequested(e) => {
                meets(Condition::RagRed, e.rag() == pb::Rag::Red);
                meets(Condition::RagAmber, e.rag() == pb::Rag::Amber);
                meets(Condition::RagGreen, e.rag() == pb::Rag::Green);
            }
            Kind::EmergencyProtectionOrderMade(e) => meets(Condition::OrderExtended, e.extended),
            Kind::ContactReceived(_)
            | Kind::ReferralReceived(_)
            | Kind::ReferralAcknowledged(_)
            | Kind::AgencyCheckResponded(_)
            | Kind::AssessmentStarted(_)
            | Kind::AssessmentCompleted(_)
            | Kind::Section47EnquiryStarted(_)
            | Kind::Section47EnquiryConcluded(_)
            | Kind::ChildProtectionPlanStarted(_)
            | Kind::CategoryChanged(_)
            | Kind::ChildProtectionPlanEnded(_)
            | Kind::CoreGroupMeetingHeld(_)
            | Kind::LookedAfterPeriodStarted(_)
            | Kind::LookedAfterPeriodEnded(_)
            | Kind::LookedAfterReviewHeld(_)
            | Kind::PoliceProtectionStarted(_)
            | Kind::PoliceProtectionEnded(_)
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
            | Kind::NhsNumberSuperseded(_) => {}
        }
        let counterpart = match kind {
            Kind::AgencyCheckRequested(e) => Some(e.requested_agency_id.trim()),
            Kind::AgencyCheckResponded(e) => Some(e.requesting_agency_id.trim()),
            Kind::ContactReceived(_)
            | Kind::ReferralReceived(_)
            | Kind::ReferralDecisionRecorded(_)
            | Kind::ReferralAcknowledged(_)
            | Kind::AssessmentStarted(_)
            | Kind::AssessmentCompleted(_)
            | Kind::StrategyDiscussionHeld(_)
            | Kind::Section47EnquiryStarted(_)
            | Kind::Section47EnquiryConcluded(_)
            | Kind::InitialConferenceHeld(_)
            | Kind::ChildProtectionPlanStarted(_)
            | Kind::CategoryChanged(_)
            | Kind::ChildProtectionPlanEnded(_)
            | Kind::CoreGroupMeetingHeld(_)
            | Kind::ReviewConferenceHeld(_)
            | Kind::LookedAfterPeriodStarted(_)
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
            | Kind::NhsNumberSuperseded(_) => None,
        };
        if let Some(agency) = counterpart.filter(|a| !a.is_empty()) {
            occurrence.counterpart_agency_id = Some(agency.to_owned());
        }
        occurrence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_condition_is_read_from_the_event_it_names() {
        let cases: Vec<(Kind, Condition)> = vec![
            (
                Kind::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
                    section47_decided: true,
                    ..Default::default()
                }),
                Condition::Section47Decided,
            ),
            (
                Kind::InitialConferenceHeld(pb::InitialConferenceHeld {
                    plan_made: true,
                    ..Default::default()
                }),
                Condition::PlanMade,
            ),
            (
                Kind::ReviewConferenceHeld(pb::ReviewConferenceHeld {
                    plan_continues: true,
                    ..Default::default()
                }),
                Condition::PlanContinues,
            ),
            (
                Kind::ReferralDecisionRecorded(pb::ReferralDecisionRecorded {
                    outcome: pb::ReferralOutcome::Signpost as i32,
                    ..Default::default()
                }),
                Condition::DecisionWithoutAssessment,
            ),
            (
                Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
                    requested_agency_id: "police-tv".into(),
                    rag: pb::Rag::Amber as i32,
                }),
                Condition::RagAmber,
            ),
            (
                Kind::EmergencyProtectionOrderMade(pb::EmergencyProtectionOrderMade {
                    expires_at: None,
                    extended: true,
                }),
                Condition::OrderExtended,
            ),
        ];
        for (kind, condition) in cases {
            let o = Occurrence::from_event("e1", 0, "la-oxon", "c1", &kind);
            assert_eq!(o.event_type, condition.event_type(), "{condition}");
            assert_eq!(o.conditions.iter().collect::<Vec<_>>(), vec![condition]);
        }
    }

    #[test]
    fn unset_fields_meet_no_condition_and_checks_name_their_counterpart() {
        let decision = Kind::ReferralDecisionRecorded(pb::ReferralDecisionRecorded {
            outcome: pb::ReferralOutcome::S17Assessment as i32,
            ..Default::default()
        });
        assert!(
            Occurrence::from_event("e", 0, "la", "c", &decision)
                .conditions
                .is_empty()
        );
        let response = Kind::AgencyCheckResponded(pb::AgencyCheckResponded {
            requesting_agency_id: "mash-oxon".into(),
            summary: String::new(),
        });
        let o = Occurrence::from_event("e", 0, "police-tv", "p1", &response);
        assert_eq!(o.event_type, "AgencyCheckResponded");
        assert_eq!(o.counterpart_agency_id.as_deref(), Some("mash-oxon"));
    }
}
