//! The sharing policy: loading, the table, scenarios, properties, explanations, the catalogue's cuts.
//!
//! One test binary for the crate (each binary relinks the workspace: on two cores that was most of the
//! suite's time); each file is a module, run alone with `cargo test --test it <module>::`.

mod catalogue_cuts;
mod common;
mod explain;
mod loading;
mod properties;
mod scenarios;
mod table;
