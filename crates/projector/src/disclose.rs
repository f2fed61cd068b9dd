//! A child's view for one caller: every fact passes the sharing policy against the child's current state
//! and the stated purpose, and is cut to its projection. Denied facts are counted by rule, never shown.

use std::collections::{BTreeMap, BTreeSet};

use crate::Fact;
use crate::read::ChildFacts;
use halcyon_policy::{
    BreakGlass, ChildState, Decision, Fact as PolicyFact, Policy, Principal, Purpose, Request, decide,
    minimise, referrer_identity_granted,
};
use halcyon_schema::pb;
use halcyon_schema::{AgencyId, Category, ChildId, EventKindExt};

/// What a view disclosed and withheld, for the access record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disclosure {
    pub categories_disclosed: BTreeSet<Category>,
    pub categories_withheld: BTreeSet<Category>,
    pub rules: BTreeSet<String>,
    pub facts_disclosed: u32,
    pub facts_withheld: u32,
    pub break_glass: bool,
    /// Owning agencies to notify of this access (CP-IS-style access notifications).
    pub notify: BTreeSet<AgencyId>,
    /// Every fact withheld, by (rule, category), with whether the caller was told of it (see
    /// [`halcyon_policy::Deny::told`]): for auditors reconstructing a decision, never for the caller.
    pub withheld_all: BTreeMap<(String, Category), (u32, bool)>,
    /// The answer tells the caller that Halcyon knows the child: it shows a fact or an identity, or tells
    /// of withheld facts. When not, the caller gets the answer for an unknown child.
    pub reveals_child: bool,
}

/// Who asks, for what, and when: the parts of every disclosure decision besides the child and its facts.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub policy: &'a Policy,
    /// The agency registry: its areas place the child for the relationships `area` and `mash-referral`.
    pub registry: &'a halcyon_schema::Registry,
    pub principal: &'a Principal,
    pub purpose: Purpose,
    pub break_glass: Option<&'a BreakGlass>,
    pub now_ms: i64,
}

/// Builds the view of `child` that the asker may have, from the child's facts as recorded (read as their
/// agencies corrected them, as every answer is: [`ChildFacts::new`]).
pub fn child_view(asker: &Asker<'_>, child: ChildId, facts: &[Fact]) -> (pb::ChildView, Disclosure) {
    let facts = ChildFacts::new(facts.to_vec());
    let all = 0..facts.facts.len();
    view_of(asker, child, &facts, all)
}

/// The view of the facts in `window` (indices into `facts.facts`) of a child whose facts were decoded once
/// ([`ChildFacts`]): every fact is still decided here, for this principal, purpose and moment, against the
/// state derived from all the child's facts.
///
/// What the caller is told of facts it does not see is `Withheld` entries, by rule and category, for
/// refusals the policy marks as told ([`halcyon_policy::Deny::told`]: pending the originator's approval,
/// consent or a case stage, and nothing else missing). Of any other refusal (a category its kind may never
/// see, a purpose, a role, no relationship) it learns nothing. The [`Disclosure`] for the access record
/// keeps everything.
pub fn view_of(
    asker: &Asker<'_>,
    child: ChildId,
    facts: &ChildFacts,
    window: impl IntoIterator<Item = usize>,
) -> (pb::ChildView, Disclosure) {
    let &Asker {
        policy,
        registry,
        principal,
        purpose,
        break_glass,
        now_ms,
    } = asker;
    let window = window.into_iter();
    let sharing = &facts.sharing;
    let state = sharing.for_agency_in(&principal.agency, registry);
    let mut disclosure = Disclosure::default();
    let mut withheld: BTreeMap<(std::sync::Arc<str>, Category), (u32, std::sync::Arc<str>)> = BTreeMap::new();
    let mut visible = Vec::with_capacity(window.size_hint().0);
    let flag_content = policy.flag_content();
    for i in window {
        let fact = &facts.facts[i];
        let Some(pfact) = facts.policy_fact(i, principal) else {
            continue;
        };
        let request = Request {
            principal,
            purpose,
            fact: &pfact,
            state: &state,
            break_glass,
            now_ms,
        };
        match decide(policy, &request) {
            Decision::Permit(permit) => {
                let referrer = referrer_identity_granted(policy, &request);
                let event = fact
                    .envelope
                    .event
                    .as_ref()
                    .map(|e| minimise(e, permit.projection, referrer, flag_content));
                disclosure.categories_disclosed.insert(pfact.category);
                if !disclosure.rules.contains(&*permit.rule) {
                    disclosure.rules.insert(permit.rule.to_string());
                }
                disclosure.facts_disclosed += 1;
                disclosure.break_glass |= permit.break_glass;
                if permit.notify_owner && !disclosure.notify.contains(&pfact.originator) {
                    disclosure.notify.insert(pfact.originator.clone());
                }
                visible.push(pb::VisibleFact {
                    event_id: fact.envelope.event_id.clone(),
                    agency_id: fact.envelope.agency_id.clone(),
                    case_id: fact.envelope.case_id.clone(),
                    occurred_at: fact.envelope.occurred_at,
                    recorded_at: fact.envelope.recorded_at,
                    category: fact.envelope.category,
                    event_type: fact.kind().map(|k| k.type_name()).unwrap_or_default().to_owned(),
                    projection: permit.projection.to_pb() as i32,
                    rule: permit.rule.to_string(),
                    event,
                    position: Some(pb::Position {
                        stream: fact.stream.clone(),
                        sequence: fact.sequence,
                    }),
                    corrected: fact.corrected.as_ref().map(|c| c.to_pb()),
                });
            }
            Decision::Deny(deny) => {
                disclosure.categories_withheld.insert(pfact.category);
                if !disclosure.rules.contains(&*deny.rule) {
                    disclosure.rules.insert(deny.rule.to_string());
                }
                disclosure.facts_withheld += 1;
                let entry = disclosure
                    .withheld_all
                    .entry((deny.rule.to_string(), pfact.category))
                    .or_insert((0, deny.told));
                entry.0 += 1;
                if deny.told {
                    withheld
                        .entry((deny.rule, pfact.category))
                        .or_insert_with(|| (0, deny.reason))
                        .0 += 1;
                }
            }
        }
    }
    let identity = identity(policy, principal, purpose, break_glass, &state, facts, now_ms);
    disclosure.reveals_child = !visible.is_empty() || !withheld.is_empty() || identity.is_some();
    let view = pb::ChildView {
        child_id: child.to_string(),
        identity,
        facts: visible,
        withheld: withheld
            .into_iter()
            .map(|((rule, category), (count, reason))| pb::Withheld {
                rule: rule.to_string(),
                count,
                category: category.to_pb() as i32,
                reason: reason.to_string(),
            })
            .collect(),
        policy_version: policy.version().to_owned(),
        positions: Vec::new(),
    };
    (view, disclosure)
}

