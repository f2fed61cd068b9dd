//! The rule table: what starts a clock, what meets it, what stops it, and how long it runs. Loaded from a
//! data file (`deploy/timescales/*.toml`) by [`RuleSet::from_toml`]; the vocabulary the file may use
//! ([`Unit`], [`Scope`], [`Repeat`], [`Condition`]) is defined here.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::TimescaleError;
use crate::calendar::{Calendar, HOUR_MS, add_days, add_months, date_of_ms, end_of_day_ms};

/// The shipped rules for England (docs/domain.md §3), compiled in.
pub const ENGLAND_TOML: &str = include_str!("../../../deploy/timescales/england.toml");
/// The shipped rule file's path, as used in error messages.
pub const ENGLAND_FILE: &str = "deploy/timescales/england.toml";
/// The shipped example of local rules (MASH RAG ratings), compiled in.
pub const LOCAL_EXAMPLE_TOML: &str = include_str!("../../../deploy/timescales/local-example.toml");
/// Its path, as used in error messages.
pub const LOCAL_EXAMPLE_FILE: &str = "deploy/timescales/local-example.toml";

/// What a timescale is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// Monday to Friday minus bank holidays; due at the end of the due day.
    WorkingDays,
    /// Due at the end of the start date plus the limit.
    CalendarDays,
    /// Same day of the month, clamped at month end; due at the end of the due day.
    CalendarMonths,
    /// Exactly the limit in hours after the start.
    Hours,
}

impl Unit {
    pub const ALL: [Unit; 4] = [
        Unit::WorkingDays,
        Unit::CalendarDays,
        Unit::CalendarMonths,
        Unit::Hours,
    ];

    /// The name used in rule files: `working-days`, `calendar-days`, `calendar-months`, `hours`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::WorkingDays => "working-days",
            Unit::CalendarDays => "calendar-days",
            Unit::CalendarMonths => "calendar-months",
            Unit::Hours => "hours",
        }
    }

    /// How a person reads an amount: `1 working day`, `3 calendar months`.
    pub fn amount(self, n: i64) -> String {
        let (one, many) = match self {
            Unit::WorkingDays => ("working day", "working days"),
            Unit::CalendarDays => ("calendar day", "calendar days"),
            Unit::CalendarMonths => ("calendar month", "calendar months"),
            Unit::Hours => ("hour", "hours"),
        };
        format!("{n} {}", if n == 1 { one } else { many })
    }

    /// The largest limit a rule may set in this unit (about ten years): a bigger number is a typo.
    pub fn limit_max(self) -> u32 {
        match self {
            Unit::WorkingDays => 2_600,
            Unit::CalendarDays => 3_660,
            Unit::CalendarMonths => 120,
            Unit::Hours => 87_840,
        }
    }

    /// Whether deadlines in this unit fall due at the end of a day (all but hours).
    pub fn is_date_based(self) -> bool {
        self != Unit::Hours
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Unit {
    type Err = String;
    fn from_str(s: &str) -> Result<Unit, String> {
        Unit::ALL.into_iter().find(|u| u.as_str() == s).ok_or_else(|| {
            format!(
                "unknown unit {s:?} (expected one of: {})",
                Unit::ALL.map(Unit::as_str).join(", ")
            )
        })
    }
}

/// Which later facts belong to a clock: which end event meets it, which stop event stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The same agency and case id as the start: most local-authority processes.
    Case,
    /// Any of the child's facts, from any agency: a return interview by a commissioned provider meets a
    /// missing episode closed by the police.
    Child,
    /// The end is published by the agency the start was addressed to (the start's counterpart) and, if it
    /// names a counterpart, names the starting agency: a MASH agency check and its response.
    Counterpart,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Case, Scope::Child, Scope::Counterpart];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Case => "case",
            Scope::Child => "child",
            Scope::Counterpart => "counterpart",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL.into_iter().find(|u| u.as_str() == s).ok_or_else(|| {
            format!(
                "unknown scope {s:?} (expected one of: {})",
                Scope::ALL.map(Scope::as_str).join(", ")
            )
        })
    }
}

