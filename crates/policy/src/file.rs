//! The policy file: TOML parsed with spans, checked for unknown terms and inconsistencies, and compiled
//! into a [`Policy`]. Every rejection names the file, line and column and says why.

use halcyon_schema::source::position;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use halcyon_schema::{AgencyKind, Category};
use serde::Deserialize;
use toml::Spanned;

use crate::policy::{
    BreakGlassRule, CategoryRules, Cell, CellRefusals, FixedDenials, Gate, N_CATEGORIES, N_KINDS, OwnRule,
    Policy, Refusal, Slot, kind_index,
};
use crate::vocabulary::{
    Bits, Condition, FlagContent, FlagField, LawfulBasis, Mode, Projection, Purpose, Relationship, Role,
    StageTerm, join, members,
};

/// Why a policy file was rejected: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem is with the file as a whole (it cannot be read).
    pub line: usize,
    /// 1-based, in characters; 0 with `line`.
    pub column: usize,
    pub reason: String,
}

impl PolicyError {
    pub(crate) fn whole_file(file: &str, reason: impl Into<String>) -> PolicyError {
        PolicyError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            reason: reason.into(),
        }
    }

    fn render(&self) -> String {
        halcyon_schema::source::render(&self.file, self.line, self.column, &self.reason)
    }
}

/// Relationship terms a cell may use besides the [`Relationship`]s themselves.
const ANY_INVOLVEMENT: &str = "any-involvement";
const STANDING: &str = "standing";
/// Rule ids the policy itself uses; files may not reuse them.
const RESERVED_IDS: &[&str] = &[
    "own",
    "default-deny",
    "break-glass.no-reason",
    "break-glass.expired",
];

