//! The working-day calendar and the date arithmetic every timescale is counted in: working days (Monday to
//! Friday minus the bank holidays in a data file), calendar days, calendar months (clamped at month end)
//! and hours, all on UTC days.
//!
//! Conventions, in one place:
//! - **Day 0 is the day of the start.** Adding `n` working days to a date gives the `n`th working day after
//!   it: a referral on Thursday 24 December 2026 plus 1 working day is Tuesday 29 December (25th Christmas,
//!   26th and 27th the weekend, 28th the Boxing Day substitute). A start on a weekend or bank holiday counts
//!   the same way: the first working day after it is day 1. Adding 0 gives the date itself.
//! - **Date-based deadlines fall due at the end of the due day**, 23:59:59.999 UTC; hour deadlines fall due
//!   exactly `n` hours after the start, to the millisecond.
//! - **Days are UTC days.** An event at 00:30 BST (23:30 UTC) belongs to the previous day. A configurable
//!   time zone (Europe/London) is not built yet.
//! - **Calendar months keep the day of the month, clamped** to the last day of a shorter month, always
//!   counted from the start date: 31 January + 1 month is 28 February (29th in a leap year), and 31 January
//!   + 2 months is 31 March, not 28 March.
//! - **Past the calendar's covered years** the arithmetic still skips weekends but cannot know the bank
//!   holidays; [`Calendar::covers`] tells the caller, and deadlines carry `beyond_calendar`.
//!
//! Every function here is total: dates saturate at the ends of the `time` crate's range instead of
//! panicking, so no input can bring a caller down.

use std::collections::BTreeMap;

use time::{Date, Month, Weekday};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
/// The Julian day number of 1970-01-01, the Unix epoch.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// The shipped England and Wales calendar, compiled in.
pub const ENGLAND_AND_WALES_TOML: &str =
    include_str!("../../../deploy/timescales/bank-holidays-england-and-wales.toml");
/// The shipped calendar's path, as used in error messages.
pub const ENGLAND_AND_WALES_FILE: &str = "deploy/timescales/bank-holidays-england-and-wales.toml";

/// A working-day calendar: Monday to Friday, minus a list of bank holidays known for a range of dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// Names the calendar; a rule file says which calendar it was written for.
    pub(crate) id: String,
    pub(crate) name: String,
    /// Where the dates come from.
    pub(crate) source: String,
    /// The first and last dates whose bank holidays the list is complete for.
    pub(crate) covers_from: Date,
    pub(crate) covers_to: Date,
    /// Every bank holiday, all on weekdays (the loader refuses weekend dates), with its name.
    pub(crate) holidays: BTreeMap<Date, String>,
}

impl Calendar {
    /// The calendar's id, e.g. `england-and-wales`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first and last dates the bank-holiday list is complete for.
    pub fn covered(&self) -> (Date, Date) {
        (self.covers_from, self.covers_to)
    }

    /// Whether the bank holidays of `date` are known.
    pub fn covers(&self, date: Date) -> bool {
        (self.covers_from..=self.covers_to).contains(&date)
    }

    /// The bank holiday's name, if `date` is one.
    pub fn holiday(&self, date: Date) -> Option<&str> {
        self.holidays.get(&date).map(String::as_str)
    }

    /// Every bank holiday, in date order.
    pub fn holidays(&self) -> impl Iterator<Item = (Date, &str)> + '_ {
        self.holidays.iter().map(|(d, n)| (*d, n.as_str()))
    }

    /// Monday to Friday and not a bank holiday.
    pub fn is_working_day(&self, date: Date) -> bool {
        is_weekday(date) && !self.holidays.contains_key(&date)
    }

    /// The `n`th working day after `date` (`date` itself is day 0; see the module's conventions). Adding 0
    /// gives `date` unchanged, even if it is not a working day.
    pub fn add_working_days(&self, date: Date, n: u32) -> Date {
        let mut at = date;
        let mut left = i64::from(n);
        // Jump over whole weeks, then take as many more weekdays as the holidays jumped over cost.
        while left > 0 {
            let next = add_weekdays(at, left);
            if next == at {
                return at; // saturated at the end of the date range
            }
            left = self.holidays_in(at, next) as i64;
            at = next;
        }
        at
    }

    /// The working days `d` with `from < d <= to`; 0 when `to <= from`. So
    /// `add_working_days(from, working_days_between(from, to)) <= to`, with equality when `to` is a
    /// working day.
    pub fn working_days_between(&self, from: Date, to: Date) -> u32 {
        if to <= from {
            return 0;
        }
        let weekdays = weekdays_before(julian(to) + 1) - weekdays_before(julian(from) + 1);
        let n = weekdays - self.holidays_in(from, to) as i64;
        u32::try_from(n.max(0)).unwrap_or(u32::MAX)
    }

    /// How many bank holidays fall in `(from, to]`.
    fn holidays_in(&self, from: Date, to: Date) -> usize {
        if to <= from {
            return 0;
        }
        self.holidays
            .range((std::ops::Bound::Excluded(from), std::ops::Bound::Included(to)))
            .count()
    }
}

