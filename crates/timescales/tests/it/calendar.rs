//! The working-day calendar: the shipped bank holidays are right, working-day arithmetic skips weekends and
//! bank holidays across Christmas, Easter and year ends, month arithmetic clamps at month end, and a broken
//! calendar file is rejected at its line (issue 8, must show 1).

use crate::common;

use common::{HOUR_MS, at, day, end_of};
use halcyon_timescales::calendar::{add_days, add_months, date_of_ms, end_of_day_ms};
use halcyon_timescales::{Calendar, TimescaleError, Unit, due_at_ms};
use time::{Date, Duration, Month, Weekday};

fn england() -> Calendar {
    Calendar::england_and_wales()
}

/// `date` + `n` working days, as a `"YYYY-MM-DD"` string.
fn plus_wd(date: &str, n: u32) -> String {
    england().add_working_days(day(date), n).to_string()
}

// ---------------------------------------------------------------------------------------------------------
// The data.

#[test]
fn the_shipped_calendar_covers_2024_to_2030_with_eight_bank_holidays_a_year() {
    let c = england();
    assert_eq!(c.id(), "england-and-wales");
    assert!(c.source().contains("gov.uk/bank-holidays"), "{}", c.source());
    assert_eq!(c.covered(), (day("2024-01-01"), day("2030-12-31")));
    for year in 2024..=2030 {
        let n = c.holidays().filter(|(d, _)| d.year() == year).count();
        assert_eq!(n, 8, "{year}");
    }
}

/// Easter Sunday by the anonymous Gregorian computus (Meeus/Jones/Butcher), independent of the data.
fn easter_sunday(y: i32) -> Date {
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let dd = (h + l - 7 * m + 114) % 31 + 1;
    Date::from_calendar_date(y, Month::try_from(month as u8).unwrap(), dd as u8).unwrap()
}

fn first_monday(y: i32, m: Month) -> Date {
    let mut d = Date::from_calendar_date(y, m, 1).unwrap();
    while d.weekday() != Weekday::Monday {
        d = d.next_day().unwrap();
    }
    d
}

fn last_monday(y: i32, m: Month) -> Date {
    let mut d = Date::from_calendar_date(y, m, time::util::days_in_month(m, y)).unwrap();
    while d.weekday() != Weekday::Monday {
        d = d.previous_day().unwrap();
    }
    d
}

/// The standing pattern of England and Wales bank holidays, with substitute days.
fn standing_pattern(y: i32) -> Vec<Date> {
    let mut days = Vec::new();
    let new_year = Date::from_calendar_date(y, Month::January, 1).unwrap();
    days.push(match new_year.weekday() {
        Weekday::Saturday => new_year + Duration::days(2),
        Weekday::Sunday => new_year + Duration::days(1),
        _ => new_year,
    });
    let easter = easter_sunday(y);
    days.push(easter - Duration::days(2));
    days.push(easter + Duration::days(1));
    days.push(first_monday(y, Month::May));
    days.push(last_monday(y, Month::May));
    days.push(last_monday(y, Month::August));
    let christmas = Date::from_calendar_date(y, Month::December, 25).unwrap();
    let (c, b) = match christmas.weekday() {
        Weekday::Friday => (christmas, christmas + Duration::days(3)),
        Weekday::Saturday => (christmas + Duration::days(2), christmas + Duration::days(3)),
        Weekday::Sunday => (christmas + Duration::days(2), christmas + Duration::days(1)),
        _ => (christmas, christmas + Duration::days(1)),
    };
    days.push(c);
    days.push(b);
    days.sort();
    days
}

#[test]
fn the_shipped_list_is_the_standing_pattern_with_easter_by_the_computus() {
    let c = england();
    for year in 2024..=2030 {
        let listed: Vec<Date> = c
            .holidays()
            .map(|(d, _)| d)
            .filter(|d| d.year() == year)
            .collect();
        assert_eq!(listed, standing_pattern(year), "bank holidays of {year}");
    }
}

#[test]
fn easter_dates_2024_to_2028() {
    let c = england();
    for (good_friday, easter_monday) in [
        ("2024-03-29", "2024-04-01"),
        ("2025-04-18", "2025-04-21"),
        ("2026-04-03", "2026-04-06"),
        ("2027-03-26", "2027-03-29"),
        ("2028-04-14", "2028-04-17"),
    ] {
        assert_eq!(c.holiday(day(good_friday)), Some("Good Friday"));
        assert_eq!(c.holiday(day(easter_monday)), Some("Easter Monday"));
    }
}

