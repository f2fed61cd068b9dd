//! A seeded, deterministic multi-agency scenario generator (`scenario`) and a one-event envelope builder
//! (`envelope`): the demo publishes the scenario, the tests and the benchmarks drive the node with it.
//! Pure: no I/O beyond reading `deploy/agencies.toml` of a checkout in [`ScenarioAgencies::deploy`].
#![forbid(unsafe_code)]

pub mod envelope;
pub mod scenario;

pub use envelope::envelope;
pub use scenario::{Scenario, ScenarioAgencies, ScenarioConfig};

/// The checkout this crate was built from (for `deploy/` files in tests and benchmarks).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
