//! How late a deadline is, in words a person reads correctly: "Met 2 days late", "Stopped 1 working day
//! late", "Overdue by 3 hours". One count ([`lateness()`]) and one wording ([`Lateness`], [`BreachEnd`]) for
//! every caller that shows a breach (`halcyon deadlines`, the node's `DeadlineBreach.late`, `halcyon audit
//! review`, the chronology), so the same breach reads the same everywhere.
//!
//! How each unit is counted, as a person counts it against the rule:
//! - **Calendar days and calendar months** are late by calendar days: the days from the due date to the
//!   date it was met (or to today, while overdue). Part of a day counts as a day: due on 10 March and met
//!   at 01:00 on 12 March is 2 days late. A calendar-month rule is never "1 calendar month late": a month
//!   late reads as the days it is (31 days).
//! - **Working days** are late by the working days after the due date, up to and including the day it was
//!   met; weekends and bank holidays are not counted, and a day that is not a working day counts as the
//!   working day after it. Due on a Friday and met on the Saturday or the Monday is 1 working day late.
//! - **Hours** are late by the hours and minutes after the due time, part of a minute counting as a minute:
//!   `40 minutes`, `5 hours`, `5 hours 40 minutes`. Hour rules stay in hours however late (`27 hours`).
//!
//! Date-based deadlines fall due at the end of the due day (23:59:59.999 UTC), so any moment after it is
//! on a later date and at least 1 day late; an hour deadline can be met the same day, hours after its due
//! time. A moment at or before the due time is not late at all ([`lateness()`] gives `None`).
//!
//! ```
//! use halcyon_timescales::{BreachEnd, Calendar, Unit, calendar, lateness};
//! use time::macros::date;
//!
//! let due = calendar::end_of_day_ms(date!(2026 - 03 - 10)); // a calendar-month rule due 10 March
//! let met = calendar::start_of_day_ms(date!(2026 - 03 - 12)) + calendar::HOUR_MS; // 01:00 on 12 March
//! let late = lateness(&Calendar::england_and_wales(), Unit::CalendarMonths, due, met).unwrap();
//! assert_eq!(late.to_string(), "2 days");
//! assert_eq!(late.sentence(BreachEnd::Met), "Met 2 days late");
//! ```

use std::fmt;

use crate::calendar::{Calendar, date_of_ms};
use crate::deadline::{Resolution, StopReason};
use crate::rule::Unit;

/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;

/// How late a deadline is, counted in the rule's unit as a person counts it (see the module). Its
/// `Display` is the amount alone: `2 days`, `1 working day`, `5 hours 40 minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lateness {
    /// Calendar days past the due date (calendar-day and calendar-month rules), at least 1.
    Days(i64),
    /// Working days past the due date, on the bank-holiday calendar (working-day rules), at least 1.
    WorkingDays(i64),
    /// Minutes past the due time, part of a minute counting as one (hour rules), at least 1.
    Minutes(i64),
}

/// How late a deadline of `unit` that fell due at `due_at_ms` is at `at_ms` (the fact that met or stopped
/// it, or the moment asked about while it is still open); `None` if `at_ms` is at or before the due time.
/// Working days are counted on `calendar`. Pure and total.
pub fn lateness(calendar: &Calendar, unit: Unit, due_at_ms: i64, at_ms: i64) -> Option<Lateness> {
    if at_ms <= due_at_ms {
        return None;
    }
    let (due, at) = (date_of_ms(due_at_ms), date_of_ms(at_ms));
    Some(match unit {
        Unit::CalendarDays | Unit::CalendarMonths => Lateness::Days((at - due).whole_days().max(1)),
        Unit::WorkingDays => Lateness::WorkingDays(
            (i64::from(calendar.working_days_between(due, at)) + i64::from(!calendar.is_working_day(at)))
                .max(1),
        ),
        Unit::Hours => {
            let ms = at_ms.saturating_sub(due_at_ms);
            Lateness::Minutes((ms / MINUTE_MS + i64::from(ms % MINUTE_MS != 0)).max(1))
        }
    })
}

impl Lateness {
    /// `met 2 days late`, `stopped 1 working day late`, `overdue by 3 hours`: a clause for the middle of a
    /// line.
    pub fn phrase(self, end: BreachEnd) -> String {
        end.phrase(&self.to_string())
    }

    /// `Met 2 days late`, `Stopped 1 working day late`, `Overdue by 3 hours`: the phrase as a sentence.
    pub fn sentence(self, end: BreachEnd) -> String {
        let phrase = self.phrase(end);
        let mut chars = phrase.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => phrase,
        }
    }
}