/// Whether a reader shown `start` may be told of the deadline it started (its breach, how late, what met
/// it): only when it sees the fact more than as a flag. A flag is not a case file: an agency shown a
/// looked-after period as the CP-IS flag is not told its review was missed — that would say what the review
/// records, which its box may not open, have not recorded. `DeadlineService`, the watch and `audit as-of`
/// all decide with this.
pub fn tells_deadline(start: &pb::VisibleFact) -> bool {
    start.projection != pb::Projection::Flag as i32
}

/// The indexes of the facts the principal may learn of: those it may see, and those it would be told are
/// withheld. A chronology pages over these, so that neither its pages nor its page tokens count facts the
/// caller may not learn of.
pub fn learnable(asker: &Asker<'_>, facts: &ChildFacts) -> Vec<usize> {
    let &Asker {
        policy,
        registry,
        principal,
        purpose,
        break_glass,
        now_ms,
    } = asker;
    let state = facts.sharing.for_agency_in(&principal.agency, registry);
    (0..facts.facts.len())
        .filter(|&i| {
            facts.policy_fact(i, principal).is_some_and(|pfact| {
                let request = Request {
                    principal,
                    purpose,
                    fact: &pfact,
                    state: &state,
                    break_glass,
                    now_ms,
                };
                match decide(policy, &request) {
                    Decision::Permit(_) => true,
                    Decision::Deny(deny) => deny.told,
                }
            })
        })
        .collect()
}

/// Identity and identifiers (D0) as the principal may see them: per field, the latest non-empty value
/// among all the child's facts whose identity (D0, recorded by the fact's agency, with the originator's
/// approval where one names the fact and the principal) the policy permits. Facts are in (occurred at,
/// agency, sequence) order, so the answer does not depend on the order in which events arrived. `None`
/// when no fact's identity is permitted.
fn identity(
    policy: &Policy,
    principal: &Principal,
    purpose: Purpose,
    break_glass: Option<&BreakGlass>,
    state: &ChildState,
    facts: &ChildFacts,
    now_ms: i64,
) -> Option<pb::ChildIdentifiers> {
    // D0 depends on the fact only through its originator and approval: decided once for each.
    let mut decided: Vec<((&str, bool), bool)> = Vec::new();
    let mut shown: Option<pb::ChildIdentifiers> = None;
    for fact in &facts.facts {
        let Some(child) = fact.envelope.child.as_ref() else {
            continue;
        };
        let originator = fact.envelope.agency_id.as_str();
        let approved = !facts.sharing.approvals.is_empty()
            && facts.sharing.approved(&fact.envelope.event_id, &principal.agency);
        let permitted = match decided.iter().find(|(key, _)| *key == (originator, approved)) {
            Some((_, permitted)) => *permitted,
            None => {
                let permitted = originator.parse::<AgencyId>().is_ok_and(|originator| {
                    let d0 = PolicyFact {
                        category: Category::IDENTITY,
                        originator,
                        originator_approved: approved,
                        handling_code: None,
                    };
                    let request = Request {
                        principal,
                        purpose,
                        fact: &d0,
                        state,
                        break_glass,
                        now_ms,
                    };
                    decide(policy, &request).is_permit()
                });
                decided.push(((originator, approved), permitted));
                permitted
            }
        };
        if !permitted {
            continue;
        }
        let id = shown.get_or_insert_with(pb::ChildIdentifiers::default);
        for (value, field) in [
            (&child.nhs_number, &mut id.nhs_number),
            (&child.given_name, &mut id.given_name),
            (&child.family_name, &mut id.family_name),
            (&child.date_of_birth, &mut id.date_of_birth),
        ] {
            if !value.is_empty() {
                value.clone_into(field);
            }
        }
    }
    shown
}
