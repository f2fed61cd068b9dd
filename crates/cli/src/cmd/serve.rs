//! `halcyon serve`: load and check the whole configuration (flags > `HALCYON_*` > config file > defaults),
//! then run a node until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use halcyon_node::NodeConfig;
use halcyon_node::auth::Tokens;
use halcyon_policy::Policy;

use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A TOML file with any of the settings below (snake_case keys, e.g. `nats_url`).
    #[arg(long, env = "HALCYON_CONFIG")]
    config: Option<PathBuf>,
    /// NATS seed URLs, comma-separated (any servers of the cluster; the client learns the others).
    #[arg(long, env = "HALCYON_NATS_URL")]
    nats_url: Option<String>,
    #[arg(long, env = "HALCYON_NATS_USER")]
    nats_user: Option<String>,
    #[arg(long, env = "HALCYON_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// Passwords by NATS user (TOML `user = "password"`), so that no password is on the command line.
    #[arg(long, env = "HALCYON_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// A NATS credentials file (user JWT + nkey seed) for servers in operator mode.
    #[arg(long, env = "HALCYON_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// A file holding the node's nkey seed, for servers that list nkey users.
    #[arg(long, env = "HALCYON_NATS_NKEY")]
    nats_nkey: Option<PathBuf>,
    /// The CA that signed the NATS servers' certificates (turns TLS on).
    #[arg(long, env = "HALCYON_NATS_CA")]
    nats_ca: Option<PathBuf>,
    /// The node's client certificate and key for NATS servers that verify clients.
    #[arg(long, env = "HALCYON_NATS_CERT")]
    nats_cert: Option<PathBuf>,
    #[arg(long, env = "HALCYON_NATS_KEY")]
    nats_key: Option<PathBuf>,
    /// How long to keep trying the NATS seeds at start (seconds, default 30).
    #[arg(long, env = "HALCYON_NATS_CONNECT_WAIT_SECS")]
    nats_connect_wait_secs: Option<u64>,
    /// Every NATS server's monitoring endpoint (http://host:8222), comma-separated: the node checks that
    /// each server holding a stream syncs every JetStream write.
    #[arg(long, env = "HALCYON_NATS_MONITOR_URL")]
    nats_monitor_url: Option<String>,
    /// The deployment's stream spec; the node checks the streams against it and refuses to start on any
    /// shortfall (default deploy/streams.toml; deploy/streams-local.toml on one server).
    #[arg(long, env = "HALCYON_STREAMS_SPEC")]
    streams_spec: Option<PathBuf>,
    /// Start even if JetStream does not sync every write (never in production).
    #[arg(long, env = "HALCYON_ALLOW_UNSYNCED_JETSTREAM")]
    allow_unsynced_jetstream: bool,
    /// Where the node keeps its read models.
    #[arg(long, env = "HALCYON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "HALCYON_LISTEN")]
    listen: Option<SocketAddr>,
    /// The admin listener (`/livez`, `/readyz`, `/metrics` for Prometheus), plain HTTP on its own port,
    /// for a management network (e.g. 127.0.0.1:9464). Off unless set.
    #[arg(long, env = "HALCYON_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// At SIGTERM, seconds the node keeps answering while it reports not ready, so that load balancers stop
    /// sending it calls (default 0; set it to the load balancer's probe interval).
    #[arg(long, env = "HALCYON_DRAIN_DELAY_SECS")]
    drain_delay_secs: Option<u64>,
    /// Then seconds that calls in flight have to finish before the node stops anyway (default 10).
    #[arg(long, env = "HALCYON_DRAIN_GRACE_SECS")]
    drain_grace_secs: Option<u64>,
    #[arg(long, env = "HALCYON_AGENCIES")]
    agencies: Option<PathBuf>,
    #[arg(long, env = "HALCYON_POLICY")]
    policy: Option<PathBuf>,
    /// Bearer tokens (hashed) and the principals they stand for.
    #[arg(long, env = "HALCYON_TOKENS")]
    tokens: Option<PathBuf>,
    /// This node's id, unique among the live nodes of a deployment (default: the host name, lower-cased,
    /// other characters than letters, digits and '-' made '-').
    #[arg(long, env = "HALCYON_NODE_ID")]
    node_id: Option<String>,
    /// Seconds between heartbeats in the nodes bucket (default 5).
    #[arg(long, env = "HALCYON_HEARTBEAT_SECS")]
    heartbeat_secs: Option<u64>,
    /// Seconds a duty's lease lasts unless renewed (default 15): how long a dead holder's duty waits.
    #[arg(long, env = "HALCYON_LEASE_SECS")]
    lease_secs: Option<u64>,
    /// Beyond this many seconds between this node's clock and NATS time, no deadline breach is recorded
    /// (default 30).
    #[arg(long, env = "HALCYON_CLOCK_SKEW_MAX_SECS")]
    clock_skew_max_secs: Option<u64>,
    /// Do not serve gRPC reflection.
    #[arg(long, env = "HALCYON_NO_REFLECTION")]
    no_reflection: bool,
    /// Longest wait for a read-your-writes position, in milliseconds.
    #[arg(long, env = "HALCYON_READ_WAIT_MS")]
    read_wait_ms: Option<u64>,
    /// Calls answered at once; beyond it, calls are shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "HALCYON_CONCURRENCY_MAX")]
    concurrency_max: Option<usize>,
    /// Health reports NOT_SERVING while a stream lags by more events than this.
    #[arg(long, env = "HALCYON_LAG_MAX")]
    lag_max: Option<u64>,
    /// Serve mutual TLS with this certificate (PEM); callers are then identified by their client
    /// certificates (subject O = agency, OU = role, CN = principal) instead of bearer tokens.
    #[arg(long, env = "HALCYON_TLS_CERT", requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "HALCYON_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA that signs agencies' client certificates.
    #[arg(long, env = "HALCYON_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) of the client CA, comma-separated: listed client certificates
    /// are refused (reloaded with the rest of the TLS material).
    #[arg(long, env = "HALCYON_TLS_CRL", value_delimiter = ',')]
    tls_crl: Vec<PathBuf>,
    /// The node's ed25519 checkpoint signing key (`halcyon audit checkpoints keygen`); with it the node keeps
    /// every agency stream's hash chain and publishes signed checkpoints. deploy/checkpoint-dev.key is for
    /// development only.
    #[arg(long, env = "HALCYON_CHECKPOINT_KEY")]
    checkpoint_key: Option<PathBuf>,
    /// Another node's checkpoint public key, whose checkpoints this node may extend (repeatable).
    #[arg(long)]
    checkpoint_trusted_key: Vec<PathBuf>,
    /// The keyring file: every node's checkpoint public key with its validity dates
    /// (deploy/keyring-dev.toml for development).
    #[arg(long, env = "HALCYON_KEYRING")]
    keyring: Option<PathBuf>,
    /// A checkpoint at least every this many messages of a stream.
    #[arg(long, env = "HALCYON_CHECKPOINT_EVERY_MESSAGES")]
    checkpoint_every_messages: Option<usize>,
    /// And at least this often (seconds) while a stream has something new.
    #[arg(long, env = "HALCYON_CHECKPOINT_EVERY_SECS")]
    checkpoint_every_secs: Option<u64>,
    #[command(flatten)]
    timescales: super::deadlines::TimescaleArgs,
    #[command(flatten)]
    signals: super::signals::SignalArgs,
    /// How far an event's occurred_at or recorded_at may lie after the time the bus stored it (seconds)
    /// before it is quarantined as future-dated (default 300). Every node and rebuild must agree.
    #[arg(long, env = "HALCYON_FUTURE_TOLERANCE_SECS")]
    future_tolerance_secs: Option<u64>,
    /// The newest envelope schema version this deployment has enabled (default: the newest this build knows).
    /// Only during a rolling upgrade where nodes move first: keep it at the version before until every node
    /// runs the new build, then raise it and `halcyon quarantine reapply` (docs/contract.md).
    #[arg(long, env = "HALCYON_SCHEMA_VERSION_MAX")]
    schema_version_max: Option<u32>,
    /// sled's page cache in MiB (default 32). The node's other caches are bounded by count.
    #[arg(long, env = "HALCYON_SLED_CACHE_MB")]
    sled_cache_mb: Option<u64>,
}

