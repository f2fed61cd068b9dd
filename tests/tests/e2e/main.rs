//! End to end over real nats-server, sled and gRPC: the node as integrators, agencies and auditors meet it.
//!
//! One test binary for the crate (each binary relinks the workspace: on two cores that was most of the
//! suite's time); each file is a module, run alone with `cargo test --test e2e <module>::`.

mod access_log;
mod accountability;
mod audit_gate;
mod bus_identity;
mod common;
mod contract;
mod corrections;
mod corruption;
mod crate_graph;
mod deadlines;
mod end_to_end;
mod evolution;
mod examples;
mod fhir;
mod file_decoders;
mod flag_and_watch;
mod fuzz;
mod gate_every_method;
mod leak;
mod limits_and_health;
mod mtls;
mod node_start;
mod operate;
mod outside_clients;
mod quarantine;
mod security;
mod several_nodes;
mod signals;
mod stock_clients;
mod tamper;
