//! A child's sharing state, derived from the child's facts in (occurred at, agency, sequence) order: the
//! case stage, each agency's involvements, consents, exemptions and originator approvals. The policy
//! decides on it; it depends only on the set of facts, never on arrival order.

use std::collections::{BTreeMap, BTreeSet};

use halcyon_policy::{ChildState, Involvement, Stage};
use halcyon_schema::pb::{self, event::Kind};
use halcyon_schema::{AgencyId, Category};

use crate::fact::Fact;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharingState {
    pub stage: Stage,
    /// Each agency's relationships with the child.
    pub involvements: BTreeMap<AgencyId, BTreeSet<Involvement>>,
    pub consented: BTreeSet<Category>,
    pub exempted: BTreeSet<Category>,
    /// (approved event id, recipient agency) pairs from `OriginatorApprovalGranted`, each granted by the
    /// agency that recorded the approved event (an approval by anyone else grants nothing).
    pub approvals: BTreeSet<(String, AgencyId)>,
    /// The owning authority (the children's social care agency that holds the case), if known.
    pub owner: Option<AgencyId>,
    /// The agencies that have recorded a fact about the child (that stands): what places the child in an
    /// area ([`Self::for_agency_in`]).
    pub recorders: BTreeSet<AgencyId>,
    /// The agencies that made the child's MASH referral (recorded an `AgencyCheckRequested`): whose area's
    /// MASH holds the relationship `mash-referral` ([`Self::for_agency_in`]).
    pub referred_by: BTreeSet<AgencyId>,
}

impl SharingState {
    /// Folds a child's facts, in their stored order.
    pub fn derive(facts: &[Fact]) -> Self {
        Self::derive_until(facts, i64::MAX)
    }

    /// Folds the facts that had occurred by `until_ms`.
    pub fn derive_until(facts: &[Fact], until_ms: i64) -> Self {
        let facts = &*crate::corrections::effective_until(facts, until_ms);
        let mut s = Self::default();
        let mut approvals = false;
        for fact in facts.iter().filter(|f| f.occurred_ms() <= until_ms) {
            s.apply(fact);
            approvals |= matches!(fact.kind(), Some(Kind::OriginatorApprovalGranted(_)));
        }
        if approvals {
            s.approve(facts, until_ms);
        }
        s
    }

    /// The state after each prefix of `facts` — element `i` equals `derive(&facts[..=i])` — in one pass
    /// (a chronology walks every prefix; deriving each afresh cost the square of the child's facts).
    pub fn successive(facts: &[Fact]) -> Vec<Self> {
        let mut state = Self::default();
        let mut recorded_by: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        // Approvals of a fact not yet seen: approved event id → (approving agency, recipient).
        let mut waiting: std::collections::HashMap<&str, Vec<(&str, AgencyId)>> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(facts.len());
        for fact in facts {
            let (id, agency) = (fact.envelope.event_id.as_str(), fact.envelope.agency_id.as_str());
            state.apply(fact);
            recorded_by.insert(id, agency);
            for (approver, recipient) in waiting.remove(id).unwrap_or_default() {
                if approver == agency {
                    state.approvals.insert((id.to_owned(), recipient));
                }
            }
            if let Some(Kind::OriginatorApprovalGranted(a)) = fact.kind()
                && let Ok(recipient) = a.recipient_agency_id.parse::<AgencyId>()
            {
                match recorded_by.get(a.approved_event_id.as_str()) {
                    Some(by) if *by == agency => {
                        state.approvals.insert((a.approved_event_id.clone(), recipient));
                    }
                    Some(_) => {}
                    None => waiting
                        .entry(a.approved_event_id.as_str())
                        .or_default()
                        .push((agency, recipient)),
                }
            }
            out.push(state.clone());
        }
        out
    }

