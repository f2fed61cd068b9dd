//! Dev-only kit: a real `nats-server` with JetStream on a free loopback port (`nats`), and a seeded,
//! deterministic multi-agency scenario generator (`scenario`). Used by tests, the demo and benchmarks.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod fuzz;
pub mod nats;
pub mod scenario;

pub use envelope::envelope;
pub use nats::{Auth, NatsServer, nats_server_binary};
pub use scenario::{Scenario, ScenarioAgencies, ScenarioConfig};

/// The workspace root (for `deploy/` files).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}