/// The same settings, from a file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    nats_url: Option<String>,
    nats_user: Option<String>,
    nats_password: Option<String>,
    credentials: Option<PathBuf>,
    nats_creds: Option<PathBuf>,
    nats_nkey: Option<PathBuf>,
    nats_ca: Option<PathBuf>,
    nats_cert: Option<PathBuf>,
    nats_key: Option<PathBuf>,
    nats_connect_wait_secs: Option<u64>,
    nats_monitor_url: Option<String>,
    streams_spec: Option<PathBuf>,
    allow_unsynced_jetstream: Option<bool>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    drain_delay_secs: Option<u64>,
    drain_grace_secs: Option<u64>,
    agencies: Option<PathBuf>,
    policy: Option<PathBuf>,
    tokens: Option<PathBuf>,
    node_id: Option<String>,
    heartbeat_secs: Option<u64>,
    lease_secs: Option<u64>,
    clock_skew_max_secs: Option<u64>,
    keyring: Option<PathBuf>,
    reflection: Option<bool>,
    read_wait_ms: Option<u64>,
    concurrency_max: Option<usize>,
    lag_max: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_crl: Option<Vec<PathBuf>>,
    checkpoint_key: Option<PathBuf>,
    checkpoint_trusted_keys: Option<Vec<PathBuf>>,
    checkpoint_every_messages: Option<usize>,
    checkpoint_every_secs: Option<u64>,
    timescales: Option<Vec<PathBuf>>,
    bank_holidays: Option<PathBuf>,
    signals: Option<PathBuf>,
    future_tolerance_secs: Option<u64>,
    schema_version_max: Option<u32>,
    sled_cache_mb: Option<u64>,
}