/// What a further start does while a clock of the same rule runs in the same scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Repeat {
    /// Each start is its own clock; end events meet them oldest first.
    #[default]
    Parallel,
    /// The new start replaces the running clock, which ends as superseded (T04: the guidance counts from
    /// the last strategy discussion).
    Restart,
}

impl Repeat {
    pub const ALL: [Repeat; 2] = [Repeat::Parallel, Repeat::Restart];

    pub fn as_str(self) -> &'static str {
        match self {
            Repeat::Parallel => "parallel",
            Repeat::Restart => "restart",
        }
    }
}

impl FromStr for Repeat {
    type Err = String;
    fn from_str(s: &str) -> Result<Repeat, String> {
        Repeat::ALL.into_iter().find(|u| u.as_str() == s).ok_or_else(|| {
            format!(
                "unknown repeat {s:?} (expected one of: {})",
                Repeat::ALL.map(Repeat::as_str).join(", ")
            )
        })
    }
}

/// A fact about an event that a rule may require, beyond its type. Each is read from one field of the
/// event (see [`crate::Occurrence::from_event`]), so a rule file can say "the strategy discussion that
/// decided on a section 47 enquiry" without code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// `StrategyDiscussionHeld.section47_decided`.
    Section47Decided,
    /// `InitialConferenceHeld.plan_made`.
    PlanMade,
    /// `ReviewConferenceHeld.plan_continues`.
    PlanContinues,
    /// `ReferralDecisionRecorded.outcome` is no further action, signpost or early help: no assessment.
    DecisionWithoutAssessment,
    /// `AgencyCheckRequested.rag` is red.
    RagRed,
    /// `AgencyCheckRequested.rag` is amber.
    RagAmber,
    /// `AgencyCheckRequested.rag` is green.
    RagGreen,
    /// `EmergencyProtectionOrderMade.extended`.
    OrderExtended,
}

impl Condition {
    pub const ALL: [Condition; 8] = [
        Condition::Section47Decided,
        Condition::PlanMade,
        Condition::PlanContinues,
        Condition::DecisionWithoutAssessment,
        Condition::RagRed,
        Condition::RagAmber,
        Condition::RagGreen,
        Condition::OrderExtended,
    ];

    /// The name used in rule files, e.g. `section47_decided`.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Section47Decided => "section47_decided",
            Condition::PlanMade => "plan_made",
            Condition::PlanContinues => "plan_continues",
            Condition::DecisionWithoutAssessment => "decision_without_assessment",
            Condition::RagRed => "rag_red",
            Condition::RagAmber => "rag_amber",
            Condition::RagGreen => "rag_green",
            Condition::OrderExtended => "order_extended",
        }
    }

    /// The event type whose field the condition reads; a rule may only ask it of that event.
    pub fn event_type(self) -> &'static str {
        match self {
            Condition::Section47Decided => "StrategyDiscussionHeld",
            Condition::PlanMade => "InitialConferenceHeld",
            Condition::PlanContinues => "ReviewConferenceHeld",
            Condition::DecisionWithoutAssessment => "ReferralDecisionRecorded",
            Condition::RagRed | Condition::RagAmber | Condition::RagGreen => "AgencyCheckRequested",
            Condition::OrderExtended => "EmergencyProtectionOrderMade",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Condition {
    type Err = String;
    fn from_str(s: &str) -> Result<Condition, String> {
        Condition::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown condition {s:?} (expected one of: {})",
                    Condition::ALL.map(Condition::as_str).join(", ")
                )
            })
    }
}

/// The conditions an occurrence meets: a small set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Conditions(u16);

impl Conditions {
    pub fn insert(&mut self, c: Condition) {
        self.0 |= c.bit();
    }

