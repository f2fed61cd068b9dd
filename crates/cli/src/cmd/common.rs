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

/// Where a node's gRPC API is and the caller's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The node's gRPC address.
    #[arg(long, env = "HALCYON_API", default_value = "http://127.0.0.1:50051")]
    pub api: String,
    /// Bearer token of the calling agency's principal.
    #[arg(long, env = "HALCYON_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl ApiArgs {
    pub async fn client(
        &self,
    ) -> Result<
        halcyon_schema::pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
        crate::Failure,
    > {
        halcyon_schema::pb::query_service_client::QueryServiceClient::connect(self.api.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the halcyon node at {}: {e}", self.api).into())
    }

    /// A request carrying the caller's bearer token.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, crate::Failure> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| crate::config_error(anyhow::anyhow!("the token is not a valid header value")))?;
        request.metadata_mut().insert("authorization", bearer);
        Ok(request)
    }
}

/// A gRPC refusal as an error for people: the code and the node's message.
pub fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", status.code(), status.message())
}

/// Positions from the command line, for a request context.
pub fn wire_positions(after: &[halcyon_bus::Position]) -> Vec<halcyon_schema::pb::Position> {
    after
        .iter()
        .map(|p| halcyon_schema::pb::Position {
            stream: p.stream.clone(),
            sequence: p.sequence,
        })
        .collect()
}
