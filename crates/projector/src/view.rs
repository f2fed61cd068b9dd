//! Per-agency views: for each child, what each registered agency may see under its standing entitlements
//! (purpose safeguarding, the agency's practitioner role; MASH members for a MASH), derived with the
//! sharing policy from the child's whole set of facts. Stored as one record per child so that a batch
//! rewrites each touched child's views once. Queries still decide at query time for the stated purpose;
//! the stored views serve watch streams, chronologies, exports and as-of reconstruction.

use std::sync::Arc;

use halcyon_policy::{
    Decision, Fact as PolicyFact, Policy, Principal, Purpose, Relationship, Request, Role, decide,
};
use halcyon_schema::{AgencyId, AgencyKind, Category};

use crate::fact::Fact;
use crate::state::SharingState;

/// What views are derived with.
#[derive(Debug, Clone)]
pub struct ViewSpec {
    pub policy: Arc<Policy>,
    /// Every registered agency, in id order.
    pub agencies: Vec<(AgencyId, AgencyKind)>,
    /// The kinds the policy may grant something without a relationship (`Policy::grants_without_relationship`).
    open_kinds: Vec<AgencyKind>,
    /// The kinds the policy may grant something on a MASH referral alone (`Policy::grants_on`, `mash-referral`).
    mash_kinds: Vec<AgencyKind>,
    /// The kinds the policy may grant something because the child is in their area (`Policy::grants_on`, `area`).
    area_kinds: Vec<AgencyKind>,
    /// The registry's areas place each child (`SharingState::for_agency_in`).
    registry: Arc<halcyon_schema::Registry>,
}

/// One fact an agency may see, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewEntry {
    pub event_id: String,
    /// `halcyon_policy::Projection` as 1 flag, 2 summary, 3 full (the wire enum's values).
    pub projection: i32,
    pub rule: String,
}

/// One agency's view, stored compactly: parallel lists of indexes into `ChildViews`' facts and rules.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgencyView {
    #[prost(string, tag = "1")]
    pub agency: String,
    /// Index into `ChildViews::fact_ids` of each fact the agency may see.
    #[prost(uint32, repeated, tag = "2")]
    pub facts: Vec<u32>,
    /// How much of it (`halcyon_policy::Projection` as the wire enum's value), per fact.
    #[prost(int32, repeated, tag = "3")]
    pub projections: Vec<i32>,
    /// Index into `ChildViews::rules` of the rule that permitted it, per fact.
    #[prost(uint32, repeated, tag = "4")]
    pub rules: Vec<u32>,
}

/// All agencies' views of one child. Stored once per child and rewritten whenever its facts change, so
/// it is kept small: event ids once (16 bytes each), rule names once, and per agency only indexes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChildViews {
    #[prost(string, tag = "1")]
    pub policy_version: String,
    #[prost(message, repeated, tag = "2")]
    pub agencies: Vec<AgencyView>,
    /// The child's facts' event ids (16 bytes each), in stored order.
    #[prost(bytes = "vec", tag = "3")]
    pub fact_ids: Vec<u8>,
    /// The distinct rules that permitted something, in first-use order.
    #[prost(string, repeated, tag = "4")]
    pub rules: Vec<String>,
}

impl ChildViews {
    /// What `agency` may see, as entries.
    pub fn entries(&self, agency: &str) -> Vec<ViewEntry> {
        let Some(view) = self.agencies.iter().find(|a| a.agency == agency) else {
            return Vec::new();
        };
        view.facts
            .iter()
            .zip(&view.projections)
            .zip(&view.rules)
            .filter_map(|((&fact, &projection), &rule)| {
                let id = self.fact_ids.get(fact as usize * 16..fact as usize * 16 + 16)?;
                Some(ViewEntry {
                    event_id: uuid::Uuid::from_slice(id).ok()?.to_string(),
                    projection,
                    rule: self.rules.get(rule as usize)?.clone(),
                })
            })
            .collect()
    }
}

