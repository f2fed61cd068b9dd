//! A seeded, deterministic multi-agency history: for each child, the path a real case takes through
//! children's social care (referral → decision → assessment → strategy discussion → s47 → conference →
//! plan), with police missing episodes and intelligence, school attendance and exclusions, and health
//! attendances. The same seed always gives byte-identical envelopes, event ids included.

use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::pb::{self, event::Kind};
use halcyon_schema::{
    AgencyId, AgencyKind, Category, EventKindExt, NhsNumber, Registry, SCHEMA_VERSION, Upn,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The agencies a scenario's events come from.
#[derive(Debug, Clone)]
pub struct ScenarioAgencies {
    pub csc: AgencyId,
    pub police: AgencyId,
    pub school: AgencyId,
    pub ed: AgencyId,
    pub gp: AgencyId,
    pub csc_office_phone: String,
    pub csc_out_of_hours_phone: String,
}

impl ScenarioAgencies {
    /// The first agency of each kind in the registry.
    pub fn from_registry(registry: &Registry) -> Result<Self, String> {
        let pick = |kind: AgencyKind| {
            registry
                .first_of_kind(kind)
                .ok_or_else(|| format!("the agency registry has no {kind} agency"))
        };
        let csc = pick(AgencyKind::ChildrensSocialCare)?;
        Ok(Self {
            csc: csc.id.clone(),
            police: pick(AgencyKind::Police)?.id.clone(),
            school: pick(AgencyKind::School)?.id.clone(),
            ed: pick(AgencyKind::HealthUnscheduled)?.id.clone(),
            gp: pick(AgencyKind::HealthCommunity)?.id.clone(),
            csc_office_phone: csc.office_hours_phone.clone(),
            csc_out_of_hours_phone: csc.out_of_hours_phone.clone(),
        })
    }

    /// The agencies of `deploy/agencies.toml`.
    pub fn deploy() -> Self {
        let src =
            std::fs::read_to_string(crate::workspace_root().join("deploy/agencies.toml")).expect("registry");
        Self::from_registry(&Registry::from_toml(&src).expect("valid registry")).expect("all kinds present")
    }
}

#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub children: usize,
    /// Unix milliseconds of the first event.
    pub start_ms: i64,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        // Monday 5 January 2026, 09:00 UTC.
        Self {
            seed: 42,
            children: 10,
            start_ms: 1_767_603_600_000,
        }
    }
}

/// A generated history: envelopes in the order their agencies recorded them.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub envelopes: Vec<pb::Envelope>,
    /// The children, in generation order.
    pub children: Vec<ScenarioChild>,
}

#[derive(Debug, Clone)]
pub struct ScenarioChild {
    pub nhs: NhsNumber,
    pub upn: Upn,
    pub police_local_id: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: String,
    /// Whether the case escalated to a section 47 enquiry and a plan.
    pub on_plan: bool,
}

const GIVEN: &[&str] = &[
    "Amelia", "Olivia", "Isla", "Ava", "Mia", "Lily", "Freya", "Grace", "Sophie", "Ella", "Evie", "Poppy",
    "Jessica", "Chloe", "Leah", "Holly", "Oliver", "Noah", "Jack", "Leo", "Harry", "Charlie", "Jacob",
    "Alfie",
];
const FAMILY: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Robinson",
    "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Khan",
];

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

impl Scenario {
    pub fn generate(config: &ScenarioConfig, agencies: &ScenarioAgencies) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
        let mut envelopes = Vec::new();
        let mut children = Vec::with_capacity(config.children);
        for index in 0..config.children {
            let child = new_child(&mut rng, index);
            let start = config.start_ms + rng.random_range(0..(60 * DAY)) / HOUR * HOUR;
            let mut history = ChildHistory {
                rng: &mut rng,
                agencies,
                child: &child,
                index,
                at: start,
                out: Vec::new(),
            };
            history.run();
            envelopes.extend(history.out);
            children.push(child);
        }
        // Agencies publish in the order they record; ties broken by event id (itself time-ordered).
        envelopes.sort_by(|a, b| {
            let key = |e: &pb::Envelope| (e.recorded_at.map(|t| (t.seconds, t.nanos)), e.event_id.clone());
            key(a).cmp(&key(b))
        });
        Self { envelopes, children }
    }

    /// The subject each envelope is published on.
    pub fn subject(envelope: &pb::Envelope) -> String {
        format!("halcyon.events.{}.{}", envelope.agency_id, envelope.case_id)
    }
}