    /// Records the approvals among the facts that had occurred by `until_ms`: only an approval published by
    /// the agency that recorded the approved fact counts; an agency cannot approve another's record.
    fn approve(&mut self, facts: &[Fact], until_ms: i64) {
        let recorded_by: std::collections::HashMap<&str, &str> = facts
            .iter()
            .map(|f| (f.envelope.event_id.as_str(), f.envelope.agency_id.as_str()))
            .collect();
        for fact in facts.iter().filter(|f| f.occurred_ms() <= until_ms) {
            if let Some(Kind::OriginatorApprovalGranted(a)) = fact.kind()
                && recorded_by.get(a.approved_event_id.as_str()) == Some(&fact.envelope.agency_id.as_str())
                && let Ok(recipient) = a.recipient_agency_id.parse()
            {
                self.approvals.insert((a.approved_event_id.clone(), recipient));
            }
        }
    }

    fn involve(&mut self, agency: &str, involvement: Involvement) {
        if let Ok(agency) = agency.parse::<AgencyId>() {
            self.involvements.entry(agency).or_default().insert(involvement);
        }
    }

    fn end(&mut self, agency: &str, involvement: Involvement) {
        if let Ok(agency) = agency.parse::<AgencyId>()
            && let Some(set) = self.involvements.get_mut(&agency)
        {
            set.remove(&involvement);
        }
    }

