//! Properties of `decide` over random requests against the shipped policy (and small generated ones):
//! default deny, monotonicity in consent and involvements, break-glass needs a reason, and restricted
//! categories never leave without the originator's approval.

use crate::common;

use std::collections::BTreeSet;
use std::sync::LazyLock;

use common::{MINUTE_MS, NOW_MS, agency, d};
use halcyon_policy::{
    AgencyKind, BreakGlass, Category, ChildState, Decision, DenyKind, Fact, Involvement, Mode, Policy,
    Principal, Purpose, Request, Role, Stage, decide, decide_explained,
};
use proptest::prelude::*;
use proptest::sample::select;

/// Parsed once: loading is not what these properties are about.
static POLICY: LazyLock<Policy> = LazyLock::new(Policy::england);

/// One random request, owned.
#[derive(Debug, Clone)]
struct Case {
    principal: Principal,
    purpose: Purpose,
    fact: Fact,
    state: ChildState,
    break_glass: Option<BreakGlass>,
    now_ms: i64,
}

impl Case {
    fn request(&self) -> Request<'_> {
        Request {
            principal: &self.principal,
            purpose: self.purpose,
            fact: &self.fact,
            state: &self.state,
            break_glass: self.break_glass.as_ref(),
            now_ms: self.now_ms,
        }
    }

    fn decide(&self, policy: &Policy) -> Decision {
        decide(policy, &self.request())
    }
}

fn category() -> impl Strategy<Value = Category> {
    (0..Category::COUNT).prop_map(d)
}

fn categories() -> impl Strategy<Value = BTreeSet<Category>> {
    proptest::collection::btree_set(category(), 0..5)
}

fn stage() -> impl Strategy<Value = Stage> {
    proptest::array::uniform6(any::<bool>()).prop_map(|b| Stage {
        referral: b[0],
        s47_started: b[1],
        plan_active: b[2],
        plan_ended: b[3],
        looked_after: b[4],
        mash_referral: b[5],
    })
}

fn break_glass() -> impl Strategy<Value = Option<BreakGlass>> {
    let reason = select(vec![
        "",
        "  ",
        "child unconscious in resus, no history available",
        "risk to life",
    ]);
    // Minutes before now: mostly current, sometimes lapsed, sometimes in the future.
    let minutes_ago = select(vec![-5i64, 0, 1, 30, 239, 240, 241, 10_000]);
    proptest::option::weighted(
        0.4,
        (reason, minutes_ago).prop_map(|(r, m)| BreakGlass {
            reason: r.to_owned(),
            started_at_ms: NOW_MS - m * MINUTE_MS,
        }),
    )
}

fn case() -> impl Strategy<Value = Case> {
    let agencies = vec!["agency-a", "agency-b", "agency-c"];
    (
        (
            select(AgencyKind::ALL.to_vec()),
            select(Role::ALL.to_vec()),
            select(agencies.clone()),
        ),
        select(Purpose::ALL.to_vec()),
        (
            category(),
            select(agencies),
            any::<bool>(),
            select(vec![None, Some("P"), Some("C"), Some("")]),
        ),
        (
            stage(),
            proptest::collection::btree_set(select(Involvement::ALL.to_vec()), 0..4),
            categories(),
            categories(),
        ),
        break_glass(),
        // In the principal's area; the MASH referral made elsewhere; the principal the lead authority.
        (any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (kind, role, me),
                purpose,
                (category, origin, approved, code),
                (stage, involvements, consented, exempted),
                break_glass,
                (in_area, referral_elsewhere, lead_authority),
            )| Case {
                principal: Principal {
                    agency: agency(me),
                    kind,
                    role,
                },
                purpose,
                fact: Fact {
                    category,
                    originator: agency(origin),
                    originator_approved: approved,
                    handling_code: code.map(str::to_owned),
                },
                state: ChildState {
                    stage,
                    involvements,
                    consented,
                    exempted,
                    in_area,
                    referral_elsewhere,
                    lead_authority,
                },
                break_glass,
                now_ms: NOW_MS,
            },
        )
}

