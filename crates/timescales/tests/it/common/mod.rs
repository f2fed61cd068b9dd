//! Helpers shared by the test files: times written as dates, facts written briefly.
#![allow(dead_code)] // each test file uses some of these

use halcyon_timescales::{Condition, Occurrence, calendar};
use time::{Date, Month};

pub const HOUR_MS: i64 = 3_600_000;
pub const MINUTE_MS: i64 = 60_000;

/// A date from `"2026-12-24"`.
pub fn day(s: &str) -> Date {
    let mut parts = s.split('-').map(|p| p.parse::<u32>().unwrap());
    let (y, m, d) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    Date::from_calendar_date(y as i32, Month::try_from(m as u8).unwrap(), d as u8).unwrap()
}

/// Unix milliseconds of `"2026-12-24"` at `hh:mm` UTC.
pub fn at(date: &str, hh: i64, mm: i64) -> i64 {
    calendar::start_of_day_ms(day(date)) + hh * HOUR_MS + mm * MINUTE_MS
}

/// The last millisecond of a day: when a date-based deadline falls due.
pub fn end_of(date: &str) -> i64 {
    calendar::end_of_day_ms(day(date))
}

/// A fact on the local authority's case `case-1`, with an event id made from its type and time.
pub fn fact(event_type: &str, at_ms: i64) -> Occurrence {
    Occurrence::new(
        format!("{event_type}@{at_ms}"),
        at_ms,
        event_type,
        "la-oxon",
        "case-1",
    )
}

/// The same, meeting a condition.
pub fn fact_when(event_type: &str, at_ms: i64, condition: Condition) -> Occurrence {
    fact(event_type, at_ms).with(condition)
}

/// The same, on another agency's case.
pub fn fact_by(agency: &str, case: &str, event_type: &str, at_ms: i64) -> Occurrence {
    Occurrence::new(
        format!("{event_type}@{at_ms}/{agency}"),
        at_ms,
        event_type,
        agency,
        case,
    )
}
