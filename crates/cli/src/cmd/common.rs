//! Options several subcommands share: where NATS is and who we are on it; where the registry is.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use halcyon_schema::Registry;

#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "HALCYON_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user (an agency id to publish as that agency; `halcyon-node` or `operator` otherwise).
    #[arg(long, env = "HALCYON_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "HALCYON_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
}

impl NatsArgs {
    pub fn credentials(&self) -> halcyon_bus::Credentials {
        match (&self.nats_user, &self.nats_password) {
            (Some(u), Some(p)) => halcyon_bus::Credentials::user(u, p),
            _ => halcyon_bus::Credentials::default(),
        }
    }
}

pub fn load_registry(path: &Path) -> Result<Registry, crate::Failure> {
    let src = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the agency registry {}", path.display()))
        .map_err(crate::config_error)?;
    Registry::from_toml(&src)
        .with_context(|| path.display().to_string())
        .map_err(crate::config_error)
}

/// The default location of a file under `deploy/`, relative to the working directory.
pub fn deploy_path(rel: &str) -> PathBuf {
    PathBuf::from("deploy").join(rel)
}