/// `2 days`, `1 working day`, `40 minutes`, `5 hours`, `5 hours 40 minutes`.
impl fmt::Display for Lateness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Lateness::Days(n) => f.write_str(&counted(n, "day", "days")),
            Lateness::WorkingDays(n) => f.write_str(&counted(n, "working day", "working days")),
            Lateness::Minutes(total) => {
                let (hours, minutes) = (total / 60, total % 60);
                match (hours, minutes) {
                    (0, m) => f.write_str(&counted(m, "minute", "minutes")),
                    (h, 0) => f.write_str(&counted(h, "hour", "hours")),
                    (h, m) => write!(
                        f,
                        "{} {}",
                        counted(h, "hour", "hours"),
                        counted(m, "minute", "minutes")
                    ),
                }
            }
        }
    }
}

fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Where a breached deadline stands: still open (overdue), or closed late by its end event, by a stop
/// event, or by a further start of a restarting rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreachEnd {
    /// No end event yet: overdue.
    StillOpen,
    /// The end event came, late.
    Met,
    /// A stop event came after the deadline had passed.
    Stopped,
    /// A further start of a `repeat = "restart"` rule replaced it after it had passed.
    Superseded,
}

impl BreachEnd {
    /// From an evaluated breach's resolution (`None`: still open).
    pub fn of(resolution: Option<&Resolution>) -> BreachEnd {
        match resolution {
            None => BreachEnd::StillOpen,
            Some(Resolution::MetLate(_)) => BreachEnd::Met,
            Some(Resolution::Stopped(_, StopReason::StopEvent)) => BreachEnd::Stopped,
            Some(Resolution::Stopped(_, StopReason::Superseded)) => BreachEnd::Superseded,
        }
    }

