//! A node's configuration, fully loaded and checked before any socket or database is opened.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs. Built by the `halcyon` binary from flags, `HALCYON_*` variables and a file.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// One seed URL or several, comma-separated (any servers of the cluster).
    pub nats_url: String,
    /// Who the node is on NATS (user and password, a credentials file or an nkey) and the TLS it uses.
    pub nats_credentials: halcyon_bus::Credentials,
    /// Every server's monitoring endpoint, to check that each syncs every JetStream write (a server holding
    /// a stream replica whose endpoint is missing fails the check).
    pub nats_monitor_urls: Vec<String>,
    /// Start even if the server does not sync every write (development only).
    pub allow_unsynced_jetstream: bool,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The admin listener (`/livez`, `/readyz`, `/metrics`; `crate::admin`), on its own port. `None`: none.
    pub admin_listen: Option<SocketAddr>,
    /// At SIGTERM: how long the node keeps answering while reporting not ready (so load balancers stop
    /// sending it calls) before it stops taking them.
    pub drain_delay: Duration,
    /// Then how long calls in flight have to finish before the node stops anyway.
    pub drain_grace: Duration,
    pub agencies: halcyon_schema::Registry,
    pub policy: halcyon_policy::Policy,
    pub tokens: crate::auth::Tokens,
    /// The file the tokens came from: read again on SIGHUP or when it changes. `None`: never reloaded.
    pub tokens_path: Option<PathBuf>,
    /// Names this node in access records, checkpoints and the nodes bucket; unique among live nodes.
    pub node_id: String,
    /// Heartbeat, duty lease and clock bound among several nodes, and the configuration's fingerprint.
    pub peers: crate::peers::PeersConfig,
    /// Serve gRPC reflection (off in production if integrators should use the published protos).
    pub reflection: bool,
    /// The longest a read-your-writes request waits for the node to reach its position.
    pub read_wait: Duration,
    /// The deployment's stream spec (`deploy/streams.toml`): the node checks the streams against it at
    /// start and refuses to start on any shortfall; it never changes a stream.
    pub streams: halcyon_bus::StreamSpec,
    /// Calls answered at once; more are shed with RESOURCE_EXHAUSTED.
    pub concurrency_max: usize,
    /// Health reports NOT_SERVING while any stream lags by more events than this.
    pub lag_max: u64,
    /// Mutual TLS (production). Without it the node takes bearer tokens (local use).
    pub tls: Option<crate::tls::TlsSettings>,
    /// Tamper evidence: keep every agency stream's hash chain and sign its checkpoints with this key
    /// (`crate::chain`). `None`: this node keeps no chain.
    pub checkpoints: Option<crate::chain::ChainConfig>,
    /// The statutory timescales deadlines are derived with (`deploy/timescales/`).
    pub timescales: std::sync::Arc<halcyon_timescales::Timescales>,
    /// What the deadline timer reads: the system clock, or one a test sets.
    pub clock: halcyon_projector::clock::Clock,
    /// The multi-agency signal rules signals are derived with (`deploy/signals.toml`).
    pub signals: std::sync::Arc<halcyon_signals::SignalRules>,
    /// How far an event's times may lie after the time the bus stored it before it is quarantined as
    /// future-dated (`halcyon_schema::validate::CLOCK_TOLERANCE_MS` by default); every node and rebuild of
    /// a deployment must use the same.
    pub future_tolerance_ms: i64,
    /// The newest envelope schema version the deployment has enabled (`halcyon_schema::SCHEMA_VERSION`, the
    /// newest this build knows, by default): lower only while a rolling upgrade where nodes move first is
    /// under way (`halcyon_projector::store::Acceptance`).
    pub schema_version_max: u32,
    /// sled's page cache, bytes (`halcyon_projector::store::SLED_CACHE_BYTES_DEFAULT` by default). The
    /// node's other caches are bounded by count: decoded facts of `read::CACHED_CHILDREN_MAX` children,
    /// `view::VIEW_MEMO_MAX` decided views.
    pub sled_cache_bytes: u64,
}
