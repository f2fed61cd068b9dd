//! Dev-only kit: a real `nats-server` with JetStream on a free loopback port (`nats`), a three-server
//! JetStream cluster for fault tests (`cluster`), a TCP proxy that can silently partition a client from a
//! server (`proxy`) and an envelope fuzzer (`fuzz`), with the scenario generator of `halcyon-scenario`
//! handed on. Used by tests and benchmarks; the shipped `halcyon` binary does not link it.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod fuzz;
pub mod nats;
pub mod prometheus;
pub mod proxy;

pub use cluster::{ClusterOptions, NatsCluster};
pub use halcyon_scenario::{Scenario, ScenarioAgencies, ScenarioConfig, envelope, scenario};
pub use nats::{Auth, NatsServer, nats_server_binary};
pub use prometheus::{PrometheusServer, http_get, prometheus_binary};
pub use proxy::TcpProxy;

/// The workspace root (for `deploy/` files).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}
