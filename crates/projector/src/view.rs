//! Per-agency views: for each child, what each registered agency may see under its standing entitlements
//! (purpose safeguarding, the agency's practitioner role; MASH members for a MASH), derived with the
//! sharing policy from the child's whole set of facts. Stored as one record per child so that a batch
//! rewrites each touched child's views once. Queries still decide at query time for the stated purpose;
//! the stored views serve watch streams, chronologies, exports and as-of reconstruction.

use std::sync::Arc;

use halcyon_policy::{Decision, Fact as PolicyFact, Policy, Principal, Purpose, Request, Role, decide};
use halcyon_schema::pb::event::Kind;
use halcyon_schema::{AgencyId, AgencyKind, Category};

use crate::state::SharingState;
use crate::store::Fact;

/// What views are derived with.
#[derive(Debug, Clone)]
pub struct ViewSpec {
    pub policy: Arc<Policy>,
    /// Every registered agency, in id order.
    pub agencies: Vec<(AgencyId, AgencyKind)>,
}

/// One fact an agency may see, and how much of it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ViewEntry {
    #[prost(string, tag = "1")]
    pub event_id: String,
    /// `halcyon_policy::Projection` as 1 flag, 2 summary, 3 full (the wire enum's values).
    #[prost(int32, tag = "2")]
    pub projection: i32,
    #[prost(string, tag = "3")]
    pub rule: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AgencyView {
    #[prost(string, tag = "1")]
    pub agency: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<ViewEntry>,
}

/// All agencies' views of one child.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChildViews {
    #[prost(string, tag = "1")]
    pub policy_version: String,
    #[prost(message, repeated, tag = "2")]
    pub agencies: Vec<AgencyView>,
}

impl ViewSpec {
    pub fn new(policy: Arc<Policy>, registry: &halcyon_schema::Registry) -> Self {
        Self {
            policy,
            agencies: registry.iter().map(|a| (a.id.clone(), a.kind)).collect(),
        }
    }

    /// The standing principal of an agency.
    fn principal(agency: &AgencyId, kind: AgencyKind) -> Principal {
        let role = if kind == AgencyKind::Mash {
            Role::MashMember
        } else {
            Role::Practitioner
        };
        Principal {
            agency: agency.clone(),
            kind,
            role,
        }
    }

    /// Derives every agency's view of a child from the child's facts (in stored order).
    pub fn derive(&self, facts: &[Fact]) -> ChildViews {
        let sharing = SharingState::derive(facts);
        let mut agencies = Vec::with_capacity(self.agencies.len());
        for (agency, kind) in &self.agencies {
            let principal = Self::principal(agency, *kind);
            let state = sharing.for_agency(agency);
            let mut entries = Vec::new();
            for fact in facts {
                let Some(pfact) = policy_fact(fact, &sharing, &principal) else {
                    continue;
                };
                let request = Request {
                    principal: &principal,
                    purpose: Purpose::Safeguarding,
                    fact: &pfact,
                    state: &state,
                    break_glass: None,
                    now_ms: 0,
                };
                if let Decision::Permit(p) = decide(&self.policy, &request) {
                    entries.push(ViewEntry {
                        event_id: fact.envelope.event_id.clone(),
                        projection: p.projection.to_pb() as i32,
                        rule: p.rule.to_string(),
                    });
                }
            }
            if !entries.is_empty() {
                agencies.push(AgencyView {
                    agency: agency.to_string(),
                    entries,
                });
            }
        }
        ChildViews {
            policy_version: self.policy.version().to_owned(),
            agencies,
        }
    }
}

/// The policy's view of one stored fact for `principal`.
pub fn policy_fact(fact: &Fact, sharing: &SharingState, principal: &Principal) -> Option<PolicyFact> {
    let category = Category::from_wire(fact.envelope.category)?;
    let originator: AgencyId = fact.envelope.agency_id.parse().ok()?;
    let handling_code = match fact.kind() {
        Some(Kind::PoliceIntelligenceRecorded(i)) => Some(i.handling_code.clone()),
        _ => None,
    };
    Some(PolicyFact {
        category,
        originator,
        originator_approved: sharing.approved(&fact.envelope.event_id, &principal.agency),
        handling_code,
    })
}
