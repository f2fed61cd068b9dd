//! A loaded, checked policy: the rules of a policy file compiled into an index (one slot per category ×
//! recipient kind) with every rule id and denial reason prepared at load time, so `decide` only looks
//! things up and clones reference-counted strings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use halcyon_schema::{AgencyKind, Category};

use crate::file::{self, PolicyError};
use crate::vocabulary::{
    Bits, Condition, FlagContent, LawfulBasis, Mode, Projection, Purpose, Relationship, Role, StageTerm,
    members,
};

/// The policy shipped with Halcyon: `deploy/policy/england.toml`.
pub const ENGLAND_TOML: &str = include_str!("../../../deploy/policy/england.toml");
/// The shipped file's name, as used in error messages.
pub const ENGLAND_FILE: &str = "deploy/policy/england.toml";

pub(crate) const N_KINDS: usize = AgencyKind::ALL.len();
pub(crate) const N_CATEGORIES: usize = Category::COUNT as usize;

/// A sharing policy: versioned, default deny. Build it with [`Policy::from_toml`], [`Policy::load`] or
/// [`Policy::england`]; decide with [`crate::decide`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) version: Arc<str>,
    pub(crate) file_name: String,
    pub(crate) jurisdiction: String,
    pub(crate) description: String,
    pub(crate) own: OwnRule,
    pub(crate) default_roles: Bits,
    pub(crate) break_glass: BreakGlassRule,
    /// Indexed by category number; `None` where the file has no `[category.Dn]`.
    pub(crate) categories: Vec<Option<CategoryRules>>,
    pub(crate) gates: Vec<Gate>,
    /// `N_CATEGORIES × N_KINDS` slots, index `category * N_KINDS + kind`.
    pub(crate) slots: Vec<Slot>,
    pub(crate) fixed: FixedDenials,
    /// What the flag projection keeps beyond the CP-IS content (`[flag] extra_fields`).
    pub(crate) flag: FlagContent,
    /// The categories each rule id speaks of (see [`Policy::rule_categories`]).
    pub(crate) rule_categories: HashMap<Arc<str>, Vec<Category>>,
}

/// The rule that lets an agency see its own records.
#[derive(Debug, Clone)]
pub(crate) struct OwnRule {
    pub(crate) rule: Arc<str>,
    /// By recipient kind (the police process their own records under Part 3).
    pub(crate) basis: [LawfulBasis; N_KINDS],
}

/// The break-glass (vital interests) limits.
#[derive(Debug, Clone)]
pub(crate) struct BreakGlassRule {
    pub(crate) max_minutes: u32,
    pub(crate) max_ms: i64,
    pub(crate) basis: LawfulBasis,
}

/// A rule id with the reason it gives when it refuses, both ready to hand out.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) rule: Arc<str>,
    pub(crate) reason: Arc<str>,
}

impl Refusal {
    pub(crate) fn new(rule: impl Into<Arc<str>>, reason: impl Into<Arc<str>>) -> Refusal {
        Refusal {
            rule: rule.into(),
            reason: reason.into(),
        }
    }
}

/// Refusals that do not depend on a cell.
#[derive(Debug, Clone)]
pub(crate) struct FixedDenials {
    pub(crate) break_glass_no_reason: Refusal,
    pub(crate) break_glass_expired: Refusal,
    /// By category: the file has no rules for it.
    pub(crate) no_category: Vec<Refusal>,
}

/// What the file says about one data category, whoever asks.
#[derive(Debug, Clone)]
pub struct CategoryRules {
    pub(crate) category: Category,
    pub(crate) name: String,
    pub(crate) purposes: Bits,
    pub(crate) consent_required: bool,
    pub(crate) restricted: bool,
    pub(crate) condition: Option<Condition>,
    pub(crate) handling_code_needs_approval: bool,
    pub(crate) open_handling_codes: Vec<String>,
    pub(crate) note: String,
    pub(crate) line: usize,
    /// Indices into `Policy::gates` of the gates on this category.
    pub(crate) gates: Vec<usize>,
    /// By purpose (declaration order): why that purpose is refused.
    pub(crate) purpose_refusals: Vec<Refusal>,
    pub(crate) restricted_refusal: Refusal,
    pub(crate) handling_code_refusal: Refusal,
}

impl CategoryRules {
    pub fn category(&self) -> Category {
        self.category
    }