/// What the file grants, read from the loaded policy's public description of its rules.
fn granted(policy: &Policy, c: &Case) -> bool {
    let max_ms = i64::from(policy.break_glass_max_minutes()) * MINUTE_MS;
    let break_glass_current = match &c.break_glass {
        None => false,
        Some(bg) if bg.reason.trim().is_empty() => return false,
        Some(bg) if !(0..=max_ms).contains(&(c.now_ms - bg.started_at_ms)) => return false,
        Some(_) => true,
    };
    let category = c.fact.category;
    let own = c.fact.originator == c.principal.agency;
    if own {
        return true;
    }
    let (Some(rules), Some(cell)) = (policy.category(category), policy.cell(category, c.principal.kind))
    else {
        return false;
    };
    let stage = &c.state.stage;
    let needs_approval = cell.mode() == Mode::OriginatorApproval
        || rules.restricted()
        || rules.handling_code_restricts(c.fact.handling_code.as_deref());
    let gates_open = policy
        .gates()
        .iter()
        .filter(|g| g.categories().contains(&category))
        .all(|g| g.open_after().iter().any(|t| t.holds(stage)));
    let stage_met =
        cell.stage_conditions().is_empty() || cell.stage_conditions().iter().any(|t| t.holds(stage));
    let related = cell.relationships().is_empty()
        || cell.relationships().iter().any(|r| match r {
            // The MASH of the area the referral was made in (docs/sharing.md "Signals (D14)").
            halcyon_policy::Relationship::MashReferral => stage.mash_referral && !c.state.referral_elsewhere,
            halcyon_policy::Relationship::OwnRecord => own,
            halcyon_policy::Relationship::Area => c.state.in_area,
            halcyon_policy::Relationship::LeadAuthority => c.state.lead_authority,
            other => c
                .state
                .involvements
                .iter()
                .any(|i| halcyon_policy::Relationship::from(*i) == *other),
        });
    let consent_ok = !cell.consent_required()
        || c.state.consented.contains(&category)
        || c.state.exempted.contains(&category);
    cell.mode() != Mode::Never
        && rules.allows_purpose(c.purpose)
        && cell.allows_purpose(c.purpose)
        && cell.allows_role(c.principal.role)
        && (!needs_approval || c.fact.originator_approved)
        && gates_open
        && stage_met
        && (related || break_glass_current)
        && consent_ok
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Default deny: a request the file does not grant is denied (and one it grants is permitted, on the
    /// cell's projection, with break-glass marked exactly when it stood in for a relationship).
    #[test]
    fn what_the_file_does_not_grant_is_denied(c in case()) {
        let policy = &*POLICY;
        let decision = c.decide(policy);
        prop_assert_eq!(decision.is_permit(), granted(policy, &c), "{:?}", decision);
        prop_assert_eq!(decision.policy_version(), policy.version());
        if let Decision::Permit(p) = &decision
            && c.fact.originator != c.principal.agency
        {
            let cell = policy.cell(c.fact.category, c.principal.kind).unwrap();
            prop_assert_eq!(Some(p.projection), cell.projection());
            prop_assert_eq!(p.break_glass, !cell.relationships().is_empty() && p.relied_on.is_none());
            prop_assert_eq!(p.break_glass, p.break_glass_expires_at_ms.is_some());
        }
        // Explaining decides the same way.
        let explained = decide_explained(policy, &c.request());
        prop_assert_eq!(explained.rule(), decision.rule());
        prop_assert_eq!(explained.is_permit(), decision.is_permit());
        prop_assert!(!explained.path().is_empty());
    }

    /// A file granting a single box grants nothing else to anybody (but the category split out of it, which
    /// a file without that category decides as the one it came from).
    #[test]
    fn a_file_with_one_cell_denies_every_other_box(
        granted_category in category(),
        granted_kind in select(AgencyKind::ALL.to_vec()),
        mut c in case(),
    ) {
        let src = format!(
            r#"
            version = "one-cell"
            [own]
            basis = "public-task"
            [roles]
            default = ["practitioner", "mash-member", "privacy-officer", "operator"]
            [break_glass]
            max_minutes = 240
            basis = "vital-interests"
            [category.{granted_category}]
            name = "the only category"
            purposes = ["safeguarding", "direct_care", "law_enforcement", "statutory_review", "audit"]
            [[cell]]
            category = "{granted_category}"
            recipient = "{granted_kind}"
            mode = "originator-approval"
            basis = "public-task"
            projection = "full"
            "#
        );
        let policy = Policy::from_toml(&src, "one-cell.toml").unwrap();
        c.fact.originator = agency("somebody-else");
        let decision = c.decide(&policy);
        // A file without D14 (signals) decides D14 as D11, the category signals were split out of.
        let decided_as = if c.fact.category == Category::SIGNAL && granted_category != Category::SIGNAL {
            Category::EXPLOITATION
        } else {
            c.fact.category
        };
        let same_box = decided_as == granted_category && c.principal.kind == granted_kind;
        if !same_box {
            prop_assert!(!decision.is_permit(), "{:?}", decision);
        }
    }

    /// Withdrawing a consent or exemption, or ending an involvement, never widens access: whatever the
    /// request, the state without one of them permits no more (and no larger projection) than with it.
    #[test]
    fn withdrawing_consent_or_ending_an_involvement_never_widens_access(
        c in case(),
        which in 0..3usize,
        cat in category(),
        involvement in select(Involvement::ALL.to_vec()),
    ) {
        let policy = &*POLICY;
        let (mut with, mut without) = (c.clone(), c);
        match which {
            0 => {
                with.state.consented.insert(cat);
                without.state.consented.remove(&cat);
            }
            1 => {
                with.state.exempted.insert(cat);
                without.state.exempted.remove(&cat);
            }
            _ => {
                with.state.involvements.insert(involvement);
                without.state.involvements.remove(&involvement);
            }
        }
        let before = with.decide(policy);
        let after = without.decide(policy);
        if let Some(after) = after.projection() {
            let before = before.projection();
            prop_assert!(before.is_some_and(|b| b >= after), "widened: {:?} -> {:?}", before, after);
        }
    }

    /// A break-glass without a reason is denied, whatever else the request carries.
    #[test]
    fn break_glass_without_a_reason_is_denied(mut c in case(), blank in "[ \t\n]{0,4}") {
        let policy = &*POLICY;
        c.break_glass = Some(BreakGlass { reason: blank, started_at_ms: c.now_ms });
        let decision = c.decide(policy);
        let deny = decision.deny();
        prop_assert!(deny.is_some_and(|d| d.kind == DenyKind::BreakGlassWithoutReason), "{:?}", decision);
    }

    /// Sexual health (D7) and referrer identity (D12) are never permitted to another agency without the
    /// originator's approval, whatever else the request carries — break-glass, consent, involvements.
    #[test]
    fn restricted_categories_never_leave_without_originator_approval(
        mut c in case(),
        restricted in select(vec![Category::SEXUAL_HEALTH, Category::REFERRER_IDENTITY]),
    ) {
        let policy = &*POLICY;
        c.fact.category = restricted;
        c.fact.originator_approved = false;
        if c.fact.originator == c.principal.agency {
            c.fact.originator = agency("another-agency");
        }
        let decision = c.decide(policy);
        prop_assert!(!decision.is_permit(), "{:?}", decision);
        // And with everything else granted too.
        c.state.involvements = Involvement::ALL.iter().copied().collect();
        c.state.consented.insert(restricted);
        c.state.exempted.insert(restricted);
        c.state.stage = Stage { referral: true, s47_started: true, plan_active: true, plan_ended: true, looked_after: true, mash_referral: true };
        c.break_glass = Some(BreakGlass { reason: "vital interests".into(), started_at_ms: c.now_ms });
        prop_assert!(!c.decide(policy).is_permit());
    }
}
