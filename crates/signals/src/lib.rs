//! Joining the dots (ARCHITECTURE.md, docs/domain.md §7): rules kept as data (`deploy/signals.toml`) that raise a
//! multi-agency signal for a child when, within a window, concerns arrive from enough agencies, or enough
//! kinds of exploitation indicator co-occur — and a pure evaluation of a child's facts against them.
//!
//! Architecture invariant: this crate knows nothing about NATS, sled, gRPC, tokio or the clock. The same
//! set of facts always gives the same signals, whatever order the facts are given in.
//!
//! ```
//! use halcyon_signals::{Indicator, Observation, SignalRules, evaluate};
//!
//! let rules = SignalRules::england();
//! const DAY: i64 = 86_400_000;
//! let fact = |id: &str, day: i64, agency: &str, seq: u64, i: Indicator| {
//!     Observation::new(id, day * DAY, agency, &format!("EVENTS_{agency}"), seq).with(i)
//! };
//! let facts = [
//!     fact("e1", 0, "police-sy", 1, Indicator::Missing),
//!     fact("e2", 3, "police-sy", 2, Indicator::Missing),
//!     fact("e3", 5, "school-oakwood", 1, Indicator::Absence),
//!     fact("e4", 9, "health-rgh-ed", 1, Indicator::IntoxicationAttendance),
//! ];
//! let signals = evaluate(&rules, &facts);
//! assert_eq!(signals.len(), 1);
//! assert_eq!(signals[0].id(), "S02/e4");
//! assert_eq!(signals[0].facts.len(), 4);
//! assert_eq!(signals[0].fired_at_ms, 9 * DAY);
//! ```
//!
//! - [`Indicator`]: the vocabulary rules are written in (what a fact indicates), and [`Observation`], one
//!   fact as the rules see it ([`Observation::from_event`] builds it from a decoded event).
//! - [`SignalRules`], [`Rule`]: the file, loaded and checked ([`SignalRuleError`] names file, line, column
//!   and reason).
//! - [`evaluate`] → [`Signal`]s, each naming its rule and the facts that raised it, by reference.
//! - [`identify`]: what each signal is called, stably: a fact that arrives late (backdated) and changes
//!   which fact completes a pattern does not rename the signal; signals it merges are named.
#![forbid(unsafe_code)]

mod evaluate;
mod file;
mod identity;
mod indicator;
mod rule;

pub use evaluate::{FactRef, Signal, evaluate, evaluate_until};
pub use file::SignalRuleError;
pub use identity::{Identified, identify};
pub use indicator::{Indicator, Observation};
pub use rule::{ENGLAND_FILE, ENGLAND_TOML, IndicatorGroup, Recipient, Rule, RuleKind, SignalRules};