fn build(args: Args) -> anyhow::Result<NodeConfig> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let src =
                std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
            toml::from_str(&src).with_context(|| format!("config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let agencies_path = args
        .agencies
        .or(file.agencies)
        .unwrap_or_else(|| super::common::deploy_path("agencies.toml"));
    let agencies = super::common::load_registry(&agencies_path).map_err(|f| f.error)?;
    let policy_path = args
        .policy
        .or(file.policy)
        .unwrap_or_else(|| super::common::deploy_path("policy/england.toml"));
    let policy = Policy::load(&policy_path).map_err(|e| anyhow!("policy: {e}"))?;
    let tokens_path = args
        .tokens
        .or(file.tokens)
        .unwrap_or_else(|| super::common::deploy_path("tokens.toml"));
    let tokens = Tokens::load(&tokens_path, &agencies).map_err(|e| anyhow!("tokens: {e}"))?;
    let tokens_path = std::fs::canonicalize(&tokens_path).unwrap_or(tokens_path);
    let timescale_args = super::deadlines::TimescaleArgs {
        timescales: match args.timescales.timescales {
            flags if !flags.is_empty() => flags,
            _ => file.timescales.clone().unwrap_or_default(),
        },
        bank_holidays: args.timescales.bank_holidays.or(file.bank_holidays.clone()),
    };
    let timescales = timescale_args.load()?;
    let signal_args = super::signals::SignalArgs {
        signals: args.signals.signals.or(file.signals.clone()),
    };
    let signals = signal_args.load()?;
    let streams_path = args
        .streams_spec
        .or(file.streams_spec)
        .unwrap_or_else(|| super::common::deploy_path("streams.toml"));
    let streams = halcyon_bus::StreamSpec::load(&streams_path)?;
    let nats = super::common::NatsArgs {
        nats_url: args
            .nats_url
            .or(file.nats_url)
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
        nats_user: args.nats_user.or(file.nats_user),
        nats_password: args.nats_password.or(file.nats_password),
        credentials: args.credentials.or(file.credentials),
        nats_creds: args.nats_creds.or(file.nats_creds),
        nats_nkey: args.nats_nkey.or(file.nats_nkey),
        nats_ca: args.nats_ca.or(file.nats_ca),
        nats_cert: args.nats_cert.or(file.nats_cert),
        nats_key: args.nats_key.or(file.nats_key),
        nats_connect_wait_secs: args
            .nats_connect_wait_secs
            .or(file.nats_connect_wait_secs)
            .unwrap_or(30),
    };
    if nats.nats_cert.is_some() != nats.nats_key.is_some() {
        return Err(anyhow!("nats_cert and nats_key: set both or neither"));
    }
    let nats_credentials = nats.credentials().map_err(|f| f.error)?;
    let node_id = args.node_id.or(file.node_id).unwrap_or_else(host_node_id);
    if node_id.is_empty()
        || !node_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(anyhow!(
            "node_id: {node_id:?} must be lower-case letters, digits and '-' (it names a NATS subject)"
        ));
    }
    let checkpoints = match args.checkpoint_key.or(file.checkpoint_key) {
        None => None,
        Some(path) => {
            let mut chain =
                halcyon_node::chain::ChainConfig::new(super::audit::verify::load_signing_key(&path)?);
            let trusted = if args.checkpoint_trusted_key.is_empty() {
                file.checkpoint_trusted_keys.unwrap_or_default()
            } else {
                args.checkpoint_trusted_key
            };
            for path in &trusted {
                chain
                    .trusted_keys
                    .push(super::audit::verify::load_public_key(path)?);
            }
            if let Some(path) = args.keyring.clone().or(file.keyring.clone()) {
                chain.keyring = super::audit::verify::load_keyring(&path)?;
            }
            if let Some(n) = args.checkpoint_every_messages.or(file.checkpoint_every_messages) {
                chain.every_messages = n;
            }
            if let Some(secs) = args.checkpoint_every_secs.or(file.checkpoint_every_secs) {
                chain.every = Duration::from_secs(secs);
            }
            chain.check().map_err(|e| anyhow!(e))?;
            Some(chain)
        }
    };
    let future_tolerance_ms = args
        .future_tolerance_secs
        .or(file.future_tolerance_secs)
        .map_or(halcyon_schema::validate::CLOCK_TOLERANCE_MS, |s| {
            i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
        });
    let schema_version_max = args
        .schema_version_max
        .or(file.schema_version_max)
        .unwrap_or(halcyon_schema::SCHEMA_VERSION);
    if !(halcyon_schema::SCHEMA_VERSION_OLDEST..=halcyon_schema::SCHEMA_VERSION).contains(&schema_version_max)
    {
        return Err(anyhow!(
            "schema_version_max {schema_version_max}: this build accepts versions {} to {}",
            halcyon_schema::SCHEMA_VERSION_OLDEST,
            halcyon_schema::SCHEMA_VERSION
        ));
    }
    let sled_cache_bytes = args
        .sled_cache_mb
        .or(file.sled_cache_mb)
        .map_or(halcyon_projector::store::SLED_CACHE_BYTES_DEFAULT, |mb| {
            mb.saturating_mul(1024 * 1024)
        });
    let fingerprint = config_fingerprint(
        &policy,
        &policy_path,
        &agencies_path,
        &timescale_args,
        &signal_args,
    )?;
    let peers = halcyon_node::peers::PeersConfig {
        heartbeat_every: Duration::from_secs(args.heartbeat_secs.or(file.heartbeat_secs).unwrap_or(5).max(1)),
        lease_ttl: Duration::from_secs(args.lease_secs.or(file.lease_secs).unwrap_or(15).max(3)),
        clock_skew_max: Duration::from_secs(
            args.clock_skew_max_secs
                .or(file.clock_skew_max_secs)
                .unwrap_or(30)
                .max(1),
        ),
        fingerprint,
    };
    Ok(NodeConfig {
        peers,
        future_tolerance_ms,
        schema_version_max,
        sled_cache_bytes,
        nats_url: nats.nats_url,
        nats_credentials,
        nats_monitor_urls: args
            .nats_monitor_url
            .or(file.nats_monitor_url)
            .map(|urls| {
                urls.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        allow_unsynced_jetstream: args.allow_unsynced_jetstream
            || file.allow_unsynced_jetstream.unwrap_or(false),
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data")),
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:50051".parse().expect("address")),
        admin_listen: args.admin_listen.or(file.admin_listen),
        drain_delay: Duration::from_secs(args.drain_delay_secs.or(file.drain_delay_secs).unwrap_or(0)),
        drain_grace: Duration::from_secs(args.drain_grace_secs.or(file.drain_grace_secs).unwrap_or(10)),
        agencies,
        policy,
        tokens,
        tokens_path: Some(tokens_path),
        node_id,
        reflection: !args.no_reflection && file.reflection.unwrap_or(true),
        read_wait: Duration::from_millis(args.read_wait_ms.or(file.read_wait_ms).unwrap_or(5_000)),
        streams,
        concurrency_max: args.concurrency_max.or(file.concurrency_max).unwrap_or(256),
        lag_max: args.lag_max.or(file.lag_max).unwrap_or(10_000),
        tls: match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_client_ca.or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), Some(client_ca)) => Some(halcyon_node::tls::TlsSettings {
                cert,
                key,
                client_ca,
                crls: if args.tls_crl.is_empty() {
                    file.tls_crl.clone().unwrap_or_default()
                } else {
                    args.tls_crl.clone()
                },
            }),
            (None, None, None) => None,
            _ => {
                return Err(anyhow!(
                    "tls: set all of tls_cert, tls_key and tls_client_ca, or none"
                ));
            }
        },
        checkpoints,
        timescales,
        clock: halcyon_projector::clock::Clock::system(),
        signals,
    })
}

