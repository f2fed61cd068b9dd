//! A halcyon node: wires the agency streams to the projector, and serves the gRPC API that answers
//! integrators under the sharing policy, writing an access record to the AUDIT stream before every answer.
#![forbid(unsafe_code)]

pub mod access_index;
pub mod access_log;
pub mod admin;
pub mod auth;
pub mod backoff;
pub mod chain;
pub mod child;
pub mod config;
pub mod deadlines;
pub mod error;
pub mod events;
pub mod fhir;
pub mod gate;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod query;
pub mod read_models;
pub mod reload;
pub mod reply;
pub mod routes;
pub mod service;
pub mod signals;
pub mod tls;
pub mod view_memo;
pub mod watch;

pub use config::NodeConfig;
pub use error::ApiError;
pub use node::{Node, run};
