//! The decision: `decide(&Policy, &Request) -> Decision`. Pure and total: a denial is a value with the rule
//! and a reason a person can read, never an error. The same code, with tracing switched on, produces the
//! rule path `explain` prints.

use std::sync::Arc;

use crate::policy::{Policy, Refusal, Slot};
use crate::request::Request;
use crate::vocabulary::{
    Bits, Condition, LawfulBasis, Mode, Projection, Relationship, StageTerm, join, members,
};

/// The outcome of one request: permit or deny. Every decision carries its rule and the policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit(Permit),
    Deny(Deny),
}

/// What was permitted, on which rule and basis, and how much of the fact survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The rule relied on: a cell id such as `D4.police.pushed`, or `own`.
    pub rule: Arc<str>,
    pub basis: LawfulBasis,
    /// The special-category condition, for health data.
    pub condition: Option<Condition>,
    /// Which fields of the fact survive (see [`crate::minimise`]).
    pub projection: Projection,
    /// How the fact reaches the principal. Own facts report `Pushed` (they are in the agency's own view);
    /// a pushed cell whose `pushed_while` no longer holds reports `Query`.
    pub mode: Mode,
    /// The relationship relied on; `None` for own facts, standing entitlements, originator approval and
    /// break-glass.
    pub relied_on: Option<Relationship>,
    /// Whether consent or an exemption was needed, and which was relied on.
    pub consent: ConsentGround,
    /// Permitted only because of a break-glass: audit it and flag it for review.
    pub break_glass: bool,
    /// When the break-glass this permit relies on lapses (ms since the Unix epoch).
    pub break_glass_expires_at_ms: Option<i64>,
    /// The view must notify the owning agency (CP-IS "access to service notification").
    pub notify_owner: bool,
    pub policy_version: Arc<str>,
    /// The checks that led here, one line each; filled only by [`decide_explained`] and [`crate::explain`].
    pub path: Vec<String>,
}

/// What was refused, by which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// The rule that refused: a cell id, a gate id, `D13.purpose`, `default-deny`, `break-glass.expired`…
    pub rule: Arc<str>,
    /// Why, for a person.
    pub reason: Arc<str>,
    /// Which check refused, for code.
    pub kind: DenyKind,
    /// Whether the caller may be told that a fact is withheld under this rule: the refusal is pending
    /// something the caller can act on (the originator's approval, consent or an exemption, a case stage)
    /// and every other condition of the cell already holds. Refusals of categories the caller's kind may
    /// never see, of a purpose, a role or a missing relationship are never told: the caller learns
    /// nothing of those facts, not even that they exist.
    pub told: bool,
    pub policy_version: Arc<str>,
    /// The checks that led here, one line each; filled only by [`decide_explained`] and [`crate::explain`].
    pub path: Vec<String>,
}

/// Which check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyKind {
    /// A break-glass was claimed without a reason.
    BreakGlassWithoutReason,
    /// A break-glass was claimed that has lapsed (or starts in the future).
    BreakGlassExpired,
    /// The file grants nothing here: no category rules, no cell, or a `never` cell.
    NotGranted,
    /// The purpose is not allowed for the category or cell.
    Purpose,
    /// The principal's role is not served by the cell.
    Role,
    /// The originating agency's approval is needed and absent (N cells, restricted categories, handling
    /// codes).
    OriginatorApproval,
    /// A stage gate, or the cell's own stage condition, is shut.
    Stage,
    /// No legitimate relationship and no break-glass.
    Relationship,
    /// Consent or a recorded exemption is needed and absent.
    Consent,
}

/// Whether sharing rested on consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentGround {
    /// The category and cell do not need consent.
    NotRequired,
    /// Needed, and a consent covers the category.
    Consented,
    /// Needed, and a recorded consent exemption covers the category.
    Exempted,
}

