//! The rule file parsed with spans and checked, so every rejection names the file, the line and column,
//! and a reason a person can act on.

use halcyon_schema::source::position;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use halcyon_schema::Category;
use serde::Deserialize;
use toml::Spanned;

use crate::indicator::Indicator;
use crate::rule::{IndicatorGroup, Recipient, Rule, RuleKind, SignalRules};

/// The longest window a rule may set: a year (a bigger number is a typo, and no longer "co-occurrence").
pub const WINDOW_DAYS_MAX: u32 = 366;

/// Why a rule file was rejected: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SignalRuleError {
    pub file: String,
    /// 1-based; 0 when the problem is with the file as a whole (it cannot be read).
    pub line: usize,
    /// 1-based, in characters; 0 with `line`.
    pub column: usize,
    pub reason: String,
}

impl SignalRuleError {
    pub(crate) fn whole_file(file: &str, reason: impl Into<String>) -> SignalRuleError {
        SignalRuleError {
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

struct Source<'a> {
    src: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, reason: impl Into<String>) -> SignalRuleError {
        let (line, column) = position(self.src, span.start);
        SignalRuleError {
            file: self.file.to_owned(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn text(&self, s: &Spanned<String>, what: &str) -> Result<String, SignalRuleError> {
        let text = s.get_ref().trim();
        if text.is_empty() {
            return Err(self.error(s.span(), format!("`{what}` must not be empty")));
        }
        Ok(text.to_owned())
    }

    fn indicators(&self, list: &Strings, what: &str) -> Result<BTreeSet<Indicator>, SignalRuleError> {
        if list.get_ref().is_empty() {
            return Err(self.error(list.span(), format!("`{what}` names no indicator")));
        }
        let mut out = BTreeSet::new();
        for name in list.get_ref() {
            let indicator: Indicator = name
                .get_ref()
                .trim()
                .parse()
                .map_err(|e| self.error(name.span(), e))?;
            if !out.insert(indicator) {
                return Err(self.error(name.span(), format!("{indicator} is listed twice")));
            }
        }
        Ok(out)
    }

    fn recipients(&self, list: &Strings) -> Result<Vec<Recipient>, SignalRuleError> {
        if list.get_ref().is_empty() {
            return Err(self.error(
                list.span(),
                "`recipients` names nobody: a signal nobody receives helps no child",
            ));
        }
        let mut out = Vec::new();
        for name in list.get_ref() {
            let r: Recipient = name
                .get_ref()
                .trim()
                .parse()
                .map_err(|e| self.error(name.span(), e))?;
            if out.contains(&r) {
                return Err(self.error(name.span(), format!("{r} is listed twice")));
            }
            out.push(r);
        }
        Ok(out)
    }
}

type Strings = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    version: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    description: String,
    category: Spanned<String>,
    recipients: Strings,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    name: Spanned<String>,
    kind: Spanned<String>,
    window_days: Spanned<i64>,
    source: Spanned<String>,
    #[serde(default)]
    note: String,
    recipients: Option<Strings>,
    // multi-agency
    concerns: Option<Strings>,
    min_agencies: Option<Spanned<i64>>,
    // co-occurrence
    #[serde(default)]
    indicator: Vec<Spanned<RawGroup>>,
    min_kinds: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    facts: Strings,
    min_count: Option<Spanned<i64>>,
}

pub(crate) fn parse_rules(src: &str, file_name: &str) -> Result<SignalRules, SignalRuleError> {
    let s = Source { src, file: file_name };
    let raw: RawRules = toml::from_str(src).map_err(|e| {
        let reason = e.message().trim().to_owned();
        match e.span() {
            Some(span) => s.error(span, reason),
            None => SignalRuleError {
                file: file_name.to_owned(),
                line: 1,
                column: 1,
                reason,
            },
        }
    })?;
    let version = s.text(&raw.version, "version")?;
    let category: Category = raw
        .category
        .get_ref()
        .trim()
        .parse()
        .map_err(|e| s.error(raw.category.span(), format!("`category`: {e}")))?;
    let recipients = s.recipients(&raw.recipients)?;
    if raw.rule.is_empty() {
        return Err(SignalRuleError::whole_file(file_name, "the file has no [[rule]]"));
    }
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut rules = Vec::with_capacity(raw.rule.len());
    for rr in &raw.rule {
        let line = position(src, rr.span().start).0;
        let rule = compile_rule(&s, rr.get_ref(), line, &recipients)?;
        if let Some(first) = lines.insert(rule.id.clone(), line) {
            return Err(s.error(
                rr.get_ref().id.span(),
                format!("rule id {:?} is used twice (first at line {first})", rule.id),
            ));
        }
        rules.push(Arc::new(rule));
    }
    Ok(SignalRules {
        version,
        category,
        rules,
    })
}

fn count(
    s: &Source<'_>,
    value: &Spanned<i64>,
    what: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, SignalRuleError> {
    let v = *value.get_ref();
    match u32::try_from(v) {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(s.error(
            value.span(),
            format!("`{what}` must be {} to {}, not {v}", range.start(), range.end()),
        )),
    }
}

fn compile_rule(
    s: &Source<'_>,
    rr: &RawRule,
    line: usize,
    default_recipients: &[Recipient],
) -> Result<Rule, SignalRuleError> {
    let id = s.text(&rr.id, "id")?;
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(s.error(
            rr.id.span(),
            format!("rule id {id:?} contains {c:?}: use letters, digits, '-' and '_'"),
        ));
    }
    let name = s.text(&rr.name, "name")?;
    let source = s.text(&rr.source, "source")?;
    let window_days = count(s, &rr.window_days, "window_days", 1..=WINDOW_DAYS_MAX)?;
    let recipients = match &rr.recipients {
        Some(list) => s.recipients(list)?,
        None => default_recipients.to_vec(),
    };
    let kind = match rr.kind.get_ref().trim() {
        "multi-agency" => {
            if let Some(first) = rr.indicator.first() {
                return Err(s.error(
                    first.span(),
                    format!("{id} is a multi-agency rule: [[rule.indicator]] is for co-occurrence rules"),
                ));
            }
            if let Some(k) = &rr.min_kinds {
                return Err(s.error(
                    k.span(),
                    format!("{id} is a multi-agency rule: `min_kinds` is for co-occurrence rules"),
                ));
            }
            let concerns = rr.concerns.as_ref().ok_or_else(|| {
                s.error(
                    rr.kind.span(),
                    format!("{id}: missing field `concerns` (the indicators that count as a concern)"),
                )
            })?;
            let min_agencies = rr.min_agencies.as_ref().ok_or_else(|| {
                s.error(
                    rr.kind.span(),
                    format!("{id}: missing field `min_agencies` (how many agencies must be concerned)"),
                )
            })?;
            RuleKind::MultiAgency {
                concerns: s.indicators(concerns, "concerns")?,
                min_agencies: count(s, min_agencies, "min_agencies", 2..=16)?,
            }
        }
        "co-occurrence" => {
            if let Some(c) = &rr.concerns {
                return Err(s.error(
                    c.span(),
                    format!("{id} is a co-occurrence rule: `concerns` is for multi-agency rules"),
                ));
            }
            if let Some(m) = &rr.min_agencies {
                return Err(s.error(
                    m.span(),
                    format!("{id} is a co-occurrence rule: `min_agencies` is for multi-agency rules"),
                ));
            }
            if rr.indicator.len() < 2 {
                return Err(s.error(
                    rr.kind.span(),
                    format!(
                        "{id}: a co-occurrence rule needs at least two [[rule.indicator]] groups, not {}",
                        rr.indicator.len()
                    ),
                ));
            }
            let mut groups = Vec::new();
            let mut names = BTreeSet::new();
            for g in &rr.indicator {
                let g = g.get_ref();
                let group_name = s.text(&g.name, "indicator.name")?;
                if !names.insert(group_name.clone()) {
                    return Err(s.error(
                        g.name.span(),
                        format!("{id}: indicator group {group_name:?} is named twice"),
                    ));
                }
                groups.push(IndicatorGroup {
                    name: group_name,
                    any_of: s.indicators(&g.facts, "indicator.facts")?,
                    min_count: match &g.min_count {
                        Some(n) => count(s, n, "indicator.min_count", 1..=100)?,
                        None => 1,
                    },
                });
            }
            let n_groups = groups.len() as u32;
            let min_kinds = rr.min_kinds.as_ref().ok_or_else(|| {
                s.error(
                    rr.kind.span(),
                    format!("{id}: missing field `min_kinds` (how many indicator groups must co-occur)"),
                )
            })?;
            RuleKind::CoOccurrence {
                indicators: groups,
                min_kinds: count(s, min_kinds, "min_kinds", 2..=n_groups)?,
            }
        }
        other => {
            return Err(s.error(
                rr.kind.span(),
                format!("unknown rule kind {other:?} (expected multi-agency or co-occurrence)"),
            ));
        }
    };
    Ok(Rule {
        id,
        name,
        window_days,
        kind,
        recipients,
        source,
        note: rr.note.trim().to_owned(),
        file: s.file.to_owned(),
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_file_line_column_and_reason() {
        let e = SignalRuleError {
            file: "s.toml".into(),
            line: 3,
            column: 9,
            reason: "unknown indicator".into(),
        };
        assert_eq!(e.to_string(), "s.toml:3:9: unknown indicator");
        assert_eq!(
            SignalRuleError::whole_file("s.toml", "cannot read").to_string(),
            "s.toml: cannot read"
        );
    }
}
