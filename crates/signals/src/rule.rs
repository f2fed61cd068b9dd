//! The rules: what raises a signal (a [`RuleKind`]), over what window, for whom ([`Recipient`]). Loaded from
//! a data file (`deploy/signals.toml`) by [`SignalRules::from_toml`].

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use halcyon_schema::{AgencyKind, Category};

use crate::file::{self, SignalRuleError};
use crate::indicator::{Indicator, Observation};

/// The shipped rules for England (docs/domain.md §7), compiled in.
pub const ENGLAND_TOML: &str = include_str!("../../../deploy/signals.toml");
/// The shipped rule file's path, as used in error messages.
pub const ENGLAND_FILE: &str = "deploy/signals.toml";

pub(crate) const DAY_MS: i64 = 86_400_000;

/// Who a signal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Recipient {
    /// The child's lead authority: the children's social care agency that holds the child's case (the
    /// first to receive a contact or referral, or the one whose child protection plan is current).
    LeadAuthority,
    /// Every agency of this kind (`mash`).
    Kind(AgencyKind),
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::LeadAuthority => f.write_str("lead-authority"),
            Recipient::Kind(k) => f.write_str(k.as_str()),
        }
    }
}

impl FromStr for Recipient {
    type Err = String;
    fn from_str(s: &str) -> Result<Recipient, String> {
        if s == "lead-authority" {
            return Ok(Recipient::LeadAuthority);
        }
        s.parse::<AgencyKind>().map(Recipient::Kind).map_err(|_| {
            let kinds: Vec<&str> = AgencyKind::ALL.iter().map(|k| k.as_str()).collect();
            format!(
                "unknown recipient {s:?} (expected lead-authority or an agency kind: {})",
                kinds.join(", ")
            )
        })
    }
}

/// One kind of indicator a co-occurrence rule counts: any of some indicators, at least `min_count` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicatorGroup {
    /// "repeat missing episodes".
    pub name: String,
    pub any_of: BTreeSet<Indicator>,
    pub min_count: u32,
}

impl IndicatorGroup {
    pub fn matches(&self, o: &Observation) -> bool {
        o.indicators.iter().any(|i| self.any_of.contains(i))
    }
}

/// What a rule looks for within its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    /// Facts indicating any of `concerns` from at least `min_agencies` distinct agencies.
    MultiAgency {
        concerns: BTreeSet<Indicator>,
        min_agencies: u32,
    },
    /// At least `min_kinds` of the groups each met (a group is met by `min_count` of its facts).
    CoOccurrence {
        indicators: Vec<IndicatorGroup>,
        min_kinds: u32,
    },
}

impl RuleKind {
    /// `multi-agency` or `co-occurrence`, as rule files name them.
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::MultiAgency { .. } => "multi-agency",
            RuleKind::CoOccurrence { .. } => "co-occurrence",
        }
    }

    /// Whether the rule counts this fact at all.
    pub fn reads(&self, o: &Observation) -> bool {
        match self {
            RuleKind::MultiAgency { concerns, .. } => o.indicators.iter().any(|i| concerns.contains(i)),
            RuleKind::CoOccurrence { indicators, .. } => indicators.iter().any(|g| g.matches(o)),
        }
    }
}

/// One signal rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `S01`: letters, digits, `-` and `_`; part of every signal id.
    pub id: String,
    pub name: String,
    /// The facts must all have occurred within this many days (24-hour days, inclusive) of each other.
    pub window_days: u32,
    pub kind: RuleKind,
    /// Who receives the signals it raises (the file's default unless the rule names its own).
    pub recipients: Vec<Recipient>,
    /// Where the rule comes from and why (guidance, a review's finding).
    pub source: String,
    pub note: String,
    /// Where it is written.
    pub file: String,
    pub line: usize,
}

impl Rule {
    pub fn window_ms(&self) -> i64 {
        i64::from(self.window_days) * DAY_MS
    }

    /// Whether the rule's recipients include `kind` (or, when `lead` is true, the lead authority).
    pub fn addresses(&self, kind: AgencyKind, lead: bool) -> bool {
        self.recipients.iter().any(|r| match r {
            Recipient::LeadAuthority => lead,
            Recipient::Kind(k) => *k == kind,
        })
    }
}

/// A loaded rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRules {
    pub(crate) version: String,
    /// The data category the sharing policy decides a signal under (the shipped file: D14, multi-agency signal).
    pub(crate) category: Category,
    pub(crate) rules: Vec<Arc<Rule>>,
}

impl SignalRules {
    /// Parses and checks a rule file; `file_name` is used in error messages.
    pub fn from_toml(src: &str, file_name: &str) -> Result<SignalRules, SignalRuleError> {
        file::parse_rules(src, file_name)
    }

    /// Reads, parses and checks a rule file.
    pub fn load(path: &Path) -> Result<SignalRules, SignalRuleError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| SignalRuleError::whole_file(&name, format!("cannot read: {e}")))?;
        SignalRules::from_toml(&src, &name)
    }

    /// The shipped rules (`deploy/signals.toml`).
    pub fn england() -> SignalRules {
        match SignalRules::from_toml(ENGLAND_TOML, ENGLAND_FILE) {
            Ok(rules) => rules,
            Err(e) => panic!("the shipped signal rules are invalid: {e}"),
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn category(&self) -> Category {
        self.category
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| r.id == id)
    }
}
