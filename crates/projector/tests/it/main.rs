//! The projector over real sled: the store, entitlements, deadlines, signals.
//!
//! One test binary for the crate (each binary relinks the workspace: on two cores that was most of the
//! suite's time); each file is a module, run alone with `cargo test --test it <module>::`.

mod common;
mod corrections;
mod deadlines;
mod entitlements;
mod history;
mod identity_repairs;
mod model;
mod signals;
mod standing_views;
mod store;