    /// The category's name as the file gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The purposes any recipient may have for this category.
    pub fn purposes(&self) -> Vec<Purpose> {
        members(Purpose::ALL, Purpose::bit, self.purposes)
    }

    pub fn allows_purpose(&self, purpose: Purpose) -> bool {
        self.purposes.contains(purpose.bit())
    }

    /// Sharing needs the child's (or a parent's) consent or a recorded consent exemption.
    pub fn consent_required(&self) -> bool {
        self.consent_required
    }

    /// Never shared without the originating agency's approval (ARCHITECTURE.md: sexual health, referrer
    /// identity).
    pub fn restricted(&self) -> bool {
        self.restricted
    }

    /// The special-category condition relied on (health data).
    pub fn condition(&self) -> Option<Condition> {
        self.condition
    }

    /// A fact carrying a handling code outside `open_handling_codes` needs originator approval.
    pub fn handling_code_needs_approval(&self) -> bool {
        self.handling_code_needs_approval
    }

    pub fn open_handling_codes(&self) -> &[String] {
        &self.open_handling_codes
    }

    pub fn note(&self) -> &str {
        &self.note
    }

    /// Line of `[category.Dn]` in the file.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Whether a fact with this handling code needs the originator's approval.
    pub fn handling_code_restricts(&self, code: Option<&str>) -> bool {
        match code.map(str::trim) {
            Some(code) if self.handling_code_needs_approval && !code.is_empty() => {
                !self.open_handling_codes.iter().any(|open| open == code)
            }
            _ => false,
        }
    }
}

/// A stage gate: the categories it guards stay shut until the case reaches one of its stages.
#[derive(Debug, Clone)]
pub struct Gate {
    pub(crate) refusal: Refusal,
    pub(crate) categories: Vec<Category>,
    pub(crate) open_after: Bits,
    pub(crate) line: usize,
}

impl Gate {
    pub fn id(&self) -> &str {
        &self.refusal.rule
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// The gate opens once any of these stages is reached.
    pub fn open_after(&self) -> Vec<StageTerm> {
        members(StageTerm::ALL, StageTerm::bit, self.open_after)
    }

    /// The reason a person reads when the gate refuses.
    pub fn reason(&self) -> &str {
        &self.refusal.reason
    }

    pub fn line(&self) -> usize {
        self.line
    }
}

/// One box of the sharing table: what agencies of one kind may see of one category recorded by others.
#[derive(Debug, Clone)]
pub struct Cell {
    pub(crate) category: Category,
    pub(crate) recipient: AgencyKind,
    pub(crate) id: Arc<str>,
    pub(crate) table: String,
    pub(crate) mode: Mode,
    pub(crate) relationships: Bits,
    pub(crate) stage: Bits,
    pub(crate) pushed_while: Bits,
    pub(crate) basis: Option<LawfulBasis>,
    pub(crate) projection: Option<Projection>,
    /// Effective purposes: the cell's own list, or the category's.
    pub(crate) purposes: Bits,
    /// Effective roles: the cell's own list, or the file's default roles.
    pub(crate) roles: Bits,
    /// Effective: the cell's or the category's requirement.
    pub(crate) consent_required: bool,
    pub(crate) notify_owner: bool,
    pub(crate) note: String,
    pub(crate) line: usize,
    pub(crate) refusals: CellRefusals,
}

/// Why a cell refuses, per check, prepared at load time.
#[derive(Debug, Clone)]
pub(crate) struct CellRefusals {
    pub(crate) never: Refusal,
    pub(crate) purpose: Refusal,
    pub(crate) role: Refusal,
    pub(crate) approval: Refusal,
    pub(crate) stage: Refusal,
    pub(crate) relationship: Refusal,
    pub(crate) consent: Refusal,
}

impl Cell {
    pub fn category(&self) -> Category {
        self.category
    }

    pub fn recipient(&self) -> AgencyKind {
        self.recipient
    }

    /// The rule id decisions carry, e.g. `D4.police.pushed`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The box as written in docs/sharing.md, e.g. `P (participant)`.
    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `None` for `never` cells.
    pub fn basis(&self) -> Option<LawfulBasis> {
        self.basis
    }

    /// `None` for `never` cells.
    pub fn projection(&self) -> Option<Projection> {
        self.projection
    }

    /// The relationships any one of which entitles the recipient; empty for a standing entitlement.
    pub fn relationships(&self) -> Vec<Relationship> {
        members(Relationship::ALL, Relationship::bit, self.relationships)
    }