fn new_child(rng: &mut ChaCha20Rng, index: usize) -> ScenarioChild {
    let nhs = loop {
        // The 999 range is reserved for testing: never a real child's number.
        let mut digits = [9u8, 9, 9, 0, 0, 0, 0, 0, 0];
        for d in &mut digits[3..] {
            *d = rng.random_range(0..10);
        }
        if let Some(check) = NhsNumber::check_digit(&digits) {
            let s: String = digits
                .iter()
                .chain(std::iter::once(&check))
                .map(|d| char::from(b'0' + d))
                .collect();
            break s.parse::<NhsNumber>().expect("computed check digit");
        }
    };
    let rest: String = (0..12)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    let upn: Upn = format!(
        "{}{rest}",
        Upn::check_letter(rest.as_bytes()).expect("digits") as char
    )
    .parse()
    .expect("computed check letter");
    let age_days = rng.random_range((5 * 365)..(16 * 365));
    let dob = time::Date::from_calendar_date(2026, time::Month::January, 5).expect("date")
        - time::Duration::days(age_days);
    ScenarioChild {
        nhs,
        upn,
        police_local_id: format!("SYP-P{:07}", rng.random_range(0..10_000_000u32)),
        given_name: GIVEN[rng.random_range(0..GIVEN.len())].to_owned(),
        family_name: FAMILY[rng.random_range(0..FAMILY.len())].to_owned(),
        date_of_birth: dob.to_string(),
        on_plan: !(index + 1).is_multiple_of(3),
    }
}

/// Builds one child's history, advancing a clock.
struct ChildHistory<'a> {
    rng: &'a mut ChaCha20Rng,
    agencies: &'a ScenarioAgencies,
    child: &'a ScenarioChild,
    index: usize,
    at: i64,
    out: Vec<pb::Envelope>,
}