    fn apply(&mut self, fact: &Fact) {
        let e = &fact.envelope;
        // A review of an access is about the access log, not the case: it gives the reviewing agency no
        // relationship with the child (else reviewing a break-glass would widen what the reviewer sees).
        // Likewise recording a signal's outcome: a recipient that records one must not gain access by it.
        if matches!(
            fact.kind(),
            Some(Kind::BreakGlassReviewed(_) | Kind::SignalOutcomeRecorded(_))
        ) {
            return;
        }
        // An answer to a MASH agency check ("not known to us", as often as not) says nothing of where the
        // child lives: it does not place the child in the answering agency's area.
        if !matches!(fact.kind(), Some(Kind::AgencyCheckResponded(_)))
            && let Ok(agency) = e.agency_id.parse()
        {
            self.recorders.insert(agency);
        }
        self.involve(&e.agency_id, Involvement::OwnCase);
        let categories = |values: &[i32]| {
            values
                .iter()
                .filter_map(|v| Category::from_wire(*v))
                .collect::<Vec<_>>()
        };
        let Some(kind) = fact.kind() else { return };
        match kind {
            Kind::ContactReceived(_) | Kind::ReferralReceived(_) => {
                self.stage.referral = true;
                self.owner
                    .get_or_insert_with(|| e.agency_id.parse().expect("validated"));
            }
            Kind::AgencyCheckRequested(_) => {
                self.stage.mash_referral = true;
                if let Ok(agency) = e.agency_id.parse() {
                    self.referred_by.insert(agency);
                }
            }
            Kind::StrategyDiscussionHeld(d) => {
                for a in &d.participant_agency_ids {
                    self.involve(a, Involvement::StrategyParticipant);
                }
                if d.section47_decided {
                    self.stage.s47_started = true;
                }
            }
            Kind::Section47EnquiryStarted(_) => self.stage.s47_started = true,
            Kind::InitialConferenceHeld(c) => {
                for a in &c.core_group_agency_ids {
                    self.involve(a, Involvement::CoreGroup);
                }
            }
            Kind::ChildProtectionPlanStarted(_) => {
                self.stage.plan_active = true;
                self.stage.plan_ended = false;
                self.owner = e.agency_id.parse().ok();
            }
            Kind::ChildProtectionPlanEnded(_) => {
                self.stage.plan_active = false;
                self.stage.plan_ended = true;
                // The core group exists for the plan; it ends with it.
                for set in self.involvements.values_mut() {
                    set.remove(&Involvement::CoreGroup);
                }
            }
            Kind::LookedAfterPeriodStarted(_) => self.stage.looked_after = true,
            Kind::LookedAfterPeriodEnded(_) => self.stage.looked_after = false,
            Kind::InvolvementStarted(pb::InvolvementStarted {
                involved_agency_id,
                kind,
            })
            | Kind::InvolvementEnded(pb::InvolvementEnded {
                involved_agency_id,
                kind,
            }) => {
                let started = matches!(fact.kind(), Some(Kind::InvolvementStarted(_)));
                if let Some(involvement) = pb::InvolvementKind::try_from(*kind)
                    .ok()
                    .and_then(Involvement::from_pb)
                {
                    if started {
                        self.involve(involved_agency_id, involvement);
                    } else {
                        self.end(involved_agency_id, involvement);
                    }
                }
            }
            Kind::ConsentRecorded(c) => self.consented.extend(categories(&c.categories)),
            Kind::ConsentWithdrawn(c) => {
                for category in categories(&c.categories) {
                    self.consented.remove(&category);
                }
            }
            Kind::ConsentExemptionRecorded(x) => self.exempted.extend(categories(&x.categories)),
            // Approvals are recorded once every fact is folded (`approve`): they need the approved fact's
            // agency, which may come later in time order.
            Kind::ReferralDecisionRecorded(_)
            | Kind::ReferralAcknowledged(_)
            | Kind::AgencyCheckResponded(_)
            | Kind::AssessmentStarted(_)
            | Kind::AssessmentCompleted(_)
            | Kind::Section47EnquiryConcluded(_)
            | Kind::CategoryChanged(_)
            | Kind::CoreGroupMeetingHeld(_)
            | Kind::ReviewConferenceHeld(_)
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
    }

    /// The state the policy sees for one agency's principal.
    pub fn for_agency(&self, agency: &AgencyId) -> ChildState {
        ChildState {
            stage: self.stage,
            involvements: self.involvements.get(agency).cloned().unwrap_or_default(),
            consented: self.consented.clone(),
            exempted: self.exempted.clone(),
            in_area: false,
            referral_elsewhere: false,
            lead_authority: self.owner.as_ref() == Some(agency),
        }
    }

    /// [`Self::for_agency`], placed by `registry`'s areas: whether the child is in the agency's area (the
    /// relationship `area`, which the policy lets only the signal category rely on), and whether its MASH
    /// referral was made only in other areas (then `mash-referral` is not this agency's: a check by
    /// Rotherham's front door gives Sheffield's MASH nothing). In a registry that names no areas, one area.
    pub fn for_agency_in(&self, agency: &AgencyId, registry: &halcyon_schema::Registry) -> ChildState {
        ChildState {
            in_area: registry.in_area(agency, &self.recorders),
            referral_elsewhere: self.stage.mash_referral
                && registry.get(agency).is_some_and(|a| !a.areas.is_empty())
                && !registry.in_area(agency, &self.referred_by),
            ..self.for_agency(agency)
        }
    }

    pub fn approved(&self, event_id: &str, recipient: &AgencyId) -> bool {
        self.approvals.contains(&(event_id.to_owned(), recipient.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halcyon_schema::EventKindExt;

    fn fact(agency: &str, kind: Kind) -> Fact {
        Fact {
            stream: "EVENTS_TEST".into(),
            sequence: 1,
            stored_at_ms: 0,
            envelope: pb::Envelope {
                agency_id: agency.into(),
                category: kind.default_category().to_pb() as i32,
                event: Some(pb::Event { kind: Some(kind) }),
                ..Default::default()
            },
            corrected: None,
        }
    }

    #[test]
    fn a_break_glass_review_gives_the_reviewer_no_relationship() {
        let review = fact(
            "police-sy",
            Kind::BreakGlassReviewed(pb::BreakGlassReviewed {
                access_record_id: "0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c".into(),
                accessing_agency_id: "police-sy".into(),
                reviewer_id: "dpo-02".into(),
                outcome: pb::BreakGlassReviewOutcome::Justified as i32,
                reason: "risk to life".into(),
                ..Default::default()
            }),
        );
        let concern = fact(
            "police-sy",
            Kind::ConcernRecorded(pb::ConcernRecorded {
                summary: "seen with older males".into(),
            }),
        );
        let police: AgencyId = "police-sy".parse().unwrap();
        assert!(
            SharingState::derive(std::slice::from_ref(&review))
                .for_agency(&police)
                .involvements
                .is_empty()
        );
        assert!(
            SharingState::derive(&[concern])
                .for_agency(&police)
                .involvements
                .contains(&Involvement::OwnCase)
        );
    }

    #[test]
    fn only_the_agency_that_recorded_a_fact_can_approve_sharing_it() {
        let mut attendance = fact(
            "health-gp-clifton",
            Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded::default()),
        );
        attendance.envelope.event_id = "0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c".into();
        let approval = |by: &str| {
            fact(
                by,
                Kind::OriginatorApprovalGranted(pb::OriginatorApprovalGranted {
                    approved_event_id: attendance.envelope.event_id.clone(),
                    recipient_agency_id: "police-sy".into(),
                    ..Default::default()
                }),
            )
        };
        let police: AgencyId = "police-sy".parse().unwrap();
        // The police approving the GP's record to themselves grants nothing.
        let self_approved = SharingState::derive(&[attendance.clone(), approval("police-sy")]);
        assert!(!self_approved.approved(&attendance.envelope.event_id, &police));
        // The GP's own approval does, whichever comes first in time.
        let approved = SharingState::derive(&[approval("health-gp-clifton"), attendance.clone()]);
        assert!(approved.approved(&attendance.envelope.event_id, &police));
    }

    #[test]
    fn successive_states_equal_the_states_of_each_prefix() {
        let mut attendance = fact(
            "health-gp-clifton",
            Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded::default()),
        );
        attendance.envelope.event_id = "0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c".into();
        let approval = |by: &str, id: &str| {
            let mut f = fact(
                by,
                Kind::OriginatorApprovalGranted(pb::OriginatorApprovalGranted {
                    approved_event_id: attendance.envelope.event_id.clone(),
                    recipient_agency_id: "police-sy".into(),
                    ..Default::default()
                }),
            );
            f.envelope.event_id = id.into();
            f
        };
        let mut referral = fact(
            "csc-rotherham",
            Kind::ReferralReceived(pb::ReferralReceived::default()),
        );
        referral.envelope.event_id = "r".into();
        let mut plan = fact(
            "csc-rotherham",
            Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted::default()),
        );
        plan.envelope.event_id = "p".into();
        // Approvals before and after the approved fact, by its recorder and by another agency.
        let facts = vec![
            approval("health-gp-clifton", "a1"),
            referral,
            approval("police-sy", "a2"),
            attendance.clone(),
            plan,
            approval("health-gp-clifton", "a3"),
        ];
        let successive = SharingState::successive(&facts);
        assert_eq!(successive.len(), facts.len());
        for i in 0..facts.len() {
            assert_eq!(
                successive[i],
                SharingState::derive(&facts[..=i]),
                "after fact {i}"
            );
        }
        assert!(successive[3].approved(&attendance.envelope.event_id, &"police-sy".parse().unwrap()));
        assert!(!successive[2].approved(&attendance.envelope.event_id, &"police-sy".parse().unwrap()));
    }

    /// Rotherham's authority, MASH, school and surgery; Sheffield's MASH and authority; a force serving both.
    fn two_areas() -> halcyon_schema::Registry {
        let agency = |id: &str, kind: &str, areas: &str| {
            format!("[[agency]]\nid = \"{id}\"\nkind = \"{kind}\"\nname = \"{id}\"\nareas = [{areas}]\n")
        };
        halcyon_schema::Registry::from_toml(
            &[
                agency("csc-rotherham", "childrens-social-care", "\"rotherham\""),
                agency("mash-rotherham", "mash", "\"rotherham\""),
                agency("school-oakwood", "school", "\"rotherham\""),
                agency("csc-sheffield", "childrens-social-care", "\"sheffield\""),
                agency("mash-sheffield", "mash", "\"sheffield\""),
                agency("police-sy", "police", "\"rotherham\", \"sheffield\""),
            ]
            .concat(),
        )
        .unwrap()
    }

    fn check() -> Kind {
        Kind::AgencyCheckRequested(pb::AgencyCheckRequested::default())
    }

    fn concern() -> Kind {
        Kind::ConcernRecorded(pb::ConcernRecorded::default())
    }

    #[test]
    fn a_mash_referral_is_the_relationship_of_the_checking_agency_s_area_only() {
        let r = two_areas();
        let id = |s: &str| s.parse::<AgencyId>().unwrap();
        // Expectations by hand, from docs/sharing.md "Signals (D14)".
        /// (facts by agency, the reader, referral elsewhere, in area).
        type Case<'a> = (&'a [(&'a str, Kind)], &'a str, bool, bool);
        let cases: [Case<'_>; 7] = [
            // Rotherham's authority ran the check (as the MASH's social worker): Rotherham's MASH holds it.
            (&[("csc-rotherham", check())], "mash-rotherham", false, true),
            (&[("csc-rotherham", check())], "mash-sheffield", true, false),
            // The force checked, and nobody else knows the child: it serves both areas, so both MASHes
            // hold the referral, and the child is in both areas.
            (&[("police-sy", check())], "mash-sheffield", false, true),
            // A check by an agency the registry does not know places the referral nowhere.
            (&[("csc-elsewhere", check())], "mash-rotherham", true, false),
            // Sheffield's authority answering the MASH's check places the child nowhere.
            (
                &[
                    ("school-oakwood", concern()),
                    (
                        "csc-sheffield",
                        Kind::AgencyCheckResponded(pb::AgencyCheckResponded::default()),
                    ),
                ],
                "mash-sheffield",
                false,
                false,
            ),
            // A Rotherham pupil known to the force too is Rotherham's, not Sheffield's.
            (
                &[("school-oakwood", concern()), ("police-sy", concern())],
                "mash-sheffield",
                false,
                false,
            ),
            (
                &[("school-oakwood", concern()), ("police-sy", concern())],
                "mash-rotherham",
                false,
                true,
            ),
        ];
        for (facts, reader, elsewhere, in_area) in cases {
            let facts: Vec<Fact> = facts.iter().map(|(a, k)| fact(a, k.clone())).collect();
            let state = SharingState::derive(&facts).for_agency_in(&id(reader), &r);
            let recorders: Vec<&str> = facts.iter().map(|f| f.envelope.agency_id.as_str()).collect();
            assert_eq!(
                state.referral_elsewhere, elsewhere,
                "{reader} after {recorders:?}: referral elsewhere"
            );
            assert_eq!(state.in_area, in_area, "{reader} after {recorders:?}: in area");
        }
    }

    #[test]
    fn the_lead_authority_is_the_first_referral_s_recorder_only() {
        let referral = || Kind::ReferralReceived(pb::ReferralReceived::default());
        let facts = [
            fact("csc-rotherham", referral()),
            fact("csc-sheffield", concern()),
        ];
        let state = SharingState::derive(&facts);
        let id = |s: &str| s.parse::<AgencyId>().unwrap();
        assert!(state.for_agency(&id("csc-rotherham")).lead_authority);
        let other = state.for_agency(&id("csc-sheffield"));
        assert!(!other.lead_authority, "recorded a fact, holds no case");
        assert!(other.involvements.contains(&Involvement::OwnCase));
        // Transferred in: Sheffield starts the plan and holds the case from then on.
        let plan = Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted::default());
        let transferred =
            SharingState::derive(&[fact("csc-rotherham", referral()), fact("csc-sheffield", plan)]);
        assert!(transferred.for_agency(&id("csc-sheffield")).lead_authority);
        assert!(!transferred.for_agency(&id("csc-rotherham")).lead_authority);
    }
}