    /// Stages any one of which the case must have reached (on top of the category's gates); empty for
    /// none.
    pub fn stage_conditions(&self) -> Vec<StageTerm> {
        members(StageTerm::ALL, StageTerm::bit, self.stage)
    }

    /// For pushed cells: pushing lasts while one of these stages holds, after which the cell gives
    /// query access only. Empty: always pushed.
    pub fn pushed_while(&self) -> Vec<StageTerm> {
        members(StageTerm::ALL, StageTerm::bit, self.pushed_while)
    }

    pub fn purposes(&self) -> Vec<Purpose> {
        members(Purpose::ALL, Purpose::bit, self.purposes)
    }

    pub fn allows_purpose(&self, purpose: Purpose) -> bool {
        self.purposes.contains(purpose.bit())
    }

    pub fn roles(&self) -> Vec<Role> {
        members(Role::ALL, Role::bit, self.roles)
    }

    pub fn allows_role(&self, role: Role) -> bool {
        self.roles.contains(role.bit())
    }

    pub fn consent_required(&self) -> bool {
        self.consent_required
    }

    /// A view notifies the owning agency (CP-IS "access to service notification").
    pub fn notify_owner(&self) -> bool {
        self.notify_owner
    }

    pub fn note(&self) -> &str {
        &self.note
    }

    /// Line of the cell's `[[cell]]` in the file.
    pub fn line(&self) -> usize {
        self.line
    }
}

/// One category × recipient kind: a cell, or nothing (default deny).
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Cell(Box<Cell>),
    Absent(Refusal),
}

impl Policy {
    /// Parses and checks a policy file. `file_name` is used in error messages only.
    pub fn from_toml(src: &str, file_name: &str) -> Result<Policy, PolicyError> {
        file::parse(src, file_name)
    }