/// Monday to Friday.
pub fn is_weekday(date: Date) -> bool {
    !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
}

/// The UTC date of a Unix time in milliseconds (saturating at the ends of the date range).
pub fn date_of_ms(ms: i64) -> Date {
    from_julian(UNIX_EPOCH_JULIAN_DAY + ms.div_euclid(DAY_MS))
}

/// The first millisecond (00:00:00.000 UTC) of `date`.
pub fn start_of_day_ms(date: Date) -> i64 {
    (julian(date) - UNIX_EPOCH_JULIAN_DAY) * DAY_MS
}

/// The last millisecond (23:59:59.999 UTC) of `date`: when a date-based deadline falls due.
pub fn end_of_day_ms(date: Date) -> i64 {
    start_of_day_ms(date) + DAY_MS - 1
}

/// `date` plus `n` calendar days (saturating).
pub fn add_days(date: Date, n: u32) -> Date {
    from_julian(julian(date) + i64::from(n))
}

/// The same day of the month `n` months after `date`, clamped to that month's last day: 31 January + 1 is
/// 28 February (29th in a leap year). Saturates at the end of the date range.
pub fn add_months(date: Date, n: u32) -> Date {
    let month0 = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1 + i64::from(n);
    let year = month0.div_euclid(12);
    let Ok(year) = i32::try_from(year) else {
        return Date::MAX;
    };
    let month = Month::try_from((month0.rem_euclid(12) + 1) as u8).unwrap_or(Month::December);
    let day = date.day().min(time::util::days_in_month(month, year));
    Date::from_calendar_date(year, month, day).unwrap_or(Date::MAX)
}

/// The Julian day number of `date`.
fn julian(date: Date) -> i64 {
    i64::from(date.to_julian_day())
}

fn from_julian(jd: i64) -> Date {
    let min = julian(Date::MIN);
    let max = julian(Date::MAX);
    let jd = i32::try_from(jd.clamp(min, max)).unwrap_or(0);
    Date::from_julian_day(jd).unwrap_or(Date::MAX)
}

/// The weekdays among Julian days `[0, jd)`. Julian day 0 is a Monday.
fn weekdays_before(jd: i64) -> i64 {
    jd.div_euclid(7) * 5 + jd.rem_euclid(7).min(5)
}

/// The `k`th weekday after `date` (`k >= 1`), ignoring bank holidays.
fn add_weekdays(date: Date, k: i64) -> Date {
    // The t-th weekday counted from Julian day 0 (1-based) is at 7q + r, where t - 1 = 5q + r.
    let t = weekdays_before(julian(date) + 1) + k;
    let q = (t - 1).div_euclid(5);
    let r = (t - 1).rem_euclid(5);
    from_julian(q * 7 + r)
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn julian_day_zero_is_a_monday_and_the_epoch_a_thursday() {
        assert_eq!(from_julian(0).weekday(), Weekday::Monday);
        assert_eq!(date_of_ms(0), date!(1970 - 01 - 01));
        assert_eq!(date_of_ms(-1), date!(1969 - 12 - 31));
        assert_eq!(end_of_day_ms(date!(1970 - 01 - 01)), DAY_MS - 1);
    }

    #[test]
    fn weekday_arithmetic_matches_a_day_by_day_walk() {
        let mut start = date!(2023 - 12 - 20);
        for _ in 0..21 {
            for k in 1..30 {
                let mut d = start;
                let mut n = 0;
                while n < k {
                    d = d.next_day().unwrap();
                    if is_weekday(d) {
                        n += 1;
                    }
                }
                assert_eq!(add_weekdays(start, k), d, "{start} + {k} weekdays");
            }
            start = start.next_day().unwrap();
        }
    }

    #[test]
    fn arithmetic_saturates_at_the_ends_of_the_date_range() {
        assert_eq!(add_days(Date::MAX, 10), Date::MAX);
        assert_eq!(add_months(Date::MAX, 1), Date::MAX);
        assert_eq!(date_of_ms(i64::MAX), Date::MAX);
        assert_eq!(date_of_ms(i64::MIN), Date::MIN);
        let calendar = Calendar::england_and_wales();
        assert!(calendar.add_working_days(Date::MAX, 3) <= Date::MAX);
    }
}
