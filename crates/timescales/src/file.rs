//! The two data files — a bank-holiday calendar and a rule table — parsed with spans and checked, so every
//! rejection names the file, the line and column, and a reason a person can act on.

use halcyon_schema::source::position;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use halcyon_schema::convert::EVENT_TYPE_NAMES;
use serde::Deserialize;
use time::{Date, Month};
use toml::Spanned;
use toml::value::Datetime;

use crate::calendar::{Calendar, ENGLAND_AND_WALES_FILE, ENGLAND_AND_WALES_TOML, is_weekday};
use crate::rule::{
    Condition, ENGLAND_FILE, ENGLAND_TOML, LOCAL_EXAMPLE_FILE, LOCAL_EXAMPLE_TOML, Repeat, Rule, RuleSet,
    Scope, Start, Stop, Unit,
};

/// Why a calendar or rule file was rejected: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct TimescaleError {
    pub file: String,
    /// 1-based; 0 when the problem is with the file as a whole (it cannot be read, or does not fit
    /// another file).
    pub line: usize,
    /// 1-based, in characters; 0 with `line`.
    pub column: usize,
    pub reason: String,
}

impl TimescaleError {
    pub(crate) fn whole_file(file: &str, reason: impl Into<String>) -> TimescaleError {
        TimescaleError {
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

/// Turns byte spans into file positions.
struct Source<'a> {
    src: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, reason: impl Into<String>) -> TimescaleError {
        let (line, column) = position(self.src, span.start);
        TimescaleError {
            file: self.file.to_owned(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        position(self.src, span.start).0
    }

    fn term<T: FromStr<Err = String>>(&self, s: &Spanned<String>) -> Result<T, TimescaleError> {
        s.get_ref().trim().parse().map_err(|e| self.error(s.span(), e))
    }

    /// A non-empty, trimmed string.
    fn text(&self, s: &Spanned<String>, what: &str) -> Result<String, TimescaleError> {
        let text = s.get_ref().trim();
        if text.is_empty() {
            return Err(self.error(s.span(), format!("`{what}` must not be empty")));
        }
        Ok(text.to_owned())
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, TimescaleError> {
        toml::from_str(self.src).map_err(|e| {
            let reason = e.message().trim().to_owned();
            match e.span() {
                Some(span) => self.error(span, reason),
                None => TimescaleError {
                    file: self.file.to_owned(),
                    line: 1,
                    column: 1,
                    reason,
                },
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// The calendar file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    id: Spanned<String>,
    name: Spanned<String>,
    source: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    note: String,
    covers_from: Spanned<Datetime>,
    covers_to: Spanned<Datetime>,
    holidays: Vec<Spanned<RawHoliday>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoliday {
    date: Spanned<Datetime>,
    name: Spanned<String>,
}

/// A TOML local date (`2026-12-25`) as a [`Date`]; anything with a time or an offset is refused.
fn date(s: &Source<'_>, value: &Spanned<Datetime>, what: &str) -> Result<Date, TimescaleError> {
    let dt = value.get_ref();
    let (Some(d), None, None) = (dt.date, dt.time, dt.offset) else {
        return Err(s.error(
            value.span(),
            format!("`{what}` must be a plain date like 2026-12-25, not {dt}"),
        ));
    };
    Month::try_from(d.month)
        .ok()
        .and_then(|m| Date::from_calendar_date(i32::from(d.year), m, d.day).ok())
        .ok_or_else(|| s.error(value.span(), format!("`{what}` {dt} is not a date")))
}

pub(crate) fn parse_calendar(src: &str, file_name: &str) -> Result<Calendar, TimescaleError> {
    let s = Source { src, file: file_name };
    let raw: RawCalendar = s.parse()?;
    let id = s.text(&raw.id, "id")?;
    let name = s.text(&raw.name, "name")?;
    let source = s.text(&raw.source, "source")?;
    let covers_from = date(&s, &raw.covers_from, "covers_from")?;
    let covers_to = date(&s, &raw.covers_to, "covers_to")?;
    if covers_to < covers_from {
        return Err(s.error(
            raw.covers_to.span(),
            format!("`covers_to` ({covers_to}) is before `covers_from` ({covers_from})"),
        ));
    }
    let mut holidays: BTreeMap<Date, String> = BTreeMap::new();
    let mut lines: BTreeMap<Date, usize> = BTreeMap::new();
    for h in &raw.holidays {
        let day = date(&s, &h.get_ref().date, "date")?;
        let at = h.get_ref().date.span();
        let holiday_name = s.text(&h.get_ref().name, "name")?;
        if !(covers_from..=covers_to).contains(&day) {
            return Err(s.error(
                at,
                format!("{day} is outside the years this file covers ({covers_from} to {covers_to})"),
            ));
        }
        if !is_weekday(day) {
            return Err(s.error(
                at,
                format!(
                    "{day} ({holiday_name}) is a {}: a bank holiday on a weekend moves to a substitute weekday; list that day instead",
                    day.weekday()
                ),
            ));
        }
        if let Some(first) = lines.insert(day, s.line(&at)) {
            return Err(s.error(at, format!("{day} is listed twice (first at line {first})")));
        }
        holidays.insert(day, holiday_name);
    }
    Ok(Calendar {
        id,
        name,
        source,
        covers_from,
        covers_to,
        holidays,
    })
}

// ---------------------------------------------------------------------------------------------------------
// The rule file.

type Strings = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    version: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    jurisdiction: String,
    calendar: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)] // for people reading the file
    description: String,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    name: Spanned<String>,
    start: Option<Spanned<String>>,
    start_after: Option<Strings>,
    start_when: Option<Spanned<String>>,
    repeat: Option<Spanned<String>>,
    end: Option<Spanned<String>>,
    expiry: Option<Spanned<bool>>,
    #[serde(default)]
    stop: Vec<Spanned<RawStop>>,
    limit: Spanned<i64>,
    unit: Spanned<String>,
    scope: Spanned<String>,
    source: Spanned<String>,
    #[serde(default)]
    check: bool,
    #[serde(default)]
    note: String,
    awaiting_catalogue: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    event: Spanned<String>,
    when: Option<Spanned<String>>,
}

/// Names in one rule that the catalogue lacks, so `awaiting_catalogue` can be checked after the others.
struct EventNames<'a> {
    awaiting: bool,
    unknown: Vec<&'a Spanned<String>>,
}

impl<'a> EventNames<'a> {
    /// Checks an event type name; unknown names are an error unless the rule is awaiting the catalogue.
    fn check(
        &mut self,
        s: &Source<'_>,
        name: &'a Spanned<String>,
        what: &str,
    ) -> Result<String, TimescaleError> {
        let event = s.text(name, what)?;
        if EVENT_TYPE_NAMES.contains(&event.as_str()) {
            return Ok(event);
        }
        if !self.awaiting {
            let hint = closest(&event, EVENT_TYPE_NAMES)
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default();
            return Err(s.error(
                name.span(),
                format!(
                    "unknown event type {event:?} in `{what}`: not in the event catalogue (proto/halcyon/v1/events.proto){hint}"
                ),
            ));
        }
        if !event.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            || !event.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(s.error(
                name.span(),
                format!("{event:?} is not an event type name (PascalCase, like ReferralReceived)"),
            ));
        }
        self.unknown.push(name);
        Ok(event)
    }
}

/// The known name nearest to `name` by edit distance, if it is near enough to be a typo.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

pub(crate) fn parse_rules(src: &str, file_name: &str) -> Result<RuleSet, TimescaleError> {
    let s = Source { src, file: file_name };
    let raw: RawRules = s.parse()?;
    let version = s.text(&raw.version, "version")?;
    let calendar = s.text(&raw.calendar, "calendar")?;
    if raw.rule.is_empty() {
        return Err(TimescaleError::whole_file(file_name, "the file has no [[rule]]"));
    }

    // Ids first, so `start_after` may name a rule further down.
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for rr in &raw.rule {
        let id = s.text(&rr.get_ref().id, "id")?;
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(s.error(
                rr.get_ref().id.span(),
                format!("rule id {id:?} contains {c:?}: use letters, digits, '-' and '_'"),
            ));
        }
        let line = s.line(&rr.get_ref().id.span());
        if let Some(first) = ids.insert(id.clone(), line) {
            return Err(s.error(
                rr.get_ref().id.span(),
                format!("rule id {id:?} is used twice (first at line {first})"),
            ));
        }
    }

    let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
    for rr in &raw.rule {
        let line = s.line(&rr.span());
        rules.push(compile_rule(&s, rr.get_ref(), line, &ids)?);
    }

    // A chained rule's predecessors must have an end event, or nothing ever starts it.
    for (rr, rule) in raw.rule.iter().zip(&rules) {
        if let Start::After(previous) = &rule.start {
            let list = rr.get_ref().start_after.as_ref().map_or(rr.span(), Spanned::span);
            for p in previous {
                let before = rules.iter().find(|r| &r.id == p).expect("ids were checked");
                let Some(end) = &before.end else {
                    return Err(s.error(
                        list.clone(),
                        format!("{} starts after {p}, which has no end event (it expires), so it would never start", rule.id),
                    ));
                };
                if let (Some(c), Some(at)) = (rule.start_when, &rr.get_ref().start_when)
                    && c.event_type() != end
                {
                    return Err(s.error(
                        at.span(),
                        format!(
                            "{}: the condition {c} reads {}, but the clock starts at {p}'s end event, {end}",
                            rule.id,
                            c.event_type()
                        ),
                    ));
                }
            }
        }
    }

    Ok(RuleSet {
        versions: vec![version],
        calendar,
        rules: rules.into_iter().map(Arc::new).collect(),
    })
}

fn compile_rule(
    s: &Source<'_>,
    rr: &RawRule,
    line: usize,
    ids: &BTreeMap<String, usize>,
) -> Result<Rule, TimescaleError> {
    let id = s.text(&rr.id, "id")?;
    let name = s.text(&rr.name, "name")?;
    let mut names = EventNames {
        awaiting: rr.awaiting_catalogue.is_some(),
        unknown: Vec::new(),
    };

    let start_when: Option<Condition> = rr.start_when.as_ref().map(|c| s.term(c)).transpose()?;
    let start = match (&rr.start, &rr.start_after) {
        (Some(event), None) => {
            let event = names.check(s, event, "start")?;
            if let (Some(c), Some(at)) = (start_when, &rr.start_when)
                && c.event_type() != event
            {
                return Err(s.error(
                    at.span(),
                    format!(
                        "{id}: the condition {c} reads {}, but the rule starts at {event}",
                        c.event_type()
                    ),
                ));
            }
            Start::Event(event)
        }
        (None, Some(list)) => {
            if list.get_ref().is_empty() {
                return Err(s.error(list.span(), format!("{id}: `start_after` names no rule")));
            }
            let mut previous = Vec::new();
            for p in list.get_ref() {
                let p_id = s.text(p, "start_after")?;
                if !ids.contains_key(&p_id) {
                    return Err(s.error(
                        p.span(),
                        format!("{id} starts after {p_id:?}, which is not a rule in this file"),
                    ));
                }
                previous.push(p_id);
            }
            Start::After(previous)
        }
        (Some(event), Some(_)) => {
            return Err(s.error(
                event.span(),
                format!("{id} has both `start` and `start_after`: a clock starts one way"),
            ));
        }
        (None, None) => {
            return Err(s.error(
                rr.id.span(),
                format!("{id} has neither `start` (an event type) nor `start_after` (rule ids): missing field `start`"),
            ));
        }
    };

    let repeat: Repeat = rr
        .repeat
        .as_ref()
        .map(|r| s.term(r))
        .transpose()?
        .unwrap_or_default();
    let expiry = rr.expiry.as_ref().is_some_and(|e| *e.get_ref());
    let end = match (&rr.end, expiry) {
        (Some(event), false) => Some(names.check(s, event, "end")?),
        (None, true) => None,
        (Some(event), true) => {
            return Err(s.error(
                event.span(),
                format!("{id} has an `end` event and `expiry = true`: an expiry clock has no end event"),
            ));
        }
        (None, false) => {
            let at = rr.expiry.as_ref().map_or(rr.id.span(), Spanned::span);
            return Err(s.error(
                at,
                format!("{id} has no `end` event: missing field `end` (or `expiry = true` for a clock that runs out)"),
            ));
        }
    };
    let mut stops = Vec::new();
    for st in &rr.stop {
        let st = st.get_ref();
        let event_type = names.check(s, &st.event, "stop.event")?;
        let when: Option<Condition> = st.when.as_ref().map(|c| s.term(c)).transpose()?;
        if let (Some(c), Some(at)) = (when, &st.when)
            && c.event_type() != event_type
        {
            return Err(s.error(
                at.span(),
                format!(
                    "{id}: the condition {c} reads {}, not {event_type}",
                    c.event_type()
                ),
            ));
        }
        stops.push(Stop { event_type, when });
    }

    let unit: Unit = s.term(&rr.unit)?;
    let limit = *rr.limit.get_ref();
    let limit = match u32::try_from(limit) {
        Ok(n) if (1..=unit.limit_max()).contains(&n) => n,
        _ => {
            return Err(s.error(
                rr.limit.span(),
                format!(
                    "{id}: `limit` must be 1 to {} {unit}, not {limit}",
                    unit.limit_max()
                ),
            ));
        }
    };
    let scope: Scope = s.term(&rr.scope)?;
    if scope == Scope::Counterpart && matches!(start, Start::After(_)) {
        return Err(s.error(
            rr.scope.span(),
            format!("{id}: a rule that starts after another cannot use the counterpart scope"),
        ));
    }
    let source = s.text(&rr.source, "source")?;
    let note = rr.note.trim().to_owned();
    if rr.check && note.is_empty() {
        return Err(s.error(
            rr.id.span(),
            format!("{id} is marked `check = true`: say in `note` what needs checking"),
        ));
    }

    let awaiting_catalogue = match &rr.awaiting_catalogue {
        None => None,
        Some(reason) => {
            let text = s.text(reason, "awaiting_catalogue")?;
            if names.unknown.is_empty() {
                return Err(s.error(
                    reason.span(),
                    format!("{id} is marked `awaiting_catalogue`, but every event it names is in the catalogue: remove the mark"),
                ));
            }
            Some(text)
        }
    };
    // Keep the unknown names visible in the reason for people listing the rules.
    let unknown: BTreeSet<&str> = names.unknown.iter().map(|n| n.get_ref().trim()).collect();
    let awaiting_catalogue = awaiting_catalogue.map(|text| {
        let listed = unknown.iter().copied().collect::<Vec<_>>().join(", ");
        if text.contains(&listed) {
            text
        } else {
            format!("{text} (not yet in the catalogue: {listed})")
        }
    });

    Ok(Rule {
        id,
        name,
        start,
        start_when,
        repeat,
        end,
        stops,
        limit,
        unit,
        scope,
        source,
        check: rr.check,
        note,
        awaiting_catalogue,
        file: s.file.to_owned(),
        line,
    })
}

/// Loading a calendar: the parser above, from text, a file, or the shipped England and Wales file.
impl Calendar {
    /// Parses and checks a calendar file. `file_name` is used in error messages.
    pub fn from_toml(src: &str, file_name: &str) -> Result<Calendar, TimescaleError> {
        parse_calendar(src, file_name)
    }

    /// Reads, parses and checks a calendar file.
    pub fn load(path: &Path) -> Result<Calendar, TimescaleError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| TimescaleError::whole_file(&name, format!("cannot read the calendar file: {e}")))?;
        Calendar::from_toml(&src, &name)
    }

    /// England and Wales, from the shipped file (compiled in).
    pub fn england_and_wales() -> Calendar {
        match Calendar::from_toml(ENGLAND_AND_WALES_TOML, ENGLAND_AND_WALES_FILE) {
            Ok(calendar) => calendar,
            Err(e) => panic!("the shipped calendar is broken: {e}"),
        }
    }
}

/// Loading rules: the parser above, from text, a file, or the shipped files.
impl RuleSet {
    /// Parses and checks a rule file. `file_name` is used in error messages.
    pub fn from_toml(src: &str, file_name: &str) -> Result<RuleSet, TimescaleError> {
        parse_rules(src, file_name)
    }

