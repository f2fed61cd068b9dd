//! Evaluation: a child's facts and a moment in, every deadline out — open (and how long is left), met (and
//! how early), breached (and how late, and whether it was later met or stopped), stopped, or expired.
//!
//! `evaluate` is a pure function of its inputs: the same facts and `now_ms` give the same answer, in the
//! same order, every time. Facts after `now_ms` are ignored, so asking with a past `now_ms` answers "what did
//! the deadlines look like then", and a caller that was down simply asks again with a later `now_ms` and
//! sees the breaches it missed (each breach says when it began: [`Deadline::breached_at_ms`]).

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::TimescaleError;
use crate::calendar::{Calendar, HOUR_MS, add_months, date_of_ms};
use crate::lateness::{BreachEnd, Lateness, lateness};
use crate::occurrence::Occurrence;
use crate::rule::{Repeat, Rule, RuleSet, Scope, Start, Unit};

/// A calendar and the rules written for it, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Timescales {
    calendar: Calendar,
    rules: RuleSet,
    /// For each rule that starts after others, the indices of those others.
    after: Vec<Vec<usize>>,
}

impl Timescales {
    /// Pairs rules with their calendar; refused if the rules name a different calendar.
    pub fn new(calendar: Calendar, rules: RuleSet) -> Result<Timescales, TimescaleError> {
        if rules.calendar_id() != calendar.id() {
            let file = rules.rules().first().map_or("", |r| r.file.as_str());
            return Err(TimescaleError::whole_file(
                file,
                format!(
                    "the rules are written for the calendar {:?}, but the calendar loaded is {:?}",
                    rules.calendar_id(),
                    calendar.id()
                ),
            ));
        }
        let index = |id: &str| rules.rules().iter().position(|r| r.id == id);
        let after = rules
            .rules()
            .iter()
            .map(|rule| match &rule.start {
                Start::Event(_) => Vec::new(),
                Start::After(ids) => ids.iter().filter_map(|id| index(id)).collect(),
            })
            .collect();
        Ok(Timescales {
            calendar,
            rules,
            after,
        })
    }

    /// England's statutory rules on the England and Wales calendar, both from the shipped files.
    pub fn england() -> Timescales {
        match Timescales::new(Calendar::england_and_wales(), RuleSet::england()) {
            Ok(timescales) => timescales,
            Err(e) => panic!("the shipped timescales do not fit together: {e}"),
        }
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }
}

/// A reference to one of the facts that started, met or stopped a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactRef {
    pub event_id: String,
    pub at_ms: i64,
    pub event_type: String,
    pub agency_id: String,
    pub case_id: String,
}

impl FactRef {
    fn of(o: &Occurrence) -> FactRef {
        FactRef {
            event_id: o.event_id.clone(),
            at_ms: o.at_ms,
            event_type: o.event_type.clone(),
            agency_id: o.agency_id.clone(),
            case_id: o.case_id.clone(),
        }
    }
}

/// An amount of time, exactly and in the rule's unit.
///
/// The unit count answers "by how many units would the limit have to change": met `n` units early means
/// the deadline would still have been met with a limit `n` units shorter; late by `n` units means it
/// would have been met with a limit `n` units longer. So a referral decided on the Saturday after a
/// Friday due date is 1 working day late, and one decided on the due day is 0 working days early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Margin {
    /// Milliseconds, never negative.
    pub ms: i64,
    /// Whole units of `unit`, never negative.
    pub units: i64,
    pub unit: Unit,
}

/// `2 working days (1 d 12 h)` for date-based units; just the duration (`3 h 30 min`) for hours.
impl fmt::Display for Margin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unit == Unit::Hours {
            f.write_str(&duration_text(self.ms))
        } else {
            write!(f, "{} ({})", self.unit.amount(self.units), duration_text(self.ms))
        }
    }
}

/// Why a deadline stopped without being met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// One of the rule's stop events (the plan ended, the child left care, no assessment was needed).
    StopEvent,
    /// A further start of a `repeat = "restart"` rule replaced it.
    Superseded,
}

/// What became of a breached deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The end event came, late.
    MetLate(FactRef),
    /// A stop event (or a superseding start) came after the deadline had passed.
    Stopped(FactRef, StopReason),
}

/// Where a deadline stands at the moment asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not yet due, not yet met.
    Open { remaining: Margin },
    /// The end event came in time.
    Met { by: FactRef, early: Margin },
    /// The due time passed without the end event. `late` is measured to the resolution if there is one,
    /// else to the moment asked about.
    Breached {
        late: Margin,
        resolution: Option<Resolution>,
    },
    /// Stopped before it fell due: neither met nor breached.
    Stopped { by: FactRef, reason: StopReason },
    /// An expiry rule's clock ran out (T13: the emergency protection order lapsed). Not a failure.
    Expired,
}