impl ViewSpec {
    pub fn new(policy: Arc<Policy>, registry: &halcyon_schema::Registry) -> Self {
        let agencies: Vec<(AgencyId, AgencyKind)> = registry.iter().map(|a| (a.id.clone(), a.kind)).collect();
        let kinds = |granted: &dyn Fn(AgencyKind) -> bool| -> Vec<AgencyKind> {
            let kinds: std::collections::BTreeSet<AgencyKind> = agencies
                .iter()
                .map(|(_, kind)| *kind)
                .filter(|k| granted(*k))
                .collect();
            kinds.into_iter().collect()
        };
        let open_kinds = kinds(&|k| policy.grants_without_relationship(k));
        let mash_kinds = kinds(&|k| policy.grants_on(Relationship::MashReferral, k));
        let area_kinds = kinds(&|k| policy.grants_on(Relationship::Area, k));
        Self {
            policy,
            agencies,
            open_kinds,
            mash_kinds,
            area_kinds,
            registry: Arc::new(registry.clone()),
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

    /// Derives every agency's view of a child from the child's facts (in stored order). An agency the policy
    /// can grant nothing of this child is not asked about each fact: one that recorded none of them, has no
    /// involvement with the child, is not of a kind a MASH referral entitles (when the child has one), and
    /// whose kind has no entitlement that needs no relationship ([`Policy::grants_without_relationship`]); its view is empty either way, and most of a
    /// county's schools and surgeries are such agencies for most children.
    pub fn derive(&self, facts: &[Fact]) -> ChildViews {
        let facts = &*crate::corrections::effective(facts);
        let sharing = SharingState::derive(facts);
        // What does not depend on the recipient, once per fact.
        let described: Vec<Option<Described>> = facts.iter().map(describe).collect();
        let recorders: std::collections::BTreeSet<&str> =
            facts.iter().map(|f| f.envelope.agency_id.as_str()).collect();
        let mut rules: Vec<String> = Vec::new();
        let mut agencies = Vec::with_capacity(self.agencies.len());
        for (agency, kind) in &self.agencies {
            let state = sharing.for_agency_in(agency, &self.registry);
            let may_be_granted = recorders.contains(agency.as_str())
                || !state.involvements.is_empty()
                || (state.stage.mash_referral && !state.referral_elsewhere && self.mash_kinds.contains(kind))
                || (state.in_area && self.area_kinds.contains(kind))
                || self.open_kinds.contains(kind);
            if !may_be_granted {
                continue;
            }
            let principal = Self::principal(agency, *kind);
            let mut view = AgencyView {
                agency: agency.to_string(),
                ..Default::default()
            };
            for (i, (fact, described)) in facts.iter().zip(&described).enumerate() {
                let Some(d) = described else {
                    continue;
                };
                let pfact = PolicyFact {
                    category: d.category,
                    originator: d.originator.clone(),
                    originator_approved: sharing.approved(&fact.envelope.event_id, &principal.agency),
                    handling_code: d.handling_code.clone(),
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
                    let rule = match rules.iter().position(|r| **r == *p.rule) {
                        Some(r) => r,
                        None => {
                            rules.push(p.rule.to_string());
                            rules.len() - 1
                        }
                    };
                    view.facts.push(i as u32);
                    view.projections.push(p.projection.to_pb() as i32);
                    view.rules.push(rule as u32);
                }
            }
            if !view.facts.is_empty() {
                agencies.push(view);
            }
        }
        let fact_ids = facts
            .iter()
            .flat_map(|f| {
                uuid::Uuid::parse_str(&f.envelope.event_id)
                    .map(|u| *u.as_bytes())
                    .unwrap_or_default()
            })
            .collect();
        ChildViews {
            policy_version: self.policy.version().to_owned(),
            agencies,
            fact_ids,
            rules,
        }
    }
}

/// The recipient-independent part of a fact's policy view.
struct Described {
    category: Category,
    originator: AgencyId,
    handling_code: Option<String>,
}

fn describe(fact: &Fact) -> Option<Described> {
    Some(Described {
        category: Category::from_wire(fact.envelope.category)?,
        originator: fact.envelope.agency_id.parse().ok()?,
        handling_code: fact
            .kind()
            .and_then(halcyon_schema::catalogue::handling_code)
            .map(str::to_owned),
    })
}

/// The policy's view of one stored fact for `principal`.
pub fn policy_fact(fact: &Fact, sharing: &SharingState, principal: &Principal) -> Option<PolicyFact> {
    let category = Category::from_wire(fact.envelope.category)?;
    let originator: AgencyId = fact.envelope.agency_id.parse().ok()?;
    let handling_code = fact
        .kind()
        .and_then(halcyon_schema::catalogue::handling_code)
        .map(str::to_owned);
    Some(PolicyFact {
        category,
        originator,
        originator_approved: sharing.approved(&fact.envelope.event_id, &principal.agency),
        handling_code,
    })
}

/// Views as a read model: every registered agency's standing view of the child (`V`), or none without facts.
impl crate::model::ReadModel for ViewSpec {
    fn prefixes(&self) -> &'static [u8] {
        &[crate::keys::VIEWS]
    }

    fn derive(
        &self,
        _tree: &sled::Tree,
        writes: &mut crate::model::Writes,
        child: &halcyon_schema::ChildId,
        facts: &[Fact],
    ) -> Result<crate::model::Derived, crate::error::ProjectorError> {
        if facts.is_empty() {
            writes.remove(crate::keys::views(child));
        } else {
            writes.insert(
                crate::keys::views(child),
                prost::Message::encode_to_vec(&ViewSpec::derive(self, facts)),
            );
        }
        Ok(Box::new(()))
    }

    fn announce(&self, _derived: Vec<crate::model::Derived>) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
