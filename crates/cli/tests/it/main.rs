//! The halcyon binary driven as operators and agencies drive it, against real nats-servers.
//!
//! One test binary for the crate (each binary relinks the workspace: on two cores that was most of the
//! suite's time); each file is a module, run alone with `cargo test --test it <module>::`.

mod audit_review;
mod audit_verify;
mod backup;
mod chronology;
mod cluster;
mod common;
mod crash;
mod damaged_record;
mod deadlines;
mod deadlines_history;
mod drain;
mod fuzzed_streams;
mod online_rebuild;
mod operator_reads;
mod policy;
mod publish;
mod quality;
mod reapply;
mod replay;
mod signals;
mod systemd;