impl ChildHistory<'_> {
    fn advance(&mut self, min_hours: i64, max_hours: i64) {
        self.at += self.rng.random_range(min_hours..=max_hours) * HOUR;
    }

    fn emit(&mut self, agency: &AgencyId, case: &str, role: &str, kind: Kind) {
        let category = kind.default_category();
        self.emit_as(agency, case, role, kind, category);
    }

    fn emit_as(&mut self, agency: &AgencyId, case: &str, role: &str, kind: Kind, category: Category) {
        let recorded = self.at + self.rng.random_range(1..=120) * 60_000;
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let event_id = uuid::Builder::from_unix_timestamp_millis(recorded as u64, &random).into_uuid();
        let school = agency == &self.agencies.school;
        let police = agency == &self.agencies.police;
        let child = pb::ChildIdentifiers {
            nhs_number: self.child.nhs.to_string(),
            upn: if school {
                self.child.upn.to_string()
            } else {
                String::new()
            },
            local_id: if police {
                self.child.police_local_id.clone()
            } else {
                String::new()
            },
            given_name: self.child.given_name.clone(),
            family_name: self.child.family_name.clone(),
            date_of_birth: self.child.date_of_birth.clone(),
        };
        let lawful_basis = if police {
            pb::LawfulBasis::LawEnforcement
        } else {
            pb::LawfulBasis::PublicTask
        };
        self.out.push(pb::Envelope {
            event_id: event_id.to_string(),
            case_id: case.to_owned(),
            agency_id: agency.to_string(),
            occurred_at: Some(timestamp_from_millis(self.at)),
            recorded_at: Some(timestamp_from_millis(recorded)),
            actor: Some(pb::Actor {
                practitioner_id: format!(
                    "{}-{:03}",
                    &agency.as_str()[..agency.as_str().len().min(6)],
                    self.rng.random_range(1..60)
                ),
                role: role.to_owned(),
                system: "scenario".to_owned(),
            }),
            child: Some(child),
            category: category.to_pb() as i32,
            schema_version: SCHEMA_VERSION,
            lawful_basis: lawful_basis as i32,
            event: Some(pb::Event { kind: Some(kind) }),
        });
    }

    fn run(&mut self) {
        let a = self.agencies.clone();
        let n = self.index;
        let csc_case = format!("CSC-{:06}", n);
        let police_case = format!("CR-{:06}", n);
        let school_case = format!("PUPIL-{:06}", n);
        let ed_case = format!("ED-{:06}", n);
        let gp_case = format!("GP-{:06}", n);

        // The school knows the child first: enrolment, then falling attendance.
        self.emit(
            &a.school,
            &school_case,
            "DSL",
            Kind::InvolvementStarted(pb::InvolvementStarted {
                involved_agency_id: a.school.to_string(),
                kind: pb::InvolvementKind::EnrolledPupil as i32,
            }),
        );
        self.advance(24 * 7, 24 * 21);
        let attendance = self.rng.random_range(55..85);
        self.emit(
            &a.school,
            &school_case,
            "DSL",
            Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
                attendance_percent: attendance,
                sessions_missed: (100 - attendance) * 2,
            }),
        );

        // Police: a first missing episode.
        self.advance(24, 24 * 10);
        self.missing_episode(&police_case);

        // Health: an A&E attendance.
        self.advance(12, 24 * 5);
        let reason = if self.rng.random_bool(0.5) {
            pb::AttendanceReason::Intoxication
        } else {
            pb::AttendanceReason::Injury
        };
        self.emit(
            &a.ed,
            &ed_case,
            "ED nurse",
            Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                setting: "emergency department".into(),
                reason: reason as i32,
                clinical_summary: "attended late evening; observations recorded; discharged to carer".into(),
            }),
        );
        self.emit(
            &a.gp,
            &gp_case,
            "GP",
            Kind::InvolvementStarted(pb::InvolvementStarted {
                involved_agency_id: a.gp.to_string(),
                kind: pb::InvolvementKind::TreatingClinician as i32,
            }),
        );

        // The school refers to children's social care.
        self.advance(24, 24 * 3);
        self.emit(
            &a.csc,
            &csc_case,
            "duty social worker",
            Kind::ReferralReceived(pb::ReferralReceived {
                referrer: Some(pb::ReferrerDetails {
                    source_code: "2A".into(),
                    referrer_name: "Designated Safeguarding Lead, Oakwood Academy".into(),
                    referrer_contact: "01632 960401".into(),
                }),
                summary: "pupil disclosed an older 'boyfriend' collecting her from school in a car".into(),
            }),
        );
        // The front door is the MASH: checks with police and health start there.
        self.advance(1, 3);
        self.emit(
            &a.csc,
            &csc_case,
            "MASH social worker",
            Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
                requested_agency_id: a.police.to_string(),
                rag: pb::Rag::Amber as i32,
            }),
        );
        self.advance(2, 20);
        self.emit(
            &a.csc,
            &csc_case,
            "duty social worker",
            Kind::ReferralAcknowledged(pb::ReferralAcknowledged {
                method: "email".into(),
            }),
        );
        let escalate = self.child.on_plan;
        self.advance(1, 18);
        let outcome = if escalate {
            pb::ReferralOutcome::StrategyDiscussion
        } else {
            pb::ReferralOutcome::S17Assessment
        };
        self.emit(
            &a.csc,
            &csc_case,
            "team manager",
            Kind::ReferralDecisionRecorded(pb::ReferralDecisionRecorded {
                outcome: outcome as i32,
                rationale: "concerns of sexual exploitation; threshold met".into(),
            }),
        );
        self.advance(2, 24);
        self.emit(
            &a.csc,
            &csc_case,
            "social worker",
            Kind::AssessmentStarted(pb::AssessmentStarted {}),
        );

        // Police intelligence and an exploitation indicator.
        self.advance(24, 24 * 4);
        let handling_code = if self.rng.random_bool(0.5) { "P" } else { "C" };
        self.emit(
            &a.police,
            &police_case,
            "PC",
            Kind::PoliceIntelligenceRecorded(pb::PoliceIntelligenceRecorded {
                handling_code: handling_code.into(),
                summary: "child seen in vehicle registered to adult male (28) known for CSE offences".into(),
            }),
        );
        self.emit(
            &a.police,
            &police_case,
            "PC",
            Kind::ExploitationIndicatorRecorded(pb::ExploitationIndicatorRecorded {
                indicator: pb::ExploitationIndicator::OlderAssociate as i32,
                detail: "older male associate; picked up in cars".into(),
            }),
        );

        if escalate {
            self.advance(4, 30);
            self.emit(
                &a.csc,
                &csc_case,
                "team manager",
                Kind::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
                    participant_agency_ids: vec![
                        a.police.to_string(),
                        a.school.to_string(),
                        a.gp.to_string(),
                    ],
                    section47_decided: true,
                    summary: "police, school and GP agree threshold for s47 is met".into(),
                }),
            );
            self.advance(1, 6);
            self.emit(
                &a.csc,
                &csc_case,
                "social worker",
                Kind::Section47EnquiryStarted(pb::Section47EnquiryStarted {
                    summary: "joint enquiry with police".into(),
                }),
            );
        }
        self.advance(24, 24 * 7);
        self.missing_episode(&police_case);
        self.advance(24 * 3, 24 * 10);
        self.emit(
            &a.csc,
            &csc_case,
            "social worker",
            Kind::AssessmentCompleted(pb::AssessmentCompleted {
                factors: vec!["10A".into(), "11A".into()],
                outcome: if escalate {
                    "child protection enquiry"
                } else {
                    "child in need plan"
                }
                .into(),
                late_reason: String::new(),
            }),
        );
        if escalate {
            self.advance(24, 24 * 5);
            self.emit(
                &a.csc,
                &csc_case,
                "social worker",
                Kind::Section47EnquiryConcluded(pb::Section47EnquiryConcluded {
                    outcome: "substantiated: initial conference".into(),
                }),
            );
            self.advance(24 * 3, 24 * 12);
            let core_group = vec![a.police.to_string(), a.school.to_string(), a.gp.to_string()];
            self.emit(
                &a.csc,
                &csc_case,
                "chair",
                Kind::InitialConferenceHeld(pb::InitialConferenceHeld {
                    plan_made: true,
                    category: pb::PlanCategory::SexualAbuse as i32,
                    core_group_agency_ids: core_group,
                    minutes_summary: "plan made under sexual abuse; core group police, school, GP".into(),
                }),
            );
            self.advance(1, 2);
            self.emit(
                &a.csc,
                &csc_case,
                "social worker",
                Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted {
                    category: pb::PlanCategory::SexualAbuse as i32,
                    unborn: false,
                    contact: Some(pb::AuthorityContact {
                        office_hours_phone: a.csc_office_phone.clone(),
                        out_of_hours_phone: a.csc_out_of_hours_phone.clone(),
                    }),
                    ..Default::default()
                }),
            );
            self.advance(24 * 5, 24 * 9);
            self.emit(
                &a.csc,
                &csc_case,
                "social worker",
                Kind::CoreGroupMeetingHeld(pb::CoreGroupMeetingHeld {
                    attending_agency_ids: vec![a.police.to_string(), a.school.to_string()],
                    summary: "safety plan agreed".into(),
                }),
            );
        }
        // Exclusion and a further A&E attendance.
        self.advance(24 * 3, 24 * 20);
        let days = self.rng.random_range(1..5);
        self.emit(
            &a.school,
            &school_case,
            "DSL",
            Kind::ExclusionRecorded(pb::ExclusionRecorded {
                permanent: false,
                days,
                reason: "persistent disruptive behaviour".into(),
            }),
        );
        if self.rng.random_bool(0.4) {
            self.advance(24, 24 * 10);
            self.emit_as(
                &a.ed,
                &ed_case,
                "sexual health nurse",
                Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                    setting: "sexual health clinic".into(),
                    reason: pb::AttendanceReason::SexualHealth as i32,
                    clinical_summary: "emergency contraception".into(),
                }),
                Category::SEXUAL_HEALTH,
            );
        }
        if escalate {
            self.advance(24 * 60, 24 * 80);
            self.emit(
                &a.csc,
                &csc_case,
                "chair",
                Kind::ReviewConferenceHeld(pb::ReviewConferenceHeld {
                    plan_continues: self.index.is_multiple_of(2),
                    summary: "review of progress against the plan".into(),
                }),
            );
            if !self.index.is_multiple_of(2) {
                self.advance(1, 4);
                self.emit(
                    &a.csc,
                    &csc_case,
                    "social worker",
                    Kind::ChildProtectionPlanEnded(pb::ChildProtectionPlanEnded {
                        reason: "risk reduced; stepped down to child in need".into(),
                    }),
                );
            }
        }
    }

    fn missing_episode(&mut self, police_case: &str) {
        let a = self.agencies.clone();
        let csc_case = format!("CSC-{:06}", self.index);
        self.emit(
            &a.police,
            police_case,
            "PC",
            Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
                circumstances: "did not return home after school".into(),
            }),
        );
        self.advance(6, 40);
        self.emit(
            &a.police,
            police_case,
            "PC",
            Kind::MissingEpisodeClosed(pb::MissingEpisodeClosed {
                found_location: "town centre address linked to older males".into(),
            }),
        );
        self.advance(12, 70);
        self.emit(
            &a.csc,
            &csc_case,
            "RHI worker",
            Kind::ReturnHomeInterviewCompleted(pb::ReturnHomeInterviewCompleted {
                summary: "child would not say where she had been".into(),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halcyon_schema::validate_envelope;

    fn agencies() -> ScenarioAgencies {
        ScenarioAgencies::deploy()
    }

    #[test]
    fn same_seed_same_history_different_seed_different_history() {
        let config = ScenarioConfig {
            children: 20,
            ..Default::default()
        };
        let a = Scenario::generate(&config, &agencies());
        let b = Scenario::generate(&config, &agencies());
        assert_eq!(a.envelopes, b.envelopes);
        let c = Scenario::generate(&ScenarioConfig { seed: 7, ..config }, &agencies());
        assert_ne!(a.envelopes, c.envelopes);
    }

    #[test]
    fn every_event_is_valid_and_four_agencies_publish() {
        let s = Scenario::generate(
            &ScenarioConfig {
                children: 30,
                ..Default::default()
            },
            &agencies(),
        );
        let mut publishers = std::collections::BTreeSet::new();
        for e in &s.envelopes {
            publishers.insert(e.agency_id.clone());
            if let Err(problems) = validate_envelope(e.clone()) {
                panic!("invalid scenario event: {problems:?}");
            }
        }
        assert!(publishers.len() >= 5, "{publishers:?}");
        let ids: std::collections::BTreeSet<_> = s.envelopes.iter().map(|e| &e.event_id).collect();
        assert_eq!(ids.len(), s.envelopes.len(), "event ids are unique");
        assert!(s.envelopes.len() > 30 * 15, "{} events", s.envelopes.len());
    }

    #[test]
    fn escalated_cases_follow_the_statutory_order() {
        let s = Scenario::generate(
            &ScenarioConfig {
                children: 3,
                ..Default::default()
            },
            &agencies(),
        );
        let nhs = s.children[0].nhs.to_string();
        let kinds: Vec<&str> = s
            .envelopes
            .iter()
            .filter(|e| e.child.as_ref().unwrap().nhs_number == nhs)
            .filter(|e| e.agency_id == "csc-rotherham")
            .map(|e| e.event.as_ref().unwrap().kind.as_ref().unwrap().type_name())
            .filter(|k| !k.starts_with("ReturnHome"))
            .collect();
        let pos = |k: &str| {
            kinds
                .iter()
                .position(|x| *x == k)
                .unwrap_or_else(|| panic!("{k} missing: {kinds:?}"))
        };
        assert!(pos("ReferralReceived") < pos("ReferralDecisionRecorded"));
        assert!(pos("ReferralDecisionRecorded") < pos("StrategyDiscussionHeld"));
        assert!(pos("StrategyDiscussionHeld") < pos("Section47EnquiryStarted"));
        assert!(pos("Section47EnquiryStarted") < pos("InitialConferenceHeld"));
        assert!(pos("InitialConferenceHeld") < pos("ChildProtectionPlanStarted"));
    }
}
