//! Statutory timescales (docs/domain.md §3, ARCHITECTURE.md): a working-day calendar and a table of deadline rules,
//! both data files under `deploy/timescales/`, and a pure evaluation that turns a child's facts into
//! deadlines — open, met (how early), breached (how late, and whether later met), stopped or expired.
//!
//! Architecture invariant: this crate knows nothing about NATS, sled, gRPC, tokio or the clock. Callers
//! pass the facts and the moment (`now_ms`); the same inputs always give the same answer.
//!
//! ```
//! use halcyon_timescales::{Occurrence, Status, Timescales, evaluate};
//!
//! let timescales = Timescales::england();
//! // A referral at 10:00 UTC on Thursday 24 December 2026 (1_798_106_400_000 ms).
//! let referral = Occurrence::new("e1", 1_798_106_400_000, "ReferralReceived", "la-oxon", "case-1");
//! let now_ms = 1_798_106_400_000 + 7 * 86_400_000; // a week later, no decision yet
//! let evaluation = evaluate(&timescales, &[referral], now_ms);
//! let t01 = evaluation.of_rule("T01").next().unwrap();
//! // Due at the end of Tuesday 29 December (Christmas, the weekend and the Boxing Day substitute skipped).
//! assert_eq!(halcyon_timescales::format_ms(t01.due_at_ms), "2026-12-29T23:59:59.999Z");
//! assert!(matches!(&t01.status, Status::Breached { late, resolution: None } if late.units == 2));
//! ```
//!
//! - [`calendar`]: working days, calendar days and months, the conventions (day 0 is the start day; due at
//!   the end of the due day, UTC).
//! - [`Calendar`], [`RuleSet`]: the two files, loaded and checked ([`TimescaleError`] names file, line and
//!   reason).
//! - [`Occurrence`]: the input, one fact, independent of protobuf ([`Occurrence::from_event`] builds it).
//! - [`evaluate`] → [`Evaluation`] of [`Deadline`]s.
//! - [`lateness()`] → [`Lateness`]: how late a breach is, in words a person reads correctly in every unit
//!   ("Met 2 days late", "Stopped 1 working day late", "Overdue by 3 hours"), for every caller that shows one.
#![forbid(unsafe_code)]

pub mod calendar;
mod deadline;
mod file;
mod lateness;
mod occurrence;
mod rule;

pub use calendar::{Calendar, ENGLAND_AND_WALES_FILE, ENGLAND_AND_WALES_TOML};
pub use deadline::{
    Deadline, Evaluation, FactRef, Margin, Resolution, Status, StopReason, Timescales, evaluate, format_ms,
};
pub use file::TimescaleError;
pub use lateness::{BreachEnd, Lateness, lateness};
pub use occurrence::Occurrence;
pub use rule::{
    Condition, Conditions, ENGLAND_FILE, ENGLAND_TOML, LOCAL_EXAMPLE_FILE, LOCAL_EXAMPLE_TOML, Repeat, Rule,
    RuleSet, Scope, Start, Stop, Unit, due_at_ms,
};
