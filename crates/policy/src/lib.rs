//! The sharing policy: who may see which category of a child's facts, for what purpose, at which stage of
//! the case — as data (`deploy/policy/*.toml`), loaded and checked, then applied by a pure, total
//! `decide(&Policy, &Request) -> Decision`. Default deny: what the file does not grant is refused, and a
//! refusal is a value with a rule and a reason, never an error.
//!
//! Architecture invariant: this crate knows nothing about NATS, sled, gRPC or the clock; the caller
//! passes the time in the request.
//!
//! The order of checks (`explain` prints it as the rule path):
//! 1. a claimed break-glass must have a reason and be current, or nothing is shared;
//! 2. an agency always sees its own facts in full (rule `own`) — except an access record decided with
//!    [`decide_access_record`], where the D13 cells decide, through the relationship `own-record`;
//! 3. the category must have rules and allow the purpose;
//! 4. the cell (category × recipient kind) must exist, not be `never`, allow the purpose and serve the
//!    principal's role;
//! 5. originator approval where the cell is `originator-approval`, the category is restricted (D7, D12)
//!    or a handling code is not open (D8) — a break-glass never stands in for it;
//! 6. stage gates on the category and the cell's own stage condition;
//! 7. a legitimate relationship named by the cell, or a current break-glass in its place (marked);
//! 8. consent or a recorded exemption where the category or cell needs one;
//! 9. permit, with the cell's mode, basis and projection.
#![forbid(unsafe_code)]

mod decision;
mod explain;
mod file;
mod history;
mod minimise;
mod policy;
mod request;
mod vocabulary;

pub use halcyon_schema::{AgencyId, AgencyKind, Category};

pub use decision::{
    ConsentGround, Decision, Deny, DenyKind, Permit, decide, decide_access_record, decide_explained,
    referrer_identity_granted,
};
pub use explain::{check, check_source, explain};
pub use file::PolicyError;
pub use history::{PolicyHistory, PolicyInForce};
pub use minimise::minimise;
pub use policy::{CategoryRules, Cell, ENGLAND_FILE, ENGLAND_TOML, Gate, Policy};
pub use request::{BreakGlass, ChildState, Fact, Principal, Request, Stage};
pub use vocabulary::{
    Condition, FlagContent, FlagField, Involvement, LawfulBasis, Mode, Projection, Purpose, Relationship,
    Role, StageTerm,
};