/// One clock: a rule, the fact that started it, when it falls due, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    pub rule: Arc<Rule>,
    pub started_by: FactRef,
    /// The last millisecond on time: date-based deadlines fall due at 23:59:59.999 UTC of the due day.
    pub due_at_ms: i64,
    /// A working-day deadline that runs outside the calendar's covered years: bank holidays there are
    /// unknown, so the due date may be early.
    pub beyond_calendar: bool,
    pub status: Status,
    /// How late a breached deadline is, as a person counts it in the rule's unit (`2 days`, `1 working
    /// day`, `3 hours`; see [`lateness()`]), measured where `Status::Breached::late` is; `None` unless
    /// breached.
    pub lateness: Option<Lateness>,
}

impl Deadline {
    /// A stable key: the rule and the starting event. The same deadline has the same key in every
    /// evaluation, so a caller can record a breach once.
    pub fn key(&self) -> String {
        format!("{}/{}", self.rule.id, self.started_by.event_id)
    }

    pub fn is_open(&self) -> bool {
        matches!(self.status, Status::Open { .. })
    }

    pub fn is_breached(&self) -> bool {
        matches!(self.status, Status::Breached { .. })
    }

    /// The first millisecond of the breach, if the deadline is breached.
    pub fn breached_at_ms(&self) -> Option<i64> {
        self.is_breached().then(|| self.due_at_ms.saturating_add(1))
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = &self.rule;
        write!(
            f,
            "{} {} ({}), started by {} {} at {}, due {}: ",
            rule.id,
            rule.name,
            rule.limit_text(),
            self.started_by.event_type,
            self.started_by.event_id,
            format_ms(self.started_by.at_ms),
            format_ms(self.due_at_ms)
        )?;
        match &self.status {
            Status::Open { remaining } => write!(f, "open, {remaining} left")?,
            Status::Met { by, early } => write!(
                f,
                "met by {} at {}, {early} early",
                by.event_type,
                format_ms(by.at_ms)
            )?,
            Status::Breached { late, resolution } => {
                let end = BreachEnd::of(resolution.as_ref());
                match self.lateness {
                    Some(lateness) => write!(f, "breached, {}", lateness.phrase(end))?,
                    None => write!(f, "breached, {}", end.phrase(&late.to_string()))?,
                }
                match resolution {
                    None => {}
                    Some(Resolution::MetLate(by)) | Some(Resolution::Stopped(by, _)) => {
                        write!(f, " by {} at {}", by.event_type, format_ms(by.at_ms))?;
                    }
                }
            }
            Status::Stopped { by, reason } => {
                write!(
                    f,
                    "{} by {} at {}",
                    stop_word(*reason),
                    by.event_type,
                    format_ms(by.at_ms)
                )?;
            }
            Status::Expired => f.write_str("expired")?,
        }
        if self.beyond_calendar {
            f.write_str(" [beyond the bank-holiday calendar]")?;
        }
        Ok(())
    }
}

fn stop_word(reason: StopReason) -> &'static str {
    match reason {
        StopReason::StopEvent => "stopped",
        StopReason::Superseded => "superseded",
    }
}

/// Every deadline for one child at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub now_ms: i64,
    /// In the order their clocks started (the facts' time order, then rule order).
    pub deadlines: Vec<Deadline>,
}

impl Evaluation {
    pub fn open(&self) -> impl Iterator<Item = &Deadline> {
        self.deadlines.iter().filter(|d| d.is_open())
    }

    pub fn breached(&self) -> impl Iterator<Item = &Deadline> {
        self.deadlines.iter().filter(|d| d.is_breached())
    }

    /// The earliest moment at which, with no new facts, the answer would change (an open deadline
    /// breaches or expires): when a caller's timer should ask again.
    pub fn next_change_ms(&self) -> Option<i64> {
        self.open().map(|d| d.due_at_ms.saturating_add(1)).min()
    }

    /// The deadlines of one rule.
    pub fn of_rule(&self, id: &str) -> impl Iterator<Item = &Deadline> + use<'_> {
        let id = id.to_owned();
        self.deadlines.iter().filter(move |d| d.rule.id == id)
    }
}

/// How a running clock ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Met,
    Stopped(StopReason),
}

