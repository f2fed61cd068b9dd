//! Issue 5: views follow entitlements. Police gain the strategy-discussion facts when the section 47 opens;
//! a school loses access when the child's enrolment ends; a consent withdrawal removes consent-based facts.

use std::sync::Arc;

use bytes::Bytes;
use halcyon_policy::Policy;
use halcyon_projector::{Incoming, Projector, ViewSpec};
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::pb::{self, event::Kind};
use halcyon_schema::{AgencyId, Category, ChildId, EventId, EventKindExt, Registry, SCHEMA_VERSION};
use prost::Message;

const NHS: &str = "9434765919";

/// Given: a projector with the shipped policy and registry. When: events arrive. Then: views.
struct Given {
    projector: Projector,
    sequences: std::collections::BTreeMap<String, u64>,
    clock_ms: i64,
}

impl Given {
    fn new() -> Self {
        let registry = Registry::from_toml(include_str!("../../../../deploy/agencies.toml")).unwrap();
        let spec = ViewSpec::new(Arc::new(Policy::england()), &registry);
        Self {
            projector: Projector::temporary().unwrap().with_views(spec),
            sequences: Default::default(),
            clock_ms: 1_767_600_000_000,
        }
    }

    /// Publishes `kind` as `agency` (in the kind's default category) and returns its event id.
    fn event(&mut self, agency: &str, kind: Kind) -> String {
        let category = kind.default_category();
        self.event_in(agency, kind, category)
    }

    fn event_in(&mut self, agency: &str, kind: Kind, category: Category) -> String {
        self.clock_ms += 3_600_000;
        let event_id = EventId::new().to_string();
        let envelope = pb::Envelope {
            event_id: event_id.clone(),
            case_id: "CASE-1".into(),
            agency_id: agency.into(),
            occurred_at: Some(timestamp_from_millis(self.clock_ms)),
            recorded_at: Some(timestamp_from_millis(self.clock_ms)),
            actor: Some(pb::Actor {
                practitioner_id: "p-1".into(),
                ..Default::default()
            }),
            child: Some(pb::ChildIdentifiers {
                nhs_number: NHS.into(),
                ..Default::default()
            }),
            category: category.to_pb() as i32,
            schema_version: SCHEMA_VERSION,
            lawful_basis: pb::LawfulBasis::PublicTask as i32,
            event: Some(pb::Event { kind: Some(kind) }),
        };
        let stream = halcyon_schema::StreamName::for_agency(&agency.parse().unwrap()).to_string();
        let seq = self.sequences.entry(stream.clone()).or_default();
        *seq += 1;
        let m = Incoming {
            sequence: *seq,
            subject: format!("halcyon.events.{agency}.CASE-1"),
            payload: Bytes::from(envelope.encode_to_vec()),
            stored_at_ms: self.clock_ms,
        };
        let outcome = self.projector.apply(&stream, &[m]).unwrap();
        assert_eq!(outcome.projected, 1);
        event_id
    }

    fn sees(&self, agency: &str, event_id: &str) -> bool {
        let child = ChildId::from_nhs(&NHS.parse().unwrap());
        let agency: AgencyId = agency.parse().unwrap();
        self.projector.derive_all_views().unwrap();
        self.projector
            .view(&agency, &child)
            .unwrap()
            .iter()
            .any(|e| e.event_id == event_id)
    }
}

#[test]
fn police_gain_strategy_discussion_facts_when_the_section_47_opens() {
    let mut g = Given::new();
    g.event(
        "csc-rotherham",
        Kind::ReferralReceived(pb::ReferralReceived {
            referrer: None,
            summary: "concern".into(),
        }),
    );
    let discussion = g.event(
        "csc-rotherham",
        Kind::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
            participant_agency_ids: vec!["police-sy".into()],
            section47_decided: false,
            summary: "further information needed".into(),
        }),
    );
    assert!(
        !g.sees("police-sy", &discussion),
        "no s47 yet: the gate is closed"
    );
    g.event(
        "csc-rotherham",
        Kind::Section47EnquiryStarted(pb::Section47EnquiryStarted {
            summary: "joint".into(),
        }),
    );
    assert!(
        g.sees("police-sy", &discussion),
        "the section 47 opened the gate for the participant"
    );
    assert!(!g.sees("school-oakwood", &discussion), "the school took no part");
}

#[test]
fn a_school_loses_access_when_the_enrolment_ends() {
    let mut g = Given::new();
    let enrolment = |started: bool| {
        let (involved_agency_id, kind) = (
            "school-oakwood".to_string(),
            pb::InvolvementKind::EnrolledPupil as i32,
        );
        if started {
            Kind::InvolvementStarted(pb::InvolvementStarted {
                involved_agency_id,
                kind,
            })
        } else {
            Kind::InvolvementEnded(pb::InvolvementEnded {
                involved_agency_id,
                kind,
            })
        }
    };
    g.event("school-oakwood", enrolment(true));
    let missing = g.event(
        "police-sy",
        Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
            circumstances: "x".into(),
        }),
    );
    assert!(
        g.sees("school-oakwood", &missing),
        "an enrolled pupil's missing episode is shared with the school"
    );
    g.event("school-oakwood", enrolment(false));
    assert!(!g.sees("school-oakwood", &missing), "the enrolment ended");
    assert!(g.sees("police-sy", &missing), "the police keep their own fact");
}

#[test]
fn a_consent_withdrawal_removes_consent_based_facts() {
    let mut g = Given::new();
    let attendance = g.event(
        "health-rgh-ed",
        Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "ED".into(),
            reason: pb::AttendanceReason::Injury as i32,
            clinical_summary: "fracture".into(),
        }),
    );
    g.event(
        "health-rgh-ed",
        Kind::OriginatorApprovalGranted(pb::OriginatorApprovalGranted {
            approved_event_id: attendance.clone(),
            recipient_agency_id: "mash-rotherham".into(),
            reason: "MASH checks".into(),
        }),
    );
    assert!(
        !g.sees("mash-rotherham", &attendance),
        "approved, but D6 also needs consent or an exemption"
    );
    let consent = |categories| pb::ConsentRecorded {
        categories,
        given_by: "parent".into(),
    };
    g.event(
        "csc-rotherham",
        Kind::ConsentRecorded(consent(vec![Category::HEALTH_CLINICAL.to_pb() as i32])),
    );
    assert!(g.sees("mash-rotherham", &attendance), "consent given");
    g.event(
        "csc-rotherham",
        Kind::ConsentWithdrawn(pb::ConsentWithdrawn {
            categories: vec![Category::HEALTH_CLINICAL.to_pb() as i32],
        }),
    );
    assert!(!g.sees("mash-rotherham", &attendance), "consent withdrawn");
    assert!(
        g.sees("health-rgh-ed", &attendance),
        "the originator keeps its own fact"
    );
}
