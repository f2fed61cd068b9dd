//! Options several subcommands share: where NATS is and who we are on it; where the registry is.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use halcyon_schema::Registry;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsArgs {
    /// NATS seed URLs, comma-separated (any servers of the cluster; the client learns the others).
    #[arg(long, env = "HALCYON_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user (an agency id to publish as that agency; `halcyon-node` or `operator` otherwise).
    #[arg(long, env = "HALCYON_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "HALCYON_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Passwords by NATS user (TOML `user = "password"`, e.g. deploy/nats/dev-credentials.toml), so that no
    /// password is typed on the command line: --nats-user's is used when --nats-password is not given
    /// (`publish` looks up each agency's).
    #[arg(long, env = "HALCYON_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// A NATS credentials file (user JWT + nkey seed), for servers in operator mode.
    #[arg(long, env = "HALCYON_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding this user's nkey seed, for servers that list nkey users.
    #[arg(long, env = "HALCYON_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// The CA that signed the NATS servers' certificates (turns TLS on).
    #[arg(long, env = "HALCYON_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (and --nats-key) for NATS servers that verify clients.
    #[arg(long, env = "HALCYON_NATS_CERT", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    #[arg(long, env = "HALCYON_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// How long to keep trying the seeds when the first connection fails (seconds).
    #[arg(long, env = "HALCYON_NATS_CONNECT_WAIT_SECS", default_value_t = 10)]
    pub nats_connect_wait_secs: u64,
}

impl NatsArgs {
    /// Who to connect as (--nats-user with --nats-password or its password from --credentials, a
    /// credentials file or an nkey) and how (TLS, how long to keep trying).
    pub fn credentials(&self) -> Result<halcyon_bus::Credentials, crate::Failure> {
        let mut credentials = self.user_password()?;
        credentials.creds_file = self.nats_creds.clone();
        credentials.nkey_file = self.nats_nkey.clone();
        credentials.connect_wait = std::time::Duration::from_secs(self.nats_connect_wait_secs);
        if self.nats_ca.is_some() || self.nats_cert.is_some() {
            credentials.tls = Some(halcyon_bus::ClientTls {
                ca_file: self.nats_ca.clone(),
                cert_file: self.nats_cert.clone(),
                key_file: self.nats_key.clone(),
            });
        }
        Ok(credentials)
    }

    /// The connection as a given agency: its user, its password from --credentials, its inbox prefix,
    /// and this command's TLS and patience.
    pub fn agency_credentials(
        &self,
        agency: &str,
        password: &str,
    ) -> Result<halcyon_bus::Credentials, crate::Failure> {
        let base = self.credentials()?;
        Ok(halcyon_bus::Credentials {
            tls: base.tls,
            connect_wait: base.connect_wait,
            ..halcyon_bus::Credentials::agency(agency, password)
        })
    }

    fn user_password(&self) -> Result<halcyon_bus::Credentials, crate::Failure> {
        let Some(user) = &self.nats_user else {
            return Ok(halcyon_bus::Credentials::default());
        };
        if let Some(p) = &self.nats_password {
            return Ok(halcyon_bus::Credentials::user(user, p));
        }
        match self.passwords()? {
            None => Ok(halcyon_bus::Credentials::default()),
            Some(passwords) => {
                let path = self.credentials.as_deref().unwrap_or(Path::new(""));
                let p = passwords.get(user).ok_or_else(|| {
                    crate::config_error(anyhow::anyhow!(
                        "no password for NATS user {user} in {}",
                        path.display()
                    ))
                })?;
                Ok(halcyon_bus::Credentials::user(user, p))
            }
        }
    }

    /// The --credentials file's passwords by user, if one was given.
    pub fn passwords(&self) -> Result<Option<std::collections::BTreeMap<String, String>>, crate::Failure> {
        let Some(path) = &self.credentials else {
            return Ok(None);
        };
        let src = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the credentials file {}", path.display()))
            .map_err(crate::config_error)?;
        toml::from_str(&src)
            .with_context(|| path.display().to_string())
            .map(Some)
            .map_err(crate::config_error)
    }
}