impl Decision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit(_))
    }

    /// The rule that permitted or refused.
    pub fn rule(&self) -> &str {
        match self {
            Decision::Permit(p) => &p.rule,
            Decision::Deny(d) => &d.rule,
        }
    }

    pub fn policy_version(&self) -> &str {
        match self {
            Decision::Permit(p) => &p.policy_version,
            Decision::Deny(d) => &d.policy_version,
        }
    }

    /// The projection of a permit; `None` for a denial.
    pub fn projection(&self) -> Option<Projection> {
        self.permit().map(|p| p.projection)
    }

    pub fn permit(&self) -> Option<&Permit> {
        match self {
            Decision::Permit(p) => Some(p),
            Decision::Deny(_) => None,
        }
    }

    pub fn deny(&self) -> Option<&Deny> {
        match self {
            Decision::Permit(_) => None,
            Decision::Deny(d) => Some(d),
        }
    }

    /// The rule path (empty unless produced by [`decide_explained`]).
    pub fn path(&self) -> &[String] {
        match self {
            Decision::Permit(p) => &p.path,
            Decision::Deny(d) => &d.path,
        }
    }
}

/// Decides one request. Never fails; allocates nothing on either outcome (rule ids, reasons and the
/// version are shared strings prepared at load time).
pub fn decide(policy: &Policy, req: &Request<'_>) -> Decision {
    decide_with(policy, req, &mut NoTrace, true)
}

/// Decides whether the principal may read an access record (D13): `req.fact.originator` is the agency whose
/// call the record records. The `own` rule does not apply — the D13 cells decide, with the relationship
/// `own-record` for the records of the principal's own calls — so an agency whose D13 box is "–" sees none,
/// not even its own.
pub fn decide_access_record(policy: &Policy, req: &Request<'_>) -> Decision {
    decide_with(policy, req, &mut NoTrace, false)
}

/// Like [`decide`], and records the rule path in the decision's `path`.
pub fn decide_explained(policy: &Policy, req: &Request<'_>) -> Decision {
    let mut path = Vec::new();
    decide_with(policy, req, &mut path, true)
}

/// Whether referrer identity (D12) may be shown alongside a fact: the same request, asked for D12. Pass
/// the result to [`crate::minimise`].
pub fn referrer_identity_granted(policy: &Policy, req: &Request<'_>) -> bool {
    let mut fact = req.fact.clone();
    fact.category = halcyon_schema::Category::REFERRER_IDENTITY;
    decide(policy, &Request { fact: &fact, ..*req }).is_permit()
}

/// Collects the rule path, or not.
trait Trace {
    fn step(&mut self, line: impl FnOnce() -> String);
    fn take(&mut self) -> Vec<String>;
}

struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn step(&mut self, _line: impl FnOnce() -> String) {}
    #[inline(always)]
    fn take(&mut self) -> Vec<String> {
        Vec::new()
    }
}

impl Trace for Vec<String> {
    fn step(&mut self, line: impl FnOnce() -> String) {
        self.push(line());
    }
    fn take(&mut self) -> Vec<String> {
        std::mem::take(self)
    }
}

fn refuse(policy: &Policy, refusal: &Refusal, kind: DenyKind, trace: &mut impl Trace) -> Decision {
    refuse_told(policy, refusal, kind, false, trace)
}

fn refuse_told(
    policy: &Policy,
    refusal: &Refusal,
    kind: DenyKind,
    told: bool,
    trace: &mut impl Trace,
) -> Decision {
    trace.step(|| format!("deny: {}", refusal.reason));
    Decision::Deny(Deny {
        rule: refusal.rule.clone(),
        reason: refusal.reason.clone(),
        kind,
        told,
        policy_version: policy.version.clone(),
        path: trace.take(),
    })
}