#[derive(Debug)]
struct Clock {
    rule: usize,
    /// Index into the facts.
    start: usize,
    end: Option<(usize, End)>,
}

/// Whether `later` belongs to the clock `start` started (for end and stop events).
fn in_scope(scope: Scope, start: &Occurrence, later: &Occurrence) -> bool {
    match scope {
        Scope::Child => true,
        Scope::Case => start.agency_id == later.agency_id && start.case_id == later.case_id,
        Scope::Counterpart => {
            start.counterpart_agency_id.as_deref() == Some(later.agency_id.as_str())
                && later
                    .counterpart_agency_id
                    .as_deref()
                    .is_none_or(|c| c == start.agency_id)
        }
    }
}

/// Whether two starts are in the same scope (for `repeat = "restart"`).
fn same_start_scope(scope: Scope, a: &Occurrence, b: &Occurrence) -> bool {
    match scope {
        Scope::Child => true,
        Scope::Case => a.agency_id == b.agency_id && a.case_id == b.case_id,
        Scope::Counterpart => {
            a.agency_id == b.agency_id && a.counterpart_agency_id == b.counterpart_agency_id
        }
    }
}

/// Every deadline the rules derive from `facts` (one child's, in time order; ties keep their order) as
/// they stand at `now_ms`. Facts after `now_ms` are ignored; facts with an event type no rule names are
/// skipped. Pure and total: no clock, no I/O, no panics.
///
/// For each fact, in order: it meets the oldest running clock in scope of each rule whose `end` it is;
/// it stops the running clocks in scope of each rule that lists it under `stop`; then it starts a clock of
/// each rule whose `start` it is (or, for `start_after` rules, whose predecessor it just met), if it meets
/// `start_when` — replacing the running one for `repeat = "restart"` rules.
pub fn evaluate(timescales: &Timescales, facts: &[Occurrence], now_ms: i64) -> Evaluation {
    let rules = timescales.rules.rules();
    let mut order: Vec<usize> = (0..facts.len()).filter(|&i| facts[i].at_ms <= now_ms).collect();
    order.sort_by_key(|&i| facts[i].at_ms); // stable: ties keep the caller's order

    let mut clocks: Vec<Clock> = Vec::new();
    let mut met_now: Vec<usize> = Vec::new();
    for &i in &order {
        let fact = &facts[i];
        met_now.clear();
        for (r, rule) in rules.iter().enumerate() {
            if rule.end.as_deref() != Some(fact.event_type.as_str()) {
                continue;
            }
            if let Some(clock) = clocks
                .iter_mut()
                .find(|c| c.rule == r && c.end.is_none() && in_scope(rule.scope, &facts[c.start], fact))
            {
                clock.end = Some((i, End::Met));
                met_now.push(r);
            }
        }
        for (r, rule) in rules.iter().enumerate() {
            let stops = rule.stops.iter().any(|s| {
                s.event_type == fact.event_type && s.when.is_none_or(|w| fact.conditions.contains(w))
            });
            if !stops {
                continue;
            }
            for clock in clocks
                .iter_mut()
                .filter(|c| c.rule == r && c.end.is_none() && in_scope(rule.scope, &facts[c.start], fact))
            {
                clock.end = Some((i, End::Stopped(StopReason::StopEvent)));
            }
        }
        for (r, rule) in rules.iter().enumerate() {
            let starts = match &rule.start {
                Start::Event(event_type) => *event_type == fact.event_type,
                Start::After(_) => timescales.after[r].iter().any(|p| met_now.contains(p)),
            };
            if !starts || rule.start_when.is_some_and(|w| !fact.conditions.contains(w)) {
                continue;
            }
            if rule.repeat == Repeat::Restart {
                for clock in clocks.iter_mut().filter(|c| {
                    c.rule == r && c.end.is_none() && same_start_scope(rule.scope, &facts[c.start], fact)
                }) {
                    clock.end = Some((i, End::Stopped(StopReason::Superseded)));
                }
            }
            clocks.push(Clock {
                rule: r,
                start: i,
                end: None,
            });
        }
    }

    let deadlines = clocks
        .iter()
        .map(|clock| deadline(timescales, clock, facts, now_ms))
        .collect();
    Evaluation { now_ms, deadlines }
}