/// The deployment's stated tolerance for future-dated events: every node, rebuild and reconstruction of a
/// deployment must use the same, or they would quarantine different events.
#[derive(Debug, Clone, clap::Args)]
pub struct FutureToleranceArgs {
    /// How far an event's occurred_at or recorded_at may lie after the time the bus stored it (seconds);
    /// later, the event is quarantined as future-dated (publishers check against their own clock).
    #[arg(long, env = "HALCYON_FUTURE_TOLERANCE_SECS", default_value_t = (halcyon_schema::validate::CLOCK_TOLERANCE_MS / 1000) as u64)]
    pub future_tolerance_secs: u64,
    /// The newest envelope schema version the deployment has enabled (default: the newest this build
    /// knows); as the nodes' `--schema-version-max`.
    #[arg(long, env = "HALCYON_SCHEMA_VERSION_MAX")]
    pub schema_version_max: Option<u32>,
}

impl FutureToleranceArgs {
    pub fn ms(&self) -> i64 {
        i64::try_from(self.future_tolerance_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// The deployment's newest schema version, checked against what this build accepts.
    pub fn schema_version_max(&self) -> Result<u32, crate::Failure> {
        let (oldest, newest) = (
            halcyon_schema::SCHEMA_VERSION_OLDEST,
            halcyon_schema::SCHEMA_VERSION,
        );
        match self.schema_version_max {
            None => Ok(newest),
            Some(v) if (oldest..=newest).contains(&v) => Ok(v),
            Some(v) => Err(crate::config_error(anyhow::anyhow!(
                "--schema-version-max {v}: this build accepts versions {oldest} to {newest}"
            ))),
        }
    }
}

/// Where reviews read the history from: the streams, projected afresh for each question (the default), or a
/// review store kept beside the streams.
#[derive(Debug, Clone, clap::Args)]
pub struct ReviewStoreArgs {
    /// A review store: read models of the whole history, in this folder (created if absent), brought up to
    /// what the streams and AUDIT hold now before each question, from where they stood. A question then
    /// costs what the child's history costs, not the whole history. Not a running node's folder (sled lets
    /// one process hold it).
    #[arg(long, env = "HALCYON_REVIEW_STORE")]
    pub review_store: Option<std::path::PathBuf>,
}

impl ReviewStoreArgs {
    /// The review store, current with the streams and AUDIT, if one was named.
    pub async fn current(
        &self,
        js: &async_nats::jetstream::Context,
        future_tolerance_ms: i64,
        progress: halcyon_review::rebuild::Progress<'_>,
    ) -> Result<Option<std::sync::Arc<halcyon_projector::Projector>>, crate::Failure> {
        let Some(dir) = &self.review_store else {
            return Ok(None);
        };
        let store = std::sync::Arc::new(
            halcyon_projector::Projector::open(dir)
                .with_context(|| format!("opening the review store {}", dir.display()))
                .map_err(crate::config_error)?
                .with_future_tolerance_ms(future_tolerance_ms),
        );
        halcyon_review::rebuild::project_streams(js, &store, &halcyon_review::rebuild::Until::End, progress)
            .await
            .map_err(|e| anyhow::anyhow!("bringing the review store up to date: {e}"))?;
        halcyon_review::access_trail::index_audit(js, &store)
            .await
            .map_err(|e| anyhow::anyhow!("indexing the access log in the review store: {e}"))?;
        let flushed = store.clone();
        tokio::task::spawn_blocking(move || flushed.flush())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|e| anyhow::anyhow!("flushing the review store: {e}"))?;
        Ok(Some(store))
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
    /// The practitioner acting (an identifier within the calling agency, not a name): recorded in the access
    /// record beside the token's principal.
    #[arg(long = "as-person", env = "HALCYON_ACTING_PERSON")]
    pub acting_person: Option<String>,
    /// The acting practitioner's role (with --as-person).
    #[arg(long = "as-role", env = "HALCYON_ACTING_ROLE", requires = "acting_person")]
    pub acting_role: Option<String>,
}

impl ApiArgs {
    /// `context` naming the acting practitioner, when one was given.
    pub fn acting(&self, context: halcyon_grpc::pb::RequestContext) -> halcyon_grpc::pb::RequestContext {
        halcyon_grpc::pb::RequestContext {
            acting_person_id: self.acting_person.clone().unwrap_or_default(),
            acting_person_role: self.acting_role.clone().unwrap_or_default(),
            ..context
        }
    }

    pub async fn client(
        &self,
    ) -> Result<
        halcyon_grpc::pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
        crate::Failure,
    > {
        halcyon_grpc::pb::query_service_client::QueryServiceClient::connect(self.api.clone())
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
pub fn wire_positions(after: &[halcyon_bus::Position]) -> Vec<halcyon_grpc::pb::Position> {
    after
        .iter()
        .map(|p| halcyon_grpc::pb::Position {
            stream: p.stream.clone(),
            sequence: p.sequence,
        })
        .collect()
}