    /// Reads, parses and checks a rule file.
    pub fn load(path: &Path) -> Result<RuleSet, TimescaleError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| TimescaleError::whole_file(&name, format!("cannot read the rule file: {e}")))?;
        RuleSet::from_toml(&src, &name)
    }

    /// England's statutory timescales, from the shipped file (compiled in).
    pub fn england() -> RuleSet {
        match RuleSet::from_toml(ENGLAND_TOML, ENGLAND_FILE) {
            Ok(rules) => rules,
            Err(e) => panic!("the shipped rule file is broken: {e}"),
        }
    }

    /// The shipped example of local rules (MASH RAG ratings).
    pub fn local_example() -> RuleSet {
        match RuleSet::from_toml(LOCAL_EXAMPLE_TOML, LOCAL_EXAMPLE_FILE) {
            Ok(rules) => rules,
            Err(e) => panic!("the shipped local rule file is broken: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(
            closest("ReferalReceived", EVENT_TYPE_NAMES),
            Some("ReferralReceived")
        );
        assert_eq!(closest("SomethingElseEntirely", EVENT_TYPE_NAMES), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn errors_display_file_line_column_and_reason() {
        let e = TimescaleError {
            file: "t.toml".into(),
            line: 3,
            column: 9,
            reason: "unknown unit".into(),
        };
        assert_eq!(e.to_string(), "t.toml:3:9: unknown unit");
        assert_eq!(
            TimescaleError::whole_file("t.toml", "cannot read").to_string(),
            "t.toml: cannot read"
        );
    }
}