fn deadline(timescales: &Timescales, clock: &Clock, facts: &[Occurrence], now_ms: i64) -> Deadline {
    let calendar = &timescales.calendar;
    let rule = &timescales.rules.rules()[clock.rule];
    let start = &facts[clock.start];
    let due_at_ms = rule.due_at_ms(calendar, start.at_ms);
    let measure = Measure {
        calendar,
        rule,
        start_ms: start.at_ms,
        due_ms: due_at_ms,
    };
    let status = match clock.end {
        None if now_ms <= due_at_ms => Status::Open {
            remaining: measure.early(now_ms),
        },
        None if rule.is_expiry() => Status::Expired,
        None => Status::Breached {
            late: measure.late(now_ms),
            resolution: None,
        },
        Some((i, End::Met)) => {
            let by = &facts[i];
            if by.at_ms <= due_at_ms {
                Status::Met {
                    by: FactRef::of(by),
                    early: measure.early(by.at_ms),
                }
            } else {
                Status::Breached {
                    late: measure.late(by.at_ms),
                    resolution: Some(Resolution::MetLate(FactRef::of(by))),
                }
            }
        }
        Some((i, End::Stopped(reason))) => {
            let by = &facts[i];
            if by.at_ms <= due_at_ms {
                Status::Stopped {
                    by: FactRef::of(by),
                    reason,
                }
            } else if rule.is_expiry() {
                Status::Expired
            } else {
                Status::Breached {
                    late: measure.late(by.at_ms),
                    resolution: Some(Resolution::Stopped(FactRef::of(by), reason)),
                }
            }
        }
    };
    let beyond_calendar = rule.unit == Unit::WorkingDays
        && !(calendar.covers(date_of_ms(start.at_ms)) && calendar.covers(date_of_ms(due_at_ms)));
    let lateness = match &status {
        Status::Breached { late, .. } => {
            lateness(calendar, rule.unit, due_at_ms, due_at_ms.saturating_add(late.ms))
        }
        _ => None,
    };
    Deadline {
        rule: Arc::clone(rule),
        started_by: FactRef::of(start),
        due_at_ms,
        beyond_calendar,
        status,
        lateness,
    }
}

/// Measures margins for one clock (see [`Margin`] for what the unit count means).
struct Measure<'a> {
    calendar: &'a Calendar,
    rule: &'a Rule,
    start_ms: i64,
    due_ms: i64,
}

impl Measure<'_> {
    /// How early `t_ms` (at or before the due time) is.
    fn early(&self, t_ms: i64) -> Margin {
        let ms = (self.due_ms - t_ms).max(0);
        let limit = i64::from(self.rule.limit);
        let units = match self.rule.unit {
            Unit::Hours => (ms / HOUR_MS).min(limit),
            _ => (limit - self.limit_needed(t_ms)).max(0),
        };
        Margin {
            ms,
            units,
            unit: self.rule.unit,
        }
    }

    /// How late `t_ms` (after the due time) is.
    fn late(&self, t_ms: i64) -> Margin {
        let ms = t_ms.saturating_sub(self.due_ms).max(0);
        let units = match self.rule.unit {
            Unit::Hours => ms / HOUR_MS + i64::from(ms % HOUR_MS != 0), // rounded up
            _ => (self.limit_needed(t_ms) - i64::from(self.rule.limit)).max(1),
        };
        Margin {
            ms,
            units,
            unit: self.rule.unit,
        }
    }

    /// For date-based units: the smallest limit `k >= 0` whose deadline `t_ms` would meet.
    fn limit_needed(&self, t_ms: i64) -> i64 {
        let start = date_of_ms(self.start_ms);
        let t = date_of_ms(t_ms);
        if t <= start {
            return 0;
        }
        match self.rule.unit {
            Unit::WorkingDays => {
                i64::from(self.calendar.working_days_between(start, t))
                    + i64::from(!self.calendar.is_working_day(t))
            }
            Unit::CalendarDays => (t - start).whole_days(),
            Unit::CalendarMonths => {
                let diff = (i64::from(t.year()) - i64::from(start.year())) * 12
                    + i64::from(u8::from(t.month()))
                    - i64::from(u8::from(start.month()));
                let months =
                    |k: i64| add_months(start, u32::try_from(k.clamp(0, i64::from(u32::MAX))).unwrap_or(0));
                let mut k = diff.max(0);
                while k > 0 && months(k - 1) >= t {
                    k -= 1;
                }
                while months(k) < t && k < 12 * 20_000 {
                    k += 1;
                }
                k
            }
            Unit::Hours => 0, // hours are measured in milliseconds, not here
        }
    }
}

/// `2026-12-29T23:59:59.999Z`.
pub fn format_ms(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// `2 d 3 h 10 min`, `45 s`.
fn duration_text(ms: i64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d} d"));
    }
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if parts.is_empty() {
        parts.push(format!("{} s", s % 60));
    }
    parts.join(" ")
}