fn decide_with(policy: &Policy, req: &Request<'_>, trace: &mut impl Trace, own_rule: bool) -> Decision {
    let principal = req.principal;
    let fact = req.fact;
    let category = fact.category;
    trace.step(|| {
        format!(
            "request: {} ({}, {}) asks for {category} recorded by {}, for {}",
            principal.agency, principal.kind, principal.role, fact.originator, req.purpose
        )
    });

    // 1. A break-glass, if claimed, must have a reason and be current; otherwise nothing is shared.
    let break_glass_expires_at_ms = match req.break_glass {
        None => {
            trace.step(|| "break-glass: not claimed".to_owned());
            None
        }
        Some(bg) if bg.reason.trim().is_empty() => {
            trace.step(|| "break-glass: claimed without a reason".to_owned());
            return refuse(
                policy,
                &policy.fixed.break_glass_no_reason,
                DenyKind::BreakGlassWithoutReason,
                trace,
            );
        }
        Some(bg) => {
            let max_ms = policy.break_glass.max_ms;
            match req.now_ms.checked_sub(bg.started_at_ms) {
                Some(elapsed) if (0..=max_ms).contains(&elapsed) => {
                    trace.step(|| {
                        format!(
                            "break-glass: claimed {} min ago (limit {} min), reason {:?}",
                            elapsed / 60_000,
                            policy.break_glass.max_minutes,
                            bg.reason.trim()
                        )
                    });
                    Some(bg.started_at_ms.saturating_add(max_ms))
                }
                _ => {
                    trace.step(|| "break-glass: claimed, but not current".to_owned());
                    return refuse(
                        policy,
                        &policy.fixed.break_glass_expired,
                        DenyKind::BreakGlassExpired,
                        trace,
                    );
                }
            }
        }
    };

    // 2. An agency always sees what it recorded itself, where the category keeps the own rule.
    if own_rule && fact.originator == principal.agency {
        let basis = policy.own.basis[crate::policy::kind_index(principal.kind)];
        trace.step(|| format!("own: {} recorded this fact itself", principal.agency));
        trace.step(|| format!("permit: own record, full, basis {}", basis.citation()));
        return Decision::Permit(Permit {
            rule: policy.own.rule.clone(),
            basis,
            condition: None,
            projection: Projection::Full,
            mode: Mode::Pushed,
            relied_on: None,
            consent: ConsentGround::NotRequired,
            break_glass: false,
            break_glass_expires_at_ms: None,
            notify_owner: false,
            policy_version: policy.version.clone(),
            path: trace.take(),
        });
    }
    if fact.originator == principal.agency {
        trace.step(|| "own: not applied to an access record; the D13 cells decide (own-record)".to_owned());
    } else {
        trace.step(|| format!("own: no, {} recorded it", fact.originator));
    }

    // 3. The category must have rules, and allow the purpose. A file older than a category decides it as
    //    the category it was split out of (D14 signals as D11), as it did when it was in force.
    let (category, cat) = match policy.decides_as(category) {
        Some((decided, cat)) => {
            if decided != category {
                trace.step(|| {
                    format!("category: the file has no [category.{category}]; decided as {decided}, which it was split out of")
                });
            }
            (decided, cat)
        }
        None => {
            trace.step(|| format!("category: the file has no [category.{category}]"));
            let refusal = &policy.fixed.no_category[usize::from(category.index())];
            return refuse(policy, refusal, DenyKind::NotGranted, trace);
        }
    };
    let purpose_bit = req.purpose.bit();
    if !cat.purposes.contains(purpose_bit) {
        trace.step(|| {
            format!(
                "purpose: {} is not allowed for {category} (line {})",
                req.purpose, cat.line
            )
        });
        let refusal = &cat.purpose_refusals[req.purpose as usize];
        return refuse(policy, refusal, DenyKind::Purpose, trace);
    }
    trace.step(|| {
        format!(
            "purpose: {} is allowed for {category} ({})",
            req.purpose, cat.name
        )
    });

    // 4. The cell for this category and recipient kind.
    let cell = match policy.slot(category, principal.kind) {
        Slot::Absent(refusal) => {
            trace.step(|| format!("cell: none for {category} and {}", principal.kind));
            return refuse(policy, refusal, DenyKind::NotGranted, trace);
        }
        Slot::Cell(cell) => cell,
    };
    trace.step(|| {
        let table = if cell.table.is_empty() {
            String::new()
        } else {
            format!(", sharing table {:?}", cell.table)
        };
        format!(
            "cell: {} (line {}{table}): mode {}",
            cell.id, cell.line, cell.mode
        )
    });
    if cell.mode == Mode::Never {
        return refuse(policy, &cell.refusals.never, DenyKind::NotGranted, trace);
    }
    if !cell.purposes.contains(purpose_bit) {
        trace.step(|| format!("purpose: {} is not among the cell's purposes", req.purpose));
        return refuse(policy, &cell.refusals.purpose, DenyKind::Purpose, trace);
    }
    if !cell.roles.contains(principal.role.bit()) {
        trace.step(|| format!("role: {} is not served by this cell", principal.role));
        return refuse(policy, &cell.refusals.role, DenyKind::Role, trace);
    }
    trace.step(|| format!("role: {} is served", principal.role));

    // 5. Originator approval: N cells, restricted categories, restrictive handling codes. Break-glass
    //    never stands in for it. A caller is told of a fact withheld at steps 5, 6 or 8 only when that is
    //    all that stands between it and the fact.
    let stage = stage_bits(&req.state.stage);
    let stage_open = cat
        .gates
        .iter()
        .all(|&g| policy.gates[g].open_after.intersects(stage))
        && (cell.stage.is_empty() || cell.stage.intersects(stage));
    let relationship_held = cell.relationships.is_empty()
        || relationship_bits(req) & cell.relationships.0 != 0
        || break_glass_expires_at_ms.is_some();
    let approval_told = stage_open && relationship_held;
    let approved = fact.originator_approved;
    if cell.mode == Mode::OriginatorApproval {
        trace.step(|| format!("originator approval: needed by the cell; {}", present(approved)));
        if !approved {
            return refuse_told(
                policy,
                &cell.refusals.approval,
                DenyKind::OriginatorApproval,
                approval_told,
                trace,
            );
        }
    }
    if cat.restricted {
        trace.step(|| {
            format!(
                "originator approval: {category} is restricted; {}",
                present(approved)
            )
        });
        if !approved {
            return refuse_told(
                policy,
                &cat.restricted_refusal,
                DenyKind::OriginatorApproval,
                approval_told,
                trace,
            );
        }
    }
    if cat.handling_code_restricts(fact.handling_code.as_deref()) {
        trace.step(|| {
            format!(
                "originator approval: handling code {:?} is not open; {}",
                fact.handling_code.as_deref().unwrap_or_default(),
                present(approved)
            )
        });
        if !approved {
            return refuse_told(
                policy,
                &cat.handling_code_refusal,
                DenyKind::OriginatorApproval,
                approval_told,
                trace,
            );
        }
    }

    // 6. Stage gates on the category, then the cell's own stage condition.
    for &g in &cat.gates {
        let gate = &policy.gates[g];
        if !gate.open_after.intersects(stage) {
            trace.step(|| format!("gate {} (line {}): shut", gate.refusal.rule, gate.line));
            return refuse_told(policy, &gate.refusal, DenyKind::Stage, relationship_held, trace);
        }
        trace.step(|| {
            let open = members(StageTerm::ALL, StageTerm::bit, Bits(gate.open_after.0 & stage.0));
            format!(
                "gate {} (line {}): open ({})",
                gate.refusal.rule,
                gate.line,
                join(open)
            )
        });
    }
    if !cell.stage.is_empty() {
        if !cell.stage.intersects(stage) {
            trace.step(|| "stage: the cell's stage condition is not met".to_owned());
            return refuse_told(
                policy,
                &cell.refusals.stage,
                DenyKind::Stage,
                relationship_held,
                trace,
            );
        }
        trace.step(|| {
            format!(
                "stage: met ({})",
                join(members(
                    StageTerm::ALL,
                    StageTerm::bit,
                    Bits(cell.stage.0 & stage.0)
                ))
            )
        });
    }

    // 7. A legitimate relationship, or a current break-glass in its place.
    let mut relied_on = None;
    let mut used_break_glass = false;
    if cell.relationships.is_empty() {
        trace.step(|| {
            if cell.mode == Mode::OriginatorApproval {
                "relationship: not needed (the originator's approval entitles)".to_owned()
            } else {
                "relationship: not needed (standing entitlement)".to_owned()
            }
        });
    } else {
        let held = Bits(relationship_bits(req) & cell.relationships.0);
        relied_on = Relationship::ALL.iter().copied().find(|r| held.contains(r.bit()));
        match relied_on {
            Some(r) => trace.step(|| format!("relationship: holds {r}")),
            None if break_glass_expires_at_ms.is_some() => {
                used_break_glass = true;
                trace.step(|| {
                    format!(
                        "relationship: none of {} held; break-glass stands in (flagged for review)",
                        join(members(Relationship::ALL, Relationship::bit, cell.relationships))
                    )
                });
            }
            None => {
                trace.step(|| {
                    format!(
                        "relationship: none of {} held",
                        join(members(Relationship::ALL, Relationship::bit, cell.relationships))
                    )
                });
                return refuse(policy, &cell.refusals.relationship, DenyKind::Relationship, trace);
            }
        }
    }

    // 8. Consent or a recorded exemption, where the category or cell needs one.
    let consent = if cell.consent_required {
        if req.state.consented.contains(&category) {
            ConsentGround::Consented
        } else if req.state.exempted.contains(&category) {
            ConsentGround::Exempted
        } else {
            trace.step(|| format!("consent: needed for {category}; neither consent nor exemption recorded"));
            return refuse_told(policy, &cell.refusals.consent, DenyKind::Consent, true, trace);
        }
    } else {
        ConsentGround::NotRequired
    };
    trace.step(|| match consent {
        ConsentGround::NotRequired => "consent: not needed".to_owned(),
        ConsentGround::Consented => format!("consent: needed; consent for {category} recorded"),
        ConsentGround::Exempted => format!("consent: needed; exemption for {category} recorded"),
    });

    // 9. Permit.
    let mode =
        if cell.mode == Mode::Pushed && !cell.pushed_while.is_empty() && !cell.pushed_while.intersects(stage)
        {
            trace.step(|| "mode: pushing has stopped at this stage; query only".to_owned());
            Mode::Query
        } else {
            cell.mode
        };
    let basis = if used_break_glass {
        policy.break_glass.basis
    } else {
        cell.basis.expect("granting cells have a basis (checked at load)")
    };
    let projection = cell
        .projection
        .expect("granting cells have a projection (checked at load)");
    trace.step(|| {
        let condition = cat
            .condition
            .map(|c| format!(" with {}", c.citation()))
            .unwrap_or_default();
        let notify = if cell.notify_owner {
            "; notify the owning agency"
        } else {
            ""
        };
        format!(
            "permit: {mode}, {projection}, basis {}{condition}{notify}",
            basis.citation()
        )
    });
    Decision::Permit(Permit {
        rule: cell.id.clone(),
        basis,
        condition: cat.condition,
        projection,
        mode,
        relied_on,
        consent,
        break_glass: used_break_glass,
        break_glass_expires_at_ms: if used_break_glass {
            break_glass_expires_at_ms
        } else {
            None
        },
        notify_owner: cell.notify_owner,
        policy_version: policy.version.clone(),
        path: trace.take(),
    })
}

fn present(approved: bool) -> &'static str {
    if approved { "granted" } else { "absent" }
}

fn stage_bits(stage: &crate::Stage) -> Bits {
    let mut bits = Bits::default();
    for term in StageTerm::ALL {
        if term.holds(stage) {
            bits.insert(term.bit());
        }
    }
    bits
}

/// The relationships the principal holds: its involvements (same bit order as [`Relationship`]), from the
/// case stage a MASH referral (unless made in another area), `own-record` when its own agency made the
/// record, `area` when the child is in its area, `lead-authority` when it holds the child's case.
fn relationship_bits(req: &Request<'_>) -> u16 {
    let mut bits = req.state.involvement_bits().0;
    if req.state.stage.mash_referral && !req.state.referral_elsewhere {
        bits |= Relationship::MashReferral.bit();
    }
    if req.fact.originator == req.principal.agency {
        bits |= Relationship::OwnRecord.bit();
    }
    if req.state.in_area {
        bits |= Relationship::Area.bit();
    }
    if req.state.lead_authority {
        bits |= Relationship::LeadAuthority.bit();
    }
    bits
}
