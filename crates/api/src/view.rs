//! A child's view for one caller: every fact passes the sharing policy against the child's current state
//! and the stated purpose, and is cut to its projection. Denied facts are counted by rule, never shown.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use halcyon_policy::{
    BreakGlass, ChildState, Decision, Fact as PolicyFact, Policy, Principal, Purpose, Request, decide,
    minimise, referrer_identity_granted,
};
use halcyon_projector::Fact;
use halcyon_projector::read::ChildFacts;
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
}

/// Builds the view of `child` that `principal` may have for `purpose`.
pub fn child_view(
    policy: &Policy,
    principal: &Principal,
    purpose: Purpose,
    break_glass: Option<&BreakGlass>,
    child: ChildId,
    facts: &[Fact],
    now_ms: i64,
) -> (pb::ChildView, Disclosure) {
    child_view_window(
        policy,
        principal,
        purpose,
        break_glass,
        child,
        facts,
        0..facts.len(),
        now_ms,
    )
}

/// The view of the facts in `window` (indices into `facts`), decided on the state derived from all facts.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site each; a struct would only rename them"
)]
pub fn child_view_window(
    policy: &Policy,
    principal: &Principal,
    purpose: Purpose,
    break_glass: Option<&BreakGlass>,
    child: ChildId,
    facts: &[Fact],
    window: std::ops::Range<usize>,
    now_ms: i64,
) -> (pb::ChildView, Disclosure) {
    let facts = ChildFacts::new(facts.to_vec());
    view_of(
        policy,
        principal,
        purpose,
        break_glass,
        child,
        &facts,
        window,
        now_ms,
    )
}

/// The view of the facts in `window` (indices into `facts.facts`) of a child whose facts were decoded once
/// ([`ChildFacts`]): every fact is still decided here, for this principal, purpose and moment, against the
/// state derived from all the child's facts.
#[allow(
    clippy::too_many_arguments,
    reason = "the request's parts; a struct would only rename them"
)]
pub fn view_of(
    policy: &Policy,
    principal: &Principal,
    purpose: Purpose,
    break_glass: Option<&BreakGlass>,
    child: ChildId,
    facts: &ChildFacts,
    window: std::ops::Range<usize>,
    now_ms: i64,
) -> (pb::ChildView, Disclosure) {
    let sharing = &facts.sharing;
    let state = sharing.for_agency(&principal.agency);
    let mut disclosure = Disclosure::default();
    let mut withheld: BTreeMap<std::sync::Arc<str>, u32> = BTreeMap::new();
    let mut visible = Vec::with_capacity(window.len());
    let mut identity_source = None;
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
                    .map(|e| minimise(e, permit.projection, referrer));
                disclosure.categories_disclosed.insert(pfact.category);
                if !disclosure.rules.contains(&*permit.rule) {
                    disclosure.rules.insert(permit.rule.to_string());
                }
                disclosure.facts_disclosed += 1;
                disclosure.break_glass |= permit.break_glass;
                if permit.notify_owner && !disclosure.notify.contains(&pfact.originator) {
                    disclosure.notify.insert(pfact.originator.clone());
                }
                identity_source = Some(fact);
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
                });
            }
            Decision::Deny(deny) => {
                disclosure.categories_withheld.insert(pfact.category);
                if !disclosure.rules.contains(&*deny.rule) {
                    disclosure.rules.insert(deny.rule.to_string());
                }
                disclosure.facts_withheld += 1;
                *withheld.entry(deny.rule).or_default() += 1;
            }
        }
    }
    let identity =
        identity_source.and_then(|f| identity(policy, principal, purpose, break_glass, &state, f, now_ms));
    let view = pb::ChildView {
        child_id: child.to_string(),
        identity,
        facts: visible,
        withheld: withheld
            .into_iter()
            .map(|(rule, count)| pb::Withheld {
                rule: rule.to_string(),
                count,
            })
            .collect(),
        policy_version: policy.version().to_owned(),
        positions: Vec::new(),
    };
    (view, disclosure)
}

/// Identity and identifiers (D0), as recorded on a fact the principal may see, if D0 is permitted.
fn identity(
    policy: &Policy,
    principal: &Principal,
    purpose: Purpose,
    break_glass: Option<&BreakGlass>,
    state: &ChildState,
    fact: &Fact,
    now_ms: i64,
) -> Option<pb::ChildIdentifiers> {
    let originator: AgencyId = fact.envelope.agency_id.parse().ok()?;
    let d0 = PolicyFact {
        category: Category::IDENTITY,
        originator,
        originator_approved: false,
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
    if !decide(policy, &request).is_permit() {
        return None;
    }
    let child = fact.envelope.child.as_ref()?;
    Some(pb::ChildIdentifiers {
        nhs_number: child.nhs_number.clone(),
        upn: String::new(),
        local_id: String::new(),
        given_name: child.given_name.clone(),
        family_name: child.family_name.clone(),
        date_of_birth: child.date_of_birth.clone(),
    })
}

/// Most views a node keeps decided (about 4 KB each in the bench's scenario).
pub const VIEW_MEMO_MAX: usize = 4096;

/// A decided view, encoded (see [`crate::reply`]), and what it disclosed.
pub type DecidedView = std::sync::Arc<(bytes::Bytes, Disclosure)>;

/// Views already decided, each kept encoded with the facts it was decided on.
///
/// Without break-glass, a decision depends only on the policy (fixed for the node's life), the principal,
/// the purpose and the child's facts with the sharing state derived from them: the same inputs give the
/// same view. A view is reused only while the node's fact cache still holds the very [`ChildFacts`] it was
/// decided on; any newly projected event gives the child new facts and the view is decided again. A call
/// with break-glass is always decided afresh, because its decisions depend on the time.
#[derive(Debug, Default)]
pub struct ViewMemo {
    entries: std::sync::Mutex<HashMap<(ChildId, Principal, Purpose), Decided>>,
}

#[derive(Debug)]
struct Decided {
    /// Weak, so a memo never keeps facts alive; the allocation outlives it, so its address is not reused.
    facts: std::sync::Weak<ChildFacts>,
    view: DecidedView,
}

impl ViewMemo {
    /// The whole view of `child` for `principal` and `purpose` without break-glass, as [`view_of`] decides it.
    pub fn view(
        &self,
        policy: &Policy,
        principal: &Principal,
        purpose: Purpose,
        child: ChildId,
        facts: &std::sync::Arc<ChildFacts>,
        now_ms: i64,
    ) -> DecidedView {
        let key = (child, principal.clone(), purpose);
        let current = std::sync::Arc::downgrade(facts);
        if let Some(decided) = self.lock().get(&key)
            && decided.facts.ptr_eq(&current)
        {
            return decided.view.clone();
        }
        let (view, disclosure) = view_of(
            policy,
            principal,
            purpose,
            None,
            child,
            facts,
            0..facts.facts.len(),
            now_ms,
        );
        let view = std::sync::Arc::new((crate::reply::ViewReply::encode_view(&view), disclosure));
        let mut entries = self.lock();
        if entries.len() >= VIEW_MEMO_MAX {
            entries.retain(|_, d| d.facts.strong_count() > 0);
            if entries.len() >= VIEW_MEMO_MAX {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Decided {
                facts: current,
                view: view.clone(),
            },
        );
        view
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ChildId, Principal, Purpose), Decided>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