    /// The clause around an amount already in words (`2 days`, as [`Lateness`] shows it, or as a node sent
    /// it in `DeadlineBreach.late`): `met 2 days late`, `overdue by 2 days`.
    pub fn phrase(self, amount: &str) -> String {
        match self {
            BreachEnd::StillOpen => format!("overdue by {amount}"),
            BreachEnd::Met => format!("met {amount} late"),
            BreachEnd::Stopped => format!("stopped {amount} late"),
            BreachEnd::Superseded => format!("superseded {amount} late"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each test is a deadline as a person would describe it, and the words it must read as. The expected
    //! words are counted by hand on a 2026 calendar: Monday 2 March, Friday 6 March, Tuesday 10 March;
    //! Good Friday 3 April and Easter Monday 6 April are bank holidays.

    use time::macros::datetime;
    use time::{OffsetDateTime, PrimitiveDateTime};

    use super::*;
    use crate::rule::due_at_ms;

    fn ms(t: PrimitiveDateTime) -> i64 {
        let t: OffsetDateTime = t.assume_utc();
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
    }

    /// The words for a clock of `limit` `unit`s started at `start`, ended `end`-wise at `at`.
    fn reads(
        unit: Unit,
        limit: u32,
        start: PrimitiveDateTime,
        at: PrimitiveDateTime,
        end: BreachEnd,
    ) -> String {
        let calendar = Calendar::england_and_wales();
        let due = due_at_ms(&calendar, unit, limit, ms(start));
        lateness(&calendar, unit, due, ms(at))
            .map_or_else(|| "not late".to_owned(), |late| late.sentence(end))
    }

    // Calendar months: late by calendar days, never by "1 calendar month".

    #[test]
    fn a_calendar_month_rule_met_two_days_after_its_due_date_reads_met_2_days_late() {
        // One calendar month from 10 February falls due at the end of 10 March; met at 01:00 on 12 March.
        let read = reads(
            Unit::CalendarMonths,
            1,
            datetime!(2026-02-10 10:00),
            datetime!(2026-03-12 01:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 2 days late");
    }

    #[test]
    fn a_calendar_month_rule_met_just_after_midnight_on_the_day_after_reads_met_1_day_late() {
        let read = reads(
            Unit::CalendarMonths,
            1,
            datetime!(2026-02-10 10:00),
            datetime!(2026-03-11 00:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 1 day late");
    }

    #[test]
    fn a_calendar_month_rule_met_in_the_last_millisecond_of_its_due_date_is_not_late() {
        let read = reads(
            Unit::CalendarMonths,
            1,
            datetime!(2026-02-10 10:00),
            datetime!(2026-03-10 23:59:59.999),
            BreachEnd::Met,
        );
        assert_eq!(read, "not late");
    }

    #[test]
    fn a_calendar_month_rule_from_31_january_falls_due_on_28_february_so_met_on_2_march_reads_met_2_days_late()
     {
        // 2026 is no leap year: 31 January + 1 month is clamped to 28 February; 1 and 2 March are late.
        let read = reads(
            Unit::CalendarMonths,
            1,
            datetime!(2026-01-31 09:00),
            datetime!(2026-03-02 09:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 2 days late");
    }

    #[test]
    fn in_a_leap_year_the_same_rule_falls_due_on_29_february_so_met_on_2_march_reads_met_2_days_late() {
        // 2028 is a leap year: 31 January + 1 month is 29 February; 1 and 2 March are late.
        let read = reads(
            Unit::CalendarMonths,
            1,
            datetime!(2028-01-31 09:00),
            datetime!(2028-03-02 09:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 2 days late");
    }

    #[test]
    fn a_six_month_review_a_month_overdue_reads_in_days_not_months() {
        // 31 August 2026 + 6 months is clamped to 28 February 2027; on 31 March 2027 it is 31 days overdue.
        let read = reads(
            Unit::CalendarMonths,
            6,
            datetime!(2026-08-31 12:00),
            datetime!(2027-03-31 12:00),
            BreachEnd::StillOpen,
        );
        assert_eq!(read, "Overdue by 31 days");
    }

    // Calendar days.

    #[test]
    fn an_eight_day_rule_still_open_three_days_after_its_due_date_reads_overdue_by_3_days() {
        // 2 March + 8 days is 10 March; on the afternoon of 13 March: the 11th, 12th and 13th.
        let read = reads(
            Unit::CalendarDays,
            8,
            datetime!(2026-03-02 10:00),
            datetime!(2026-03-13 15:00),
            BreachEnd::StillOpen,
        );
        assert_eq!(read, "Overdue by 3 days");
    }

    #[test]
    fn a_calendar_day_rule_stopped_at_one_in_the_morning_after_its_due_date_reads_stopped_1_day_late() {
        // Part of a day counts as a day: one hour into 11 March is 1 day late.
        let read = reads(
            Unit::CalendarDays,
            8,
            datetime!(2026-03-02 10:00),
            datetime!(2026-03-11 01:00),
            BreachEnd::Stopped,
        );
        assert_eq!(read, "Stopped 1 day late");
    }

    // Working days: weekends and bank holidays are not counted.

    #[test]
    fn a_one_working_day_rule_due_friday_and_met_monday_reads_met_1_working_day_late() {
        // Started Thursday 5 March, due Friday 6 March; Saturday and Sunday are not working days.
        let read = reads(
            Unit::WorkingDays,
            1,
            datetime!(2026-03-05 10:00),
            datetime!(2026-03-09 10:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 1 working day late");
    }

    #[test]
    fn a_one_working_day_rule_due_friday_and_met_on_saturday_also_reads_met_1_working_day_late() {
        // A Saturday counts as the working day after it, Monday.
        let read = reads(
            Unit::WorkingDays,
            1,
            datetime!(2026-03-05 10:00),
            datetime!(2026-03-07 11:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 1 working day late");
    }

    #[test]
    fn a_one_working_day_rule_due_friday_and_met_wednesday_reads_met_3_working_days_late() {
        // Monday 9, Tuesday 10 and Wednesday 11 March.
        let read = reads(
            Unit::WorkingDays,
            1,
            datetime!(2026-03-05 10:00),
            datetime!(2026-03-11 16:30),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 3 working days late");
    }

    #[test]
    fn a_working_day_rule_due_before_easter_and_stopped_on_the_tuesday_after_reads_stopped_1_working_day_late()
     {
        // Started Wednesday 1 April, due Thursday 2 April; Good Friday, the weekend and Easter Monday are not
        // working days, so Tuesday 7 April is the first working day late.
        let read = reads(
            Unit::WorkingDays,
            1,
            datetime!(2026-04-01 10:00),
            datetime!(2026-04-07 09:00),
            BreachEnd::Stopped,
        );
        assert_eq!(read, "Stopped 1 working day late");
    }

    #[test]
    fn a_fifteen_working_day_enquiry_still_open_a_week_after_its_due_date_reads_overdue_by_5_working_days() {
        // Started Monday 2 March: 15 working days is Monday 23 March. A week later, Monday 30 March: Tuesday
        // 24 to Friday 27 and Monday 30.
        let read = reads(
            Unit::WorkingDays,
            15,
            datetime!(2026-03-02 10:00),
            datetime!(2026-03-30 12:00),
            BreachEnd::StillOpen,
        );
        assert_eq!(read, "Overdue by 5 working days");
    }

    #[test]
    fn a_working_day_rule_superseded_two_working_days_late_reads_superseded_2_working_days_late() {
        // Due Friday 6 March; a new strategy discussion on Tuesday 10 March replaced it.
        let read = reads(
            Unit::WorkingDays,
            1,
            datetime!(2026-03-05 10:00),
            datetime!(2026-03-10 14:00),
            BreachEnd::Superseded,
        );
        assert_eq!(read, "Superseded 2 working days late");
    }

    // Hours: hours and minutes after the due time, the same day or later.

    #[test]
    fn a_72_hour_rule_met_five_hours_after_its_due_time_reads_met_5_hours_late() {
        // 22:00 on 28 March + 72 hours is 22:00 on 31 March; met at 03:00 on 1 April.
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 22:00),
            datetime!(2026-04-01 03:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 5 hours late");
    }

    #[test]
    fn a_72_hour_rule_met_the_same_day_three_hours_after_its_due_time_reads_met_3_hours_late() {
        // 09:00 on 28 March + 72 hours is 09:00 on 31 March; met at noon that day.
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 09:00),
            datetime!(2026-03-31 12:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 3 hours late");
    }

    #[test]
    fn a_72_hour_rule_met_forty_minutes_after_its_due_time_reads_met_40_minutes_late() {
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 22:00),
            datetime!(2026-03-31 22:40),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 40 minutes late");
    }

    #[test]
    fn a_72_hour_rule_met_five_hours_forty_minutes_after_its_due_time_reads_met_5_hours_40_minutes_late() {
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 22:00),
            datetime!(2026-04-01 03:40),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 5 hours 40 minutes late");
    }

    #[test]
    fn a_72_hour_rule_met_one_hour_and_one_minute_late_reads_in_the_singular() {
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 22:00),
            datetime!(2026-03-31 23:01),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 1 hour 1 minute late");
    }

    #[test]
    fn a_72_hour_rule_met_one_millisecond_after_its_due_time_reads_met_1_minute_late() {
        // Part of a minute counts as a minute: nobody is "0 minutes late".
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 22:00),
            datetime!(2026-03-31 22:00:00.001),
            BreachEnd::Met,
        );
        assert_eq!(read, "Met 1 minute late");
    }

    #[test]
    fn a_72_hour_rule_met_exactly_at_its_due_time_is_not_late() {
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 22:00),
            datetime!(2026-03-31 22:00),
            BreachEnd::Met,
        );
        assert_eq!(read, "not late");
    }

    #[test]
    fn a_72_hour_rule_still_open_a_day_and_three_hours_after_its_due_time_reads_overdue_by_27_hours() {
        // Hour rules stay in hours: 22:00 on 31 March to 01:00 on 2 April.
        let read = reads(
            Unit::Hours,
            72,
            datetime!(2026-03-28 22:00),
            datetime!(2026-04-02 01:00),
            BreachEnd::StillOpen,
        );
        assert_eq!(read, "Overdue by 27 hours");
    }

    // Every unit, one day or one hour late, in each of the ways a breach can end.

    #[test]
    fn every_rule_unit_has_its_wording_in_every_ending() {
        for unit in Unit::ALL {
            // The date-based clocks fall due at the end of Tuesday 10 March and end at 01:00 on Thursday 12
            // March (Wednesday and Thursday late); the hour clock falls due at 09:00 on Wednesday 11 March and
            // ends at 10:00.
            let (start, at, amount) = match unit {
                Unit::CalendarMonths => (datetime!(2026-02-10 09:00), datetime!(2026-03-12 01:00), "2 days"),
                Unit::CalendarDays => (datetime!(2026-02-10 09:00), datetime!(2026-03-12 01:00), "2 days"),
                Unit::WorkingDays => (
                    datetime!(2026-03-09 09:00),
                    datetime!(2026-03-12 01:00),
                    "2 working days",
                ),
                Unit::Hours => (datetime!(2026-03-09 09:00), datetime!(2026-03-11 10:00), "1 hour"),
            };
            let limit = match unit {
                Unit::CalendarMonths | Unit::WorkingDays => 1,
                Unit::CalendarDays => 28,
                Unit::Hours => 48,
            };
            let expected = [
                (BreachEnd::Met, format!("Met {amount} late")),
                (BreachEnd::Stopped, format!("Stopped {amount} late")),
                (BreachEnd::Superseded, format!("Superseded {amount} late")),
                (BreachEnd::StillOpen, format!("Overdue by {amount}")),
            ];
            for (end, words) in expected {
                assert_eq!(reads(unit, limit, start, at, end), words, "{unit}, {end:?}");
            }
        }
    }

    #[test]
    fn the_phrase_is_the_sentence_in_the_middle_of_a_line() {
        let late = Lateness::WorkingDays(2);
        assert_eq!(late.to_string(), "2 working days");
        assert_eq!(late.phrase(BreachEnd::Met), "met 2 working days late");
        assert_eq!(late.phrase(BreachEnd::StillOpen), "overdue by 2 working days");
        assert_eq!(BreachEnd::Stopped.phrase("3 hours"), "stopped 3 hours late");
    }
}