type Strings = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Spanned<String>,
    #[serde(default)]
    jurisdiction: String,
    #[serde(default)]
    description: String,
    own: RawOwn,
    roles: RawRoles,
    break_glass: RawBreakGlass,
    #[serde(default)]
    flag: Option<RawFlag>,
    category: BTreeMap<Spanned<String>, Spanned<RawCategory>>,
    #[serde(default)]
    gate: Vec<Spanned<RawGate>>,
    #[serde(default)]
    cell: Vec<Spanned<RawCell>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwn {
    basis: Spanned<String>,
    #[serde(default)]
    basis_for: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    default: Strings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreakGlass {
    max_minutes: Spanned<i64>,
    basis: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlag {
    /// Fields beyond the CP-IS content that the flag projection keeps (`plan-category`, `legal-status`).
    #[serde(default)]
    extra_fields: Option<Strings>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    name: String,
    purposes: Strings,
    #[serde(default)]
    consent_required: bool,
    #[serde(default)]
    restricted: bool,
    condition: Option<Spanned<String>>,
    #[serde(default)]
    handling_code_needs_approval: bool,
    open_handling_codes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    id: Spanned<String>,
    categories: Strings,
    open_after_any: Strings,
    reason: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCell {
    category: Spanned<String>,
    recipient: Spanned<String>,
    mode: Spanned<String>,
    #[serde(default)]
    table: String,
    id: Option<Spanned<String>>,
    relationship: Option<Strings>,
    stage: Option<Strings>,
    pushed_while: Option<Strings>,
    basis: Option<Spanned<String>>,
    projection: Option<Spanned<String>>,
    purposes: Option<Strings>,
    roles: Option<Strings>,
    consent_required: Option<Spanned<bool>>,
    notify_owner: Option<Spanned<bool>>,
    #[serde(default)]
    note: String,
}

/// Turns byte spans into file positions.
struct Source<'a> {
    src: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, reason: impl Into<String>) -> PolicyError {
        let (line, column) = position(self.src, span.start);
        PolicyError {
            file: self.file.to_owned(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn term<T: FromStr<Err = String>>(&self, s: &Spanned<String>) -> Result<T, PolicyError> {
        s.get_ref().trim().parse().map_err(|e| self.error(s.span(), e))
    }

    fn terms<T: FromStr<Err = String> + Copy>(&self, list: &Strings) -> Result<Vec<T>, PolicyError> {
        list.get_ref().iter().map(|s| self.term(s)).collect()
    }
}

fn bits<T: Copy>(items: &[T], bit: impl Fn(T) -> u16) -> Bits {
    let mut b = Bits::default();
    for i in items {
        b.insert(bit(*i));
    }
    b
}

/// Parses, checks and compiles a policy file.
pub(crate) fn parse(src: &str, file_name: &str) -> Result<Policy, PolicyError> {
    let source = Source { src, file: file_name };
    let raw: RawFile = toml::from_str(src).map_err(|e| {
        let reason = e.message().trim().to_owned();
        match e.span() {
            Some(span) => source.error(span, reason),
            None => PolicyError {
                file: file_name.to_owned(),
                line: 1,
                column: 1,
                reason,
            },
        }
    })?;
    compile(&source, raw)
}

fn compile(s: &Source<'_>, raw: RawFile) -> Result<Policy, PolicyError> {
    let version = raw.version.get_ref().trim();
    if version.is_empty() {
        return Err(s.error(
            raw.version.span(),
            "`version` must not be empty: every decision carries it",
        ));
    }
    let version: Arc<str> = Arc::from(version);

    // The own rule.
    let own_basis: LawfulBasis = s.term(&raw.own.basis)?;
    let mut own = OwnRule {
        rule: Arc::from("own"),
        basis: [own_basis; N_KINDS],
    };
    for (kind, basis) in &raw.own.basis_for {
        let kind: AgencyKind = s.term(kind)?;
        own.basis[kind_index(kind)] = s.term(basis)?;
    }

    // Roles.
    let default_roles: Vec<Role> = s.terms(&raw.roles.default)?;
    if default_roles.is_empty() {
        return Err(s.error(
            raw.roles.default.span(),
            "`roles.default` must name at least one role",
        ));
    }
    let default_roles = bits(&default_roles, Role::bit);

    // Break-glass.
    let max_minutes = *raw.break_glass.max_minutes.get_ref();
    if !(1..=1440).contains(&max_minutes) {
        return Err(s.error(
            raw.break_glass.max_minutes.span(),
            format!("`break_glass.max_minutes` must be 1 to 1440 (24 hours), not {max_minutes}"),
        ));
    }
    let max_minutes = max_minutes as u32;
    let break_glass = BreakGlassRule {
        max_minutes,
        max_ms: i64::from(max_minutes) * 60_000,
        basis: s.term(&raw.break_glass.basis)?,
    };

    // What the flag carries beyond the CP-IS content.
    let mut flag = FlagContent::default();
    if let Some(extra) = raw.flag.as_ref().and_then(|f| f.extra_fields.as_ref()) {
        for field in s.terms::<FlagField>(extra)? {
            match field {
                FlagField::PlanCategory => flag.plan_category = true,
                FlagField::LegalStatus => flag.legal_status = true,
            }
        }
    }

    // Categories.
    let mut categories: Vec<Option<CategoryRules>> = vec![None; N_CATEGORIES];
    for (key, rc) in &raw.category {
        let category: Category = s.term(key)?;
        let line = position(s.src, key.span().start).0;
        let rc = rc.get_ref();
        let purposes: Vec<Purpose> = s.terms(&rc.purposes)?;
        if purposes.is_empty() {
            return Err(s.error(
                rc.purposes.span(),
                format!("{category} allows no purposes: remove the category or list its purposes"),
            ));
        }
        let condition: Option<Condition> = rc.condition.as_ref().map(|c| s.term(c)).transpose()?;
        if let Some(open) = &rc.open_handling_codes
            && !rc.handling_code_needs_approval
        {
            return Err(s.error(
                open.span(),
                "`open_handling_codes` only makes sense with `handling_code_needs_approval = true`",
            ));
        }
        let purposes = bits(&purposes, Purpose::bit);
        let label = format!("{category} ({})", rc.name);
        let purpose_refusals = Purpose::ALL
            .iter()
            .map(|p| {
                Refusal::new(
                    format!("{category}.purpose"),
                    format!(
                        "the purpose {p} is not allowed for {label}; allowed: {}",
                        join(members(Purpose::ALL, Purpose::bit, purposes))
                    ),
                )
            })
            .collect();
        let open_handling_codes: Vec<String> = rc
            .open_handling_codes
            .as_ref()
            .map(|v| v.get_ref().iter().map(|c| c.trim().to_owned()).collect())
            .unwrap_or_default();
        categories[usize::from(category.index())] = Some(CategoryRules {
            category,
            name: rc.name.clone(),
            purposes,
            consent_required: rc.consent_required,
            restricted: rc.restricted,
            condition,
            handling_code_needs_approval: rc.handling_code_needs_approval,
            note: rc.note.trim().to_owned(),
            line,
            gates: Vec::new(),
            purpose_refusals,
            restricted_refusal: Refusal::new(
                format!("{category}.restricted"),
                format!(
                    "{label} is restricted: it is shared only with the originating agency's approval, and there is none for this agency"
                ),
            ),
            handling_code_refusal: Refusal::new(
                format!("{category}.handling-code"),
                format!(
                    "this {label} carries a handling code that restricts onward sharing (open codes: {}); it is shared only with the originating agency's approval, and there is none for this agency",
                    join(&open_handling_codes)
                ),
            ),
            open_handling_codes,
        });
    }

    let mut ids: BTreeMap<String, usize> = RESERVED_IDS.iter().map(|id| ((*id).to_owned(), 0)).collect();
    let mut claim_id = |id: &str, span: Range<usize>| -> Result<(), PolicyError> {
        let line = position(s.src, span.start).0;
        match ids.insert(id.to_owned(), line) {
            None => Ok(()),
            Some(0) => Err(s.error(span, format!("rule id {id:?} is reserved by the policy engine"))),
            Some(first) => Err(s.error(
                span,
                format!("rule id {id:?} is used twice (first at line {first})"),
            )),
        }
    };

    // Gates.
    let mut gates = Vec::new();
    for rg in &raw.gate {
        let line = position(s.src, rg.span().start).0;
        let rg = rg.get_ref();
        let id = rg.id.get_ref().trim();
        if id.is_empty() {
            return Err(s.error(rg.id.span(), "a gate needs an `id`"));
        }
        claim_id(id, rg.id.span())?;
        let mut gate_categories = Vec::new();
        for c in rg.categories.get_ref() {
            let category: Category = s.term(c)?;
            let Some(rules) = categories[usize::from(category.index())].as_mut() else {
                return Err(s.error(
                    c.span(),
                    format!("gate {id} guards {category}, which has no [category.{category}]"),
                ));
            };
            rules.gates.push(gates.len());
            gate_categories.push(category);
        }
        if gate_categories.is_empty() {
            return Err(s.error(rg.categories.span(), format!("gate {id} guards no categories")));
        }
        let open_after: Vec<StageTerm> = s.terms(&rg.open_after_any)?;
        if open_after.is_empty() {
            return Err(s.error(
                rg.open_after_any.span(),
                format!("gate {id} never opens: list its stages"),
            ));
        }
        let reason = rg.reason.get_ref().trim();
        if reason.is_empty() {
            return Err(s.error(
                rg.reason.span(),
                format!("gate {id} needs a `reason` a person can read"),
            ));
        }
        let open_after = bits(&open_after, StageTerm::bit);
        gates.push(Gate {
            refusal: Refusal::new(
                id,
                format!(
                    "{reason} (the gate opens after: {})",
                    join(members(StageTerm::ALL, StageTerm::bit, open_after))
                ),
            ),
            categories: gate_categories,
            open_after,
            line,
        });
    }

    // Cells.
    let mut slots: Vec<Option<Box<Cell>>> = vec![None; N_CATEGORIES * N_KINDS];
    for rc in &raw.cell {
        let line = position(s.src, rc.span().start).0;
        let cell = compile_cell(s, rc.get_ref(), line, &categories, default_roles)?;
        let slot = &mut slots[usize::from(cell.category.index()) * N_KINDS + kind_index(cell.recipient)];
        if let Some(first) = slot {
            let at = rc.get_ref().mode.span();
            let what = format!("{} for {}", cell.category, cell.recipient);
            return Err(if first.mode == cell.mode {
                s.error(
                    at,
                    format!(
                        "{what} is granted twice (first at line {}): keep one [[cell]] per box of the table",
                        first.line
                    ),
                )
            } else {
                s.error(
                    at,
                    format!(
                        "{what} is granted twice with different modes: {} here and {} at line {}",
                        cell.mode, first.mode, first.line
                    ),
                )
            });
        }
        claim_id(
            &cell.id,
            rc.get_ref()
                .id
                .as_ref()
                .map_or(rc.get_ref().mode.span(), Spanned::span),
        )?;
        *slot = Some(Box::new(cell));
    }

    let slots: Vec<Slot> = slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| match slot {
            Some(cell) => Slot::Cell(cell),
            None => {
                let category = Category::new((i / N_KINDS) as u8).expect("index within the table");
                let kind = AgencyKind::ALL[i % N_KINDS];
                Slot::Absent(Refusal::new(
                    "default-deny",
                    format!("the policy grants {kind} agencies nothing of {category} (default deny)"),
                ))
            }
        })
        .collect();

    let fixed = FixedDenials {
        break_glass_no_reason: Refusal::new(
            "break-glass.no-reason",
            "break-glass needs a stated reason; nothing is shared on a break-glass without one",
        ),
        break_glass_expired: Refusal::new(
            "break-glass.expired",
            format!(
                "the break-glass is not current: it lasts {max_minutes} minutes from when it was invoked; invoke it again with a reason"
            ),
        ),
        no_category: Category::all()
            .map(|c| {
                Refusal::new(
                    "default-deny",
                    format!("the policy has no rules for {c} (default deny)"),
                )
            })
            .collect(),
    };

    let rule_categories = rule_categories(&categories, &gates, &slots);
    Ok(Policy {
        version,
        file_name: s.file.to_owned(),
        jurisdiction: raw.jurisdiction,
        description: raw.description.trim().to_owned(),
        own,
        default_roles,
        break_glass,
        categories,
        gates,
        slots,
        fixed,
        flag,
        rule_categories,
    })
}

/// Which categories each rule id speaks of: a cell's id its category, a gate's id the categories it
/// guards, a category's own refusals (`Dn.purpose`, `Dn.restricted`, `Dn.handling-code`) that category;
/// the rules that name no category (`own`, `default-deny`, the break-glass refusals) none.
fn rule_categories(
    categories: &[Option<CategoryRules>],
    gates: &[Gate],
    slots: &[Slot],
) -> HashMap<Arc<str>, Vec<Category>> {
    let mut map: HashMap<Arc<str>, Vec<Category>> = HashMap::new();
    for id in RESERVED_IDS {
        map.insert(Arc::from(*id), Vec::new());
    }
    let mut add = |id: &Arc<str>, category: Category| {
        let entry = map.entry(id.clone()).or_default();
        if !entry.contains(&category) {
            entry.push(category);
        }
    };
    for cat in categories.iter().flatten() {
        for refusal in cat
            .purpose_refusals
            .iter()
            .chain([&cat.restricted_refusal, &cat.handling_code_refusal])
        {
            add(&refusal.rule, cat.category);
        }
    }
    for gate in gates {
        for &c in &gate.categories {
            add(&gate.refusal.rule, c);
        }
    }
    for slot in slots {
        if let Slot::Cell(cell) = slot {
            add(&cell.id, cell.category);
        }
    }
    map
}

/// Parses relationship terms; `standing` alone means no relationship is needed.
fn relationships(s: &Source<'_>, list: &Strings) -> Result<(Bits, bool), PolicyError> {
    let mut set = Bits::default();
    let mut standing = false;
    for term in list.get_ref() {
        match term.get_ref().trim() {
            ANY_INVOLVEMENT => {
                for r in Relationship::ALL.iter().filter(|r| r.is_involvement()) {
                    set.insert(r.bit());
                }
            }
            STANDING => standing = true,
            _ => {
                let r: Relationship = s.term(term).map_err(|mut e| {
                    e.reason.push_str(&format!(", {ANY_INVOLVEMENT}, {STANDING}"));
                    e
                })?;
                set.insert(r.bit());
            }
        }
    }
    if standing && !set.is_empty() {
        return Err(s.error(
            list.span(),
            "`standing` means no relationship is needed: it cannot be combined with other relationships",
        ));
    }
    if !standing && set.is_empty() {
        return Err(s.error(
            list.span(),
            "an empty `relationship` list: name relationships or write [\"standing\"]",
        ));
    }
    Ok((set, standing))
}

fn compile_cell(
    s: &Source<'_>,
    rc: &RawCell,
    line: usize,
    categories: &[Option<CategoryRules>],
    default_roles: Bits,
) -> Result<Cell, PolicyError> {
    let category: Category = s.term(&rc.category)?;
    let recipient: AgencyKind = s.term(&rc.recipient)?;
    let mode: Mode = s.term(&rc.mode)?;
    let what = format!("{category} for {recipient}");
    let Some(cat) = categories[usize::from(category.index())].as_ref() else {
        return Err(s.error(
            rc.category.span(),
            format!("a cell for {category}, but the file has no [category.{category}] saying its purposes"),
        ));
    };
    let label = format!("{category} ({})", cat.name);

    if mode == Mode::Never {
        let granted = [
            ("basis", rc.basis.as_ref().map(Spanned::span)),
            ("projection", rc.projection.as_ref().map(Spanned::span)),
            ("relationship", rc.relationship.as_ref().map(Spanned::span)),
            ("stage", rc.stage.as_ref().map(Spanned::span)),
            ("pushed_while", rc.pushed_while.as_ref().map(Spanned::span)),
            ("purposes", rc.purposes.as_ref().map(Spanned::span)),
            ("roles", rc.roles.as_ref().map(Spanned::span)),
            ("notify_owner", rc.notify_owner.as_ref().map(Spanned::span)),
            (
                "consent_required",
                rc.consent_required.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((key, Some(span))) = granted.into_iter().find(|(_, span)| span.is_some()) {
            return Err(s.error(
                span,
                format!("{what} is `never`, which grants nothing: remove `{key}`"),
            ));
        }
    }
    if cat.restricted && !matches!(mode, Mode::OriginatorApproval | Mode::Never) {
        return Err(s.error(
            rc.mode.span(),
            format!("{label} is restricted: its cells may only be originator-approval or never, not {mode}"),
        ));
    }

    let basis: Option<LawfulBasis> = rc.basis.as_ref().map(|b| s.term(b)).transpose()?;
    let projection: Option<Projection> = rc.projection.as_ref().map(|p| s.term(p)).transpose()?;
    if mode != Mode::Never {
        if basis.is_none() {
            return Err(s.error(
                rc.mode.span(),
                format!("{what} grants {mode} access but names no lawful `basis`"),
            ));
        }
        match (mode, projection) {
            (_, None) => {
                return Err(s.error(
                    rc.mode.span(),
                    format!("{what} grants {mode} access but names no `projection`"),
                ));
            }
            (Mode::Flag, Some(p)) if p != Projection::Flag => {
                let span = rc.projection.as_ref().map_or(rc.mode.span(), Spanned::span);
                return Err(s.error(
                    span,
                    format!("{what} is a flag cell, so its projection must be flag, not {p}"),
                ));
            }
            _ => {}
        }
    }

    let (relationships, standing) = match &rc.relationship {
        Some(list) => relationships(s, list)?,
        None => (Bits::default(), true),
    };
    if relationships.contains(Relationship::MashReferral.bit()) && recipient != AgencyKind::Mash {
        let span = rc.relationship.as_ref().map_or(rc.mode.span(), Spanned::span);
        return Err(s.error(span, format!("{what}: only MASH cells may rely on mash-referral")));
    }
    if relationships.contains(Relationship::LeadAuthority.bit())
        && recipient != AgencyKind::ChildrensSocialCare
    {
        let span = rc.relationship.as_ref().map_or(rc.mode.span(), Spanned::span);
        return Err(s.error(
            span,
            format!("{what}: only children's social care cells may rely on lead-authority (the authority holding the case)"),
        ));
    }
    if relationships.contains(Relationship::OwnRecord.bit()) && category != Category::ACCESS_LOG {
        let span = rc.relationship.as_ref().map_or(rc.mode.span(), Spanned::span);
        return Err(s.error(
            span,
            format!(
                "{what}: own-record is for the access log (D13) only: an access record is made by the agency whose call it records; for other categories the own rule already shows an agency its own records"
            ),
        ));
    }
    if relationships.contains(Relationship::Area.bit()) && category != Category::SIGNAL {
        let span = rc.relationship.as_ref().map_or(rc.mode.span(), Spanned::span);
        return Err(s.error(
            span,
            format!(
                "{what}: area is for multi-agency signals (D14) only: a child being in an agency's area entitles it to the signal, and to nothing the signal cites"
            ),
        ));
    }
    if matches!(mode, Mode::Query | Mode::Pushed) && standing {
        let span = rc.relationship.as_ref().map_or(rc.mode.span(), Spanned::span);
        return Err(s.error(
            span,
            format!("{what} is {mode}, which needs a legitimate relationship: name it in `relationship`"),
        ));
    }
    let stage: Vec<StageTerm> = rc
        .stage
        .as_ref()
        .map(|l| s.terms(l))
        .transpose()?
        .unwrap_or_default();
    let pushed_while: Vec<StageTerm> = rc
        .pushed_while
        .as_ref()
        .map(|l| s.terms(l))
        .transpose()?
        .unwrap_or_default();
    if let Some(list) = &rc.pushed_while
        && mode != Mode::Pushed
    {
        return Err(s.error(
            list.span(),
            format!("{what} is {mode}: `pushed_while` applies to pushed cells only"),
        ));
    }

    let purposes = match &rc.purposes {
        None => cat.purposes,
        Some(list) => {
            let mut set = Bits::default();
            for term in list.get_ref() {
                let p: Purpose = s.term(term)?;
                if !cat.purposes.contains(p.bit()) {
                    return Err(s.error(
                        term.span(),
                        format!(
                            "{what} allows the purpose {p}, which [category.{category}] does not allow (allowed: {})",
                            join(members(Purpose::ALL, Purpose::bit, cat.purposes))
                        ),
                    ));
                }
                set.insert(p.bit());
            }
            set
        }
    };
    let roles = match &rc.roles {
        None => default_roles,
        Some(list) => {
            let roles: Vec<Role> = s.terms(list)?;
            if roles.is_empty() {
                return Err(s.error(
                    list.span(),
                    format!("{what} serves no roles: remove `roles` or name them"),
                ));
            }
            bits(&roles, Role::bit)
        }
    };
    let notify_owner = rc.notify_owner.as_ref().is_some_and(|b| *b.get_ref());
    let consent_required = cat.consent_required || rc.consent_required.as_ref().is_some_and(|b| *b.get_ref());

    let id = match &rc.id {
        Some(id) if id.get_ref().trim().is_empty() => return Err(s.error(id.span(), "an empty rule `id`")),
        Some(id) => id.get_ref().trim().to_owned(),
        None => format!("{category}.{recipient}.{mode}"),
    };
    let table = rc.table.trim();
    let shown = if table.is_empty() {
        String::new()
    } else {
        format!(" (sharing table: \"{table}\")")
    };
    let rel_names = join(members(Relationship::ALL, Relationship::bit, relationships));
    let stage_names = join(&stage);
    let refusals = CellRefusals {
        never: Refusal::new(
            id.as_str(),
            format!("{label} is never shared with {recipient} agencies by default{shown}"),
        ),
        purpose: Refusal::new(
            id.as_str(),
            format!(
                "{recipient} agencies may see {label} only for: {}",
                join(members(Purpose::ALL, Purpose::bit, purposes))
            ),
        ),
        role: Refusal::new(
            id.as_str(),
            format!(
                "{label} from other agencies is open to {recipient} staff in these roles only: {}",
                join(members(Role::ALL, Role::bit, roles))
            ),
        ),
        approval: Refusal::new(
            id.as_str(),
            format!(
                "{label} reaches {recipient} agencies only with the originating agency's approval, and there is none for this agency{shown}"
            ),
        ),
        stage: Refusal::new(
            id.as_str(),
            format!(
                "{label} reaches {recipient} agencies only once the case has reached: {stage_names}{shown}"
            ),
        ),
        relationship: Refusal::new(
            id.as_str(),
            format!(
                "{label} reaches {recipient} agencies only with a legitimate relationship to the child ({rel_names}); this agency has none and no break-glass is in force{shown}"
            ),
        ),
        consent: Refusal::new(
            id.as_str(),
            format!(
                "{label} is shared with {recipient} agencies only with consent or a recorded consent exemption, and neither is recorded for {category}"
            ),
        ),
    };

    Ok(Cell {
        category,
        recipient,
        id: Arc::from(id),
        table: table.to_owned(),
        mode,
        relationships,
        stage: bits(&stage, StageTerm::bit),
        pushed_while: bits(&pushed_while, StageTerm::bit),
        basis,
        projection,
        purposes,
        roles,
        consent_required,
        notify_owner,
        note: rc.note.trim().to_owned(),
        line,
        refusals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_file_line_column_and_reason() {
        let e = PolicyError {
            file: "p.toml".into(),
            line: 3,
            column: 9,
            reason: "unknown mode".into(),
        };
        assert_eq!(e.to_string(), "p.toml:3:9: unknown mode");
        assert_eq!(
            PolicyError::whole_file("p.toml", "cannot read").to_string(),
            "p.toml: cannot read"
        );
    }
}
