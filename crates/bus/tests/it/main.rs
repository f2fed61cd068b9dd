//! The bus over a real nats-server: one test binary for the crate (each binary relinks the workspace).

mod batch;
mod nodes;