    pub fn contains(self, c: Condition) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Condition> {
        Condition::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Condition> for Conditions {
    fn from_iter<I: IntoIterator<Item = Condition>>(iter: I) -> Conditions {
        let mut set = Conditions::default();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

/// How a rule's clock starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// An event of this type (meeting the rule's `start_when`, if any).
    Event(String),
    /// The end event that meets a clock of one of these rules (meeting `start_when`, if any): recurring
    /// reviews, where each review closes one clock and starts the next.
    After(Vec<String>),
}

/// An event that ends running clocks without meeting or breaching them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub event_type: String,
    pub when: Option<Condition>,
}

/// One row of the rule table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rule {
    /// Unique across every loaded file, e.g. `T01`.
    pub id: String,
    pub name: String,
    pub start: Start,
    /// A condition the starting event must meet.
    pub start_when: Option<Condition>,
    pub repeat: Repeat,
    /// The event type that meets the clock; `None` for an expiry rule, whose clock runs out instead.
    pub end: Option<String>,
    pub stops: Vec<Stop>,
    pub limit: u32,
    pub unit: Unit,
    pub scope: Scope,
    /// The statutory (or local) citation.
    pub source: String,
    /// The row rests on secondary sources or an interpretation; `note` says what to verify.
    pub check: bool,
    pub note: String,
    /// The row names an event type the catalogue lacks, and this says why; such a rule is loaded and
    /// evaluated, but no fact the projector builds can start it until the schema catches up.
    pub awaiting_catalogue: Option<String>,
    /// The file and the 1-based line of its `[[rule]]`, for people reading a deadline.
    pub file: String,
    pub line: usize,
}

impl Rule {
    /// Whether the clock expires at its limit instead of waiting for an end event.
    pub fn is_expiry(&self) -> bool {
        self.end.is_none()
    }

    /// The limit as a person reads it: `15 working days`.
    pub fn limit_text(&self) -> String {
        self.unit.amount(i64::from(self.limit))
    }

    /// When a clock of this rule started at `start_ms` falls due.
    pub fn due_at_ms(&self, calendar: &Calendar, start_ms: i64) -> i64 {
        due_at_ms(calendar, self.unit, self.limit, start_ms)
    }
}

/// When a clock of `limit` `unit`s started at `start_ms` falls due: the end of the due day for date-based
/// units, exactly `limit` hours later for hours. Never before `start_ms`.
pub fn due_at_ms(calendar: &Calendar, unit: Unit, limit: u32, start_ms: i64) -> i64 {
    let start = date_of_ms(start_ms);
    match unit {
        Unit::Hours => start_ms.saturating_add(i64::from(limit) * HOUR_MS),
        Unit::WorkingDays => end_of_day_ms(calendar.add_working_days(start, limit)),
        Unit::CalendarDays => end_of_day_ms(add_days(start, limit)),
        Unit::CalendarMonths => end_of_day_ms(add_months(start, limit)),
    }
    .max(start_ms)
}

/// A checked set of rules from one or more files, ids unique across them, all written for one calendar.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) versions: Vec<String>,
    pub(crate) calendar: String,
    pub(crate) rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Adds another file's rules (a local file beside the statutory one). Refused if an id is taken or the
    /// files were written for different calendars.
    pub fn merge(mut self, other: RuleSet) -> Result<RuleSet, TimescaleError> {
        let other_file = other.rules.first().map_or("", |r| r.file.as_str()).to_owned();
        if other.calendar != self.calendar {
            return Err(TimescaleError::whole_file(
                &other_file,
                format!(
                    "the rules are for the calendar {:?}, but the rules already loaded are for {:?}",
                    other.calendar, self.calendar
                ),
            ));
        }
        for rule in &other.rules {
            if let Some(first) = self.rules.iter().find(|r| r.id == rule.id) {
                return Err(TimescaleError {
                    file: rule.file.clone(),
                    line: rule.line,
                    column: 1,
                    reason: format!(
                        "rule id {:?} is already used by {}:{}",
                        rule.id, first.file, first.line
                    ),
                });
            }
        }
        self.versions.extend(other.versions);
        self.rules.extend(other.rules);
        Ok(self)
    }

    /// Each loaded file's `version`, in load order.
    pub fn versions(&self) -> &[String] {
        &self.versions
    }

    /// The id of the calendar the rules were written for.
    pub fn calendar_id(&self) -> &str {
        &self.calendar
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| r.id == id)
    }
}