    /// Reads, parses and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::whole_file(&name, format!("cannot read the policy file: {e}")))?;
        Policy::from_toml(&src, &name)
    }

    /// The policy shipped with Halcyon (`deploy/policy/england.toml`, compiled in). Panics only if the
    /// shipped file is broken, which a test rules out.
    pub fn england() -> Policy {
        match Policy::from_toml(ENGLAND_TOML, ENGLAND_FILE) {
            Ok(policy) => policy,
            Err(e) => panic!("the shipped policy is broken: {e}"),
        }
    }

    /// The file's `version`; every decision carries it.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    pub fn jurisdiction(&self) -> &str {
        &self.jurisdiction
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The cell for a category and recipient kind, if the file has one (a `never` cell included).
    pub fn cell(&self, category: Category, kind: AgencyKind) -> Option<&Cell> {
        match self.slot(category, kind) {
            Slot::Cell(cell) => Some(cell),
            Slot::Absent(_) => None,
        }
    }

    /// Every cell, in category then recipient order.
    pub fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Cell(cell) => Some(&**cell),
            Slot::Absent(_) => None,
        })
    }

    /// What the file says about a category, if anything.
    pub fn category(&self, category: Category) -> Option<&CategoryRules> {
        self.categories
            .get(usize::from(category.index()))
            .and_then(Option::as_ref)
    }

    /// The category this file decides `category` as, and its rules: itself, or for a file written before
    /// it existed, the category it was split out of ([`Category::split_from`]). `None` if neither is here.
    pub fn decides_as(&self, category: Category) -> Option<(Category, &CategoryRules)> {
        match self.category(category) {
            Some(rules) => Some((category, rules)),
            None => {
                let older = category.split_from()?;
                self.category(older).map(|rules| (older, rules))
            }
        }
    }

    pub fn gates(&self) -> &[Gate] {
        &self.gates
    }

    /// How long a break-glass lasts.
    pub fn break_glass_max_minutes(&self) -> u32 {
        self.break_glass.max_minutes
    }

    /// What the flag projection keeps beyond the CP-IS content; pass it to [`crate::minimise`].
    pub fn flag_content(&self) -> FlagContent {
        self.flag
    }

    /// The categories a rule id speaks of: a cell's its category, a gate's the categories it guards, a
    /// category-wide refusal's (`Dn.purpose`…) that category; empty for rules that name none (`own`,
    /// `default-deny`, break-glass). `None` for an id this policy does not have: treat it as speaking of
    /// anything.
    pub fn rule_categories(&self, rule: &str) -> Option<&[Category]> {
        self.rule_categories.get(rule).map(Vec::as_slice)
    }

    /// Whether `rule` is a `never` box: it refuses whatever the request.
    pub fn rule_is_never(&self, rule: &str) -> bool {
        self.cells()
            .any(|cell| cell.mode == Mode::Never && &*cell.id == rule)
    }

    /// Whether agencies of `kind` may ever see records of `category` made by another agency: the file has a
    /// cell for them that is not `never`. What a caller may be told about facts it does not see is bounded
    /// by this (nothing at all about a category it may never see).
    pub fn may_ever_see(&self, category: Category, kind: AgencyKind) -> bool {
        self.decides_as(category).is_some_and(
            |(category, _)| matches!(self.slot(category, kind), Slot::Cell(cell) if cell.mode != Mode::Never),
        )
    }

    /// Whether an agency of `kind` may be granted any category recorded by another agency without holding a
    /// relationship with the child: some cell for its kind is not `never` and names no relationship (a
    /// standing entitlement open to every agency of the kind). When not, an agency that recorded nothing
    /// about a child, has no involvement with it and meets no MASH referral is granted nothing of it, which
    /// (unless [`Policy::grants_on`] `mash-referral` for its kind and the child has one) is what lets the
    /// projector skip deriving its standing view.
    pub fn grants_without_relationship(&self, kind: AgencyKind) -> bool {
        Category::all().any(|category| {
            self.category(category).is_some()
                && matches!(
                    self.slot(category, kind),
                    Slot::Cell(cell) if cell.mode != Mode::Never && cell.relationships.is_empty()
                )
        })
    }

    /// Whether an agency of `kind` may be granted anything on the strength of one relationship alone — the
    /// child's MASH referral (`mash-referral`), the child being in its area (`area`, the signal category's):
    /// some cell for its kind that is not `never` names it.
    pub fn grants_on(&self, relationship: Relationship, kind: AgencyKind) -> bool {
        let bit = relationship.bit();
        Category::all().any(|category| {
            self.category(category).is_some()
                && matches!(
                    self.slot(category, kind),
                    Slot::Cell(cell) if cell.mode != Mode::Never && cell.relationships.0 & bit != 0
                )
        })
    }

    /// Roles served by cells that name none.
    pub fn default_roles(&self) -> Vec<Role> {
        members(Role::ALL, Role::bit, self.default_roles)
    }

    pub(crate) fn slot(&self, category: Category, kind: AgencyKind) -> &Slot {
        &self.slots[usize::from(category.index()) * N_KINDS + kind_index(kind)]
    }
}

pub(crate) fn kind_index(kind: AgencyKind) -> usize {
    kind.index()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::{Involvement, Relationship};

    #[test]
    fn slots_follow_the_registry_order_of_kinds() {
        for (i, kind) in AgencyKind::ALL.into_iter().enumerate() {
            assert_eq!(kind_index(kind), i, "{kind}");
        }
    }

    #[test]
    fn involvements_and_relationships_share_bits() {
        // `decide` turns the principal's involvements into relationship bits without translating.
        for i in Involvement::ALL {
            assert_eq!(i.bit(), Relationship::from(*i).bit(), "{i}");
        }
    }

    #[test]
    fn the_shipped_policy_loads_and_every_box_has_a_cell() {
        let policy = Policy::england();
        assert_eq!(policy.version(), "england-2026.4");
        for c in Category::all() {
            assert!(policy.category(c).is_some(), "{c}");
            for kind in AgencyKind::ALL {
                let cell = policy.cell(c, kind).unwrap_or_else(|| panic!("{c} × {kind}"));
                assert_eq!((cell.category(), cell.recipient()), (c, kind));
            }
        }
    }

    #[test]
    fn handling_codes_restrict_unless_open() {
        let policy = Policy::england();
        let d8 = policy.category(Category::POLICE_INTELLIGENCE).unwrap();
        assert!(!d8.handling_code_restricts(None));
        assert!(!d8.handling_code_restricts(Some("")));
        assert!(!d8.handling_code_restricts(Some("P")));
        assert!(d8.handling_code_restricts(Some("C")));
        assert!(d8.handling_code_restricts(Some("4")));
        let d9 = policy.category(Category::ATTENDANCE).unwrap();
        assert!(
            !d9.handling_code_restricts(Some("C")),
            "only categories that say so"
        );
    }
}