#[test]
fn substitute_days_and_the_may_bank_holidays() {
    let c = england();
    // Early May: the first Monday in May, never the 8th in these years.
    for d in [
        "2024-05-06",
        "2025-05-05",
        "2026-05-04",
        "2027-05-03",
        "2028-05-01",
    ] {
        assert_eq!(c.holiday(day(d)), Some("Early May bank holiday"), "{d}");
    }
    assert_eq!(c.holiday(day("2026-05-08")), None);
    assert!(c.is_working_day(day("2026-05-08")));
    // Summer: the last Monday in August.
    assert_eq!(c.holiday(day("2026-08-31")), Some("Summer bank holiday"));
    // Christmas and Boxing Day with their substitutes.
    let expected = [
        ("2024-12-25", "Christmas Day"),
        ("2024-12-26", "Boxing Day"),
        ("2025-12-25", "Christmas Day"),
        ("2025-12-26", "Boxing Day"),
        ("2026-12-25", "Christmas Day"),
        ("2026-12-28", "Boxing Day (substitute day)"),
        ("2027-12-27", "Christmas Day (substitute day)"),
        ("2027-12-28", "Boxing Day (substitute day)"),
        ("2028-12-25", "Christmas Day"),
        ("2028-12-26", "Boxing Day"),
        ("2027-01-01", "New Year's Day"),
        ("2028-01-03", "New Year's Day (substitute day)"),
    ];
    for (d, name) in expected {
        assert_eq!(c.holiday(day(d)), Some(name), "{d}");
    }
    // The weekend days themselves are not listed (they are not working days anyway).
    for d in ["2026-12-26", "2027-12-25", "2027-12-26", "2028-01-01"] {
        assert_eq!(c.holiday(day(d)), None, "{d}");
        assert!(!c.is_working_day(day(d)), "{d}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Working-day arithmetic. Day 0 is the day of the start; the first working day after it is day 1.

#[test]
fn weekends_are_skipped() {
    assert_eq!(plus_wd("2026-06-05", 1), "2026-06-08"); // Friday → Monday
    assert_eq!(plus_wd("2026-06-06", 1), "2026-06-08"); // a Saturday start: Monday is day 1
    assert_eq!(plus_wd("2026-06-07", 1), "2026-06-08"); // Sunday → Monday
    assert_eq!(plus_wd("2026-06-08", 5), "2026-06-15"); // Monday + 5 = next Monday
    assert_eq!(plus_wd("2026-06-06", 0), "2026-06-06"); // + 0 is the day itself, even a Saturday
    assert_eq!(plus_wd("2026-06-01", 10), "2026-06-15");
}

#[test]
fn a_referral_on_christmas_eve_2026_is_due_on_tuesday_29_december() {
    // 25th Christmas Day (Friday), 26th–27th the weekend, 28th the Boxing Day substitute.
    assert_eq!(plus_wd("2026-12-24", 1), "2026-12-29");
    assert_eq!(plus_wd("2026-12-24", 2), "2026-12-30");
    assert_eq!(plus_wd("2026-12-24", 3), "2026-12-31");
    assert_eq!(plus_wd("2026-12-24", 4), "2027-01-04"); // over New Year's Day (Friday) and the weekend
}

#[test]
fn friday_27_december_2024_plus_one_working_day_is_monday_30_december() {
    assert_eq!(plus_wd("2024-12-27", 1), "2024-12-30");
    assert_eq!(plus_wd("2024-12-27", 2), "2024-12-31");
    assert_eq!(plus_wd("2024-12-27", 3), "2025-01-02"); // over New Year's Day (Wednesday)
    assert_eq!(plus_wd("2024-12-24", 1), "2024-12-27"); // over Christmas (Wed) and Boxing Day (Thu)
}

#[test]
fn maundy_thursday_2026_plus_one_working_day_is_tuesday_7_april() {
    assert_eq!(plus_wd("2026-04-02", 1), "2026-04-07");
    assert_eq!(plus_wd("2026-04-02", 15), "2026-04-27");
    // And the other Easters.
    assert_eq!(plus_wd("2024-03-28", 1), "2024-04-02");
    assert_eq!(plus_wd("2027-03-25", 1), "2027-03-30");
    assert_eq!(plus_wd("2028-04-13", 1), "2028-04-18");
}

#[test]
fn forty_five_working_days_across_christmas() {
    assert_eq!(plus_wd("2026-11-02", 45), "2027-01-07");
    assert_eq!(plus_wd("2025-12-24", 45), "2026-03-02");
    assert_eq!(plus_wd("2024-11-15", 45), "2025-01-22");
    // The same as counting day by day.
    let c = england();
    let mut d = day("2026-11-02");
    let mut n = 0;
    while n < 45 {
        d = d.next_day().unwrap();
        if d.weekday() != Weekday::Saturday && d.weekday() != Weekday::Sunday && c.holiday(d).is_none() {
            n += 1;
        }
    }
    assert_eq!(d, day("2027-01-07"));
}

#[test]
fn year_ends() {
    // 2027: Christmas and Boxing Day on the weekend, both substituted.
    assert_eq!(plus_wd("2027-12-24", 1), "2027-12-29");
    // 2027 into 2028: New Year's Day on a Saturday, substituted on Monday 3 January.
    assert_eq!(plus_wd("2027-12-31", 1), "2028-01-04");
    // 2028 into 2029: New Year's Day on a Monday.
    assert_eq!(plus_wd("2028-12-22", 3), "2028-12-29");
    assert_eq!(plus_wd("2028-12-29", 1), "2029-01-02");
    // 2025 into 2026.
    assert_eq!(plus_wd("2025-12-31", 1), "2026-01-02");
}

#[test]
fn working_days_between_counts_after_the_first_date_up_to_the_second() {
    let c = england();
    assert_eq!(c.working_days_between(day("2026-12-24"), day("2026-12-29")), 1);
    assert_eq!(c.working_days_between(day("2026-12-24"), day("2026-12-28")), 0);
    assert_eq!(c.working_days_between(day("2026-12-29"), day("2026-12-24")), 0);
    assert_eq!(c.working_days_between(day("2026-11-02"), day("2027-01-07")), 45);
    assert_eq!(c.working_days_between(day("2026-06-05"), day("2026-06-05")), 0);
}

#[test]
fn beyond_the_covered_years_weekends_are_still_skipped_and_the_caller_can_tell() {
    let c = england();
    assert!(c.covers(day("2030-12-31")));
    assert!(!c.covers(day("2031-01-01")));
    assert!(!c.covers(day("2023-12-31")));
    // Christmas Day 2031 is a Thursday; the calendar cannot know it, so it counts as a working day.
    assert_eq!(c.add_working_days(day("2031-12-24"), 1), day("2031-12-25"));
    assert_eq!(c.add_working_days(day("2031-12-26"), 1), day("2031-12-29"));
}

// ---------------------------------------------------------------------------------------------------------
// Calendar months, days and hours.

#[test]
fn months_keep_the_day_clamped_at_month_end() {
    let cases = [
        ("2027-01-31", 1, "2027-02-28"),
        ("2028-01-31", 1, "2028-02-29"), // leap year
        ("2028-01-31", 2, "2028-03-31"), // counted from the start, not from the clamped 29th
        ("2028-02-29", 12, "2029-02-28"),
        ("2027-11-30", 3, "2028-02-29"),
        ("2027-08-31", 6, "2028-02-29"),
        ("2027-01-31", 3, "2027-04-30"),
        ("2026-11-15", 2, "2027-01-15"), // across a year end
        ("2026-12-31", 1, "2027-01-31"),
        ("2026-12-31", 6, "2027-06-30"),
        ("2026-05-10", 0, "2026-05-10"),
    ];
    for (from, n, to) in cases {
        assert_eq!(add_months(day(from), n).to_string(), to, "{from} + {n} months");
    }
}

#[test]
fn calendar_days_and_end_of_day() {
    assert_eq!(add_days(day("2026-12-28"), 8), day("2027-01-05"));
    assert_eq!(end_of_day_ms(day("2026-12-29")), at("2026-12-30", 0, 0) - 1);
    assert_eq!(date_of_ms(end_of("2026-12-29")), day("2026-12-29"));
    assert_eq!(date_of_ms(end_of("2026-12-29") + 1), day("2026-12-30"));
}

#[test]
fn each_unit_falls_due_as_documented() {
    let c = england();
    let start = at("2026-12-24", 16, 45);
    // Working days, calendar days and months: the end of the due day, 23:59:59.999 UTC.
    assert_eq!(due_at_ms(&c, Unit::WorkingDays, 1, start), end_of("2026-12-29"));
    assert_eq!(due_at_ms(&c, Unit::CalendarDays, 8, start), end_of("2027-01-01"));
    assert_eq!(
        due_at_ms(&c, Unit::CalendarMonths, 3, start),
        end_of("2027-03-24")
    );
    // Hours: exactly, to the millisecond, whatever the day (here across the clocks going forward on
    // 29 March 2026: UTC does not notice).
    let pp = at("2026-03-28", 22, 0) + 123;
    assert_eq!(due_at_ms(&c, Unit::Hours, 72, pp), pp + 72 * HOUR_MS);
    assert_eq!(due_at_ms(&c, Unit::Hours, 2, pp), at("2026-03-29", 0, 0) + 123);
}

// ---------------------------------------------------------------------------------------------------------
// A broken calendar file is rejected at its line.

const SMALL: &str = r#"id = "test"
name = "a test calendar"
source = "made up"
covers_from = 2026-01-01
covers_to = 2026-12-31
holidays = [
  { date = 2026-12-25, name = "Christmas Day" },
  { date = 2026-12-28, name = "Boxing Day (substitute day)" },
]
"#;

fn line_of(src: &str, needle: &str) -> usize {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the file"));
    src[..at].matches('\n').count() + 1
}

fn rejected(src: &str, at: &str, reason: &str) -> TimescaleError {
    let err = Calendar::from_toml(src, "cal.toml").unwrap_err();
    assert_eq!(err.file, "cal.toml");
    assert_eq!(err.line, line_of(src, at), "wrong line for {reason:?}: {err}");
    assert!(err.reason.contains(reason), "expected {reason:?} in: {err}");
    assert!(
        err.to_string().starts_with(&format!("cal.toml:{}:", err.line)),
        "{err}"
    );
    err
}

#[test]
fn a_small_calendar_loads() {
    let c = Calendar::from_toml(SMALL, "cal.toml").unwrap();
    assert_eq!(c.id(), "test");
    assert_eq!(c.holidays().count(), 2);
    assert!(!c.is_working_day(day("2026-12-28")));
}

#[test]
fn a_bank_holiday_on_a_weekend_is_rejected() {
    let src = SMALL.replace("2026-12-28", "2026-12-26");
    rejected(&src, "2026-12-26", "is a Saturday");
}

#[test]
fn a_date_listed_twice_is_rejected_naming_the_first() {
    let src = SMALL.replace("2026-12-28", "2026-12-25");
    let err = Calendar::from_toml(&src, "cal.toml").unwrap_err();
    assert_eq!(err.line, 8, "{err}");
    assert!(err.reason.contains("listed twice (first at line 7)"), "{err}");
}

#[test]
fn a_date_outside_the_covered_years_is_rejected() {
    let src = SMALL.replace("2026-12-28", "2027-12-28");
    rejected(&src, "2027-12-28", "outside the years this file covers");
}

#[test]
fn a_date_with_a_time_is_rejected() {
    let src = SMALL.replace("date = 2026-12-28", "date = 2026-12-28T09:00:00");
    rejected(&src, "2026-12-28T09", "must be a plain date");
}

#[test]
fn a_missing_name_is_rejected_at_its_entry() {
    let src = SMALL.replace(", name = \"Christmas Day\"", "");
    let err = Calendar::from_toml(&src, "cal.toml").unwrap_err();
    assert_eq!(err.line, line_of(&src, "2026-12-25"), "{err}");
    assert!(err.reason.contains("missing field `name`"), "{err}");
}

#[test]
fn an_unknown_field_and_a_backwards_range_are_rejected() {
    let src = SMALL.replace("source = ", "sauce = ");
    rejected(&src, "sauce", "unknown field `sauce`");
    let src = SMALL.replace("covers_to = 2026-12-31", "covers_to = 2025-12-31");
    rejected(&src, "covers_to", "is before `covers_from`");
}