/// The default node id: the host name, lower-cased, with anything but letters, digits and '-' made '-'.
fn host_node_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().to_lowercase();
    let id: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = id.trim_matches('-').to_owned();
    if id.is_empty() { "node".to_owned() } else { id }
}

/// What a node's configuration is, part by part (a digest of each file): nodes compare these among
/// themselves, and a store of read models is stamped with them (`halcyon_node::read_models`).
pub fn config_fingerprint(
    policy: &Policy,
    policy_path: &std::path::Path,
    agencies_path: &std::path::Path,
    timescales: &super::deadlines::TimescaleArgs,
    signals: &super::signals::SignalArgs,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut fingerprint = std::collections::BTreeMap::new();
    fingerprint.insert(
        "policy".to_owned(),
        format!("{} {}", policy.version(), file_digest(policy_path)?),
    );
    fingerprint.insert("agencies".to_owned(), file_digest(agencies_path)?);
    fingerprint.insert(
        "timescales".to_owned(),
        files_digest(&timescales.timescales, timescales.bank_holidays.as_deref())?,
    );
    let signal_files: Vec<PathBuf> = signals.signals.clone().into_iter().collect();
    fingerprint.insert("signals".to_owned(), files_digest(&signal_files, None)?);
    Ok(fingerprint)
}

/// The first 16 hex digits of the SHA-256 of a file's bytes (a fingerprint part: nodes compare these).
fn file_digest(path: &std::path::Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {} for the fingerprint", path.display()))?;
    Ok(hex::encode(&sha2::Sha256::digest(&bytes)[..8]))
}

/// The digest of several files' bytes in order ("built-in" when none is given: the binary's own).
fn files_digest(paths: &[PathBuf], more: Option<&std::path::Path>) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let all: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).chain(more).collect();
    if all.is_empty() {
        return Ok("built-in".to_owned());
    }
    let mut hash = sha2::Sha256::new();
    for path in all {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading {} for the fingerprint", path.display()))?;
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(&bytes);
    }
    Ok(hex::encode(&hash.finalize()[..8]))
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let config = build(args).map_err(config_error)?;
    halcyon_node::run(config, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT. The handlers are installed now, before the node starts, so that a
/// SIGTERM during a slow start is a drain, not the default end of the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
