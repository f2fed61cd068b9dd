//! Stream settings as a checked-in spec (`deploy/streams.toml`): one `EVENTS_<AGENCY>` stream per registered
//! agency, the AUDIT stream and the CHECKPOINTS stream.
//!
//! [`apply`] (run by `halcyon streams apply --spec`, as an operator) is the only writer of stream settings:
//! it creates missing streams, reconciles what may change (replicas, duplicate window, message size,
//! placement) and refuses what must not change silently. A node only [`verify`]s them at start, naming every
//! difference, and never updates a stream: its NATS user has no right to.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use halcyon_schema::subject::{AUDIT_PREFIX, AUDIT_STREAM, EVENTS_STREAM_PREFIX, agency_events_filter};
use halcyon_schema::{AgencyId, StreamName};

use crate::checkpoint::{CHECKPOINT_PREFIX, CHECKPOINT_STREAM};
use crate::error::BusError;

/// The settings of one kind of stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamClass {
    /// Copies JetStream keeps, each on a different server (3 in a cluster; 1 on a laptop). A node accepts
    /// at least this many.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a re-sent message. The projector also remembers
    /// every event id, so an event re-sent after the window is stored twice but projected once. A node
    /// accepts at least this long.
    pub duplicate_window_secs: u64,
    /// The largest message the stream accepts, bytes (the server's `max_payload` caps it too).
    pub max_message_bytes: i32,
    /// Server tags every replica's server must carry (e.g. `["region:uk-north"]`). Spreading the replicas
    /// across zones is the servers' `unique_tag`, not this.
    #[serde(default)]
    pub placement_tags: Vec<String>,
}

/// The settings of the key-value bucket of node heartbeats and duty leases (`crate::nodes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BucketClass {
    /// Copies JetStream keeps (as the streams'). A node accepts at least this many.
    pub replicas: usize,
    #[serde(default)]
    pub placement_tags: Vec<String>,
}

/// The checked-in stream settings of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Every `EVENTS_<AGENCY>` stream.
    pub events: StreamClass,
    /// The AUDIT stream of access records.
    pub audit: StreamClass,
    /// The CHECKPOINTS stream of signed hash-chain checkpoints.
    pub checkpoints: StreamClass,
    /// The bucket of node heartbeats and duty leases (`halcyon_nodes`).
    pub nodes: BucketClass,
}

/// 1 MiB: the servers' `max_payload` (an envelope is at most 64 KiB; an AUDIT message groups records).
const MESSAGE_BYTES_DEFAULT: i32 = 1024 * 1024;

impl StreamSpec {
    /// One server, one copy (a laptop, the demo, the tests): `deploy/streams-local.toml`.
    pub fn single_server() -> Self {
        let class = |window: u64| StreamClass {
            replicas: 1,
            duplicate_window_secs: window,
            max_message_bytes: MESSAGE_BYTES_DEFAULT,
            placement_tags: Vec::new(),
        };
        Self {
            events: class(3600),
            audit: class(120),
            checkpoints: class(120),
            nodes: BucketClass {
                replicas: 1,
                placement_tags: Vec::new(),
            },
        }
    }

    /// The same with `replicas` copies of every stream.
    pub fn replicated(replicas: usize) -> Self {
        let mut spec = Self::single_server();
        for class in [&mut spec.events, &mut spec.audit, &mut spec.checkpoints] {
            class.replicas = replicas;
        }
        spec.nodes.replicas = replicas;
        spec
    }

    /// Parses a spec and checks its values.
    pub fn from_toml(src: &str) -> Result<Self, String> {
        let spec: Self = toml::from_str(src).map_err(|e| e.to_string())?;
        for (name, class) in spec.classes() {
            if !(1..=5).contains(&class.replicas) {
                return Err(format!(
                    "[{name}] replicas must be 1 to 5, got {}",
                    class.replicas
                ));
            }
            if class.duplicate_window_secs == 0 {
                return Err(format!("[{name}] duplicate_window_secs must be at least 1"));
            }
            if class.max_message_bytes < 1024 {
                return Err(format!(
                    "[{name}] max_message_bytes must be at least 1024, got {}",
                    class.max_message_bytes
                ));
            }
        }
        if !(1..=5).contains(&spec.nodes.replicas) {
            return Err(format!(
                "[nodes] replicas must be 1 to 5, got {}",
                spec.nodes.replicas
            ));
        }
        Ok(spec)
    }

    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Self, BusError> {
        let fail = |reason: String| BusError::Spec {
            path: path.display().to_string(),
            reason,
        };
        let src = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::from_toml(&src).map_err(fail)
    }

    fn classes(&self) -> [(&'static str, &StreamClass); 3] {
        [
            ("events", &self.events),
            ("audit", &self.audit),
            ("checkpoints", &self.checkpoints),
        ]
    }

    /// Every stream the spec describes for `agencies`, as the configuration the server should hold.
    pub fn wanted<'a>(&self, agencies: impl IntoIterator<Item = &'a AgencyId>) -> Vec<stream::Config> {
        let mut all: Vec<stream::Config> = agencies
            .into_iter()
            .map(|agency| stream::Config {
                // Durable bulk loads: atomic batches share one fsync (`crate::batch`).
                allow_atomic_publish: true,
                ..config(
                    StreamName::for_agency(agency).as_str(),
                    vec![agency_events_filter(agency)],
                    format!("case events published by agency {agency}"),
                    &self.events,
                )
            })
            .collect();
        all.push(config(
            AUDIT_STREAM,
            vec![format!("{AUDIT_PREFIX}.>")],
            "access records written by halcyon nodes before every disclosure".to_owned(),
            &self.audit,
        ));
        all.push(config(
            CHECKPOINT_STREAM,
            vec![format!("{CHECKPOINT_PREFIX}.>")],
            "signed hash-chain checkpoints of every agency stream, written by halcyon nodes".to_owned(),
            &self.checkpoints,
        ));
        all
    }
}

fn config(name: &str, subjects: Vec<String>, description: String, class: &StreamClass) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        description: Some(description),
        subjects,
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: class.replicas,
        duplicate_window: Duration::from_secs(class.duplicate_window_secs),
        max_message_size: class.max_message_bytes,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        discard: stream::DiscardPolicy::New,
        allow_direct: true,
        placement: (!class.placement_tags.is_empty()).then(|| stream::Placement {
            cluster: None,
            tags: class.placement_tags.clone(),
        }),
        ..Default::default()
    }
}

/// What [`apply`] did to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    Created,
    Unchanged,
    /// Settings that were changed, e.g. `duplicate_window 2m -> 1h`.
    Updated(Vec<String>),
}

/// Creates or reconciles every stream of `spec` (an operator's job: `halcyon streams apply --spec`).
/// Refuses, naming the setting, to change what must not change silently (storage, subjects, the deny
/// flags, retention limits).
pub async fn apply<'a>(
    js: &jetstream::Context,
    spec: &StreamSpec,
    agencies: impl IntoIterator<Item = &'a AgencyId>,
) -> Result<Vec<(String, Provisioned)>, BusError> {
    let mut done = Vec::new();
    for wanted in spec.wanted(agencies) {
        let name = wanted.name.clone();
        // A cluster that has just formed or lost a server may time out a request while its meta leader
        // settles; a timed-out create may still have happened, so each attempt looks before it writes.
        let provisioned = patiently(|| ensure(js, wanted.clone())).await?;
        done.push((name, provisioned));
    }
    let provisioned = patiently(|| ensure_bucket(js, &spec.nodes)).await?;
    done.push((crate::nodes::NODES_STREAM.to_owned(), provisioned));
    Ok(done)
}

/// Whether a JetStream error is one that passes once the cluster settles: no answer in time, temporarily
/// unavailable (10008, 10009), or a replica placement refused because the meta leader has not yet heard
/// from a peer (10005 "peer offline", seen just after a cluster starts or a server rejoins).
fn passing(e: &(dyn std::error::Error + Send + Sync)) -> bool {
    let text = e.to_string();
    text.contains("timed out")
        || text.contains("10008")
        || text.contains("10009")
        || (text.contains("10005") && text.contains("peer offline"))
}

/// Attempts per stream when JetStream does not answer in time.
const APPLY_ATTEMPTS_MAX: u32 = 4;

/// Runs `request` again (up to [`APPLY_ATTEMPTS_MAX`] times) while JetStream does not answer in time, says
/// it is temporarily unavailable (10008, 10009), or cannot yet place replicas on a peer it has not heard
/// from (10005, peer offline), as while a cluster elects a new meta leader or a server rejoins.
pub async fn patiently<T, F, Fut>(mut request: F) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Err(BusError::JetStream { doing, source })
                if attempt < APPLY_ATTEMPTS_MAX && passing(&*source) =>
            {
                tracing::warn!(%doing, error = %source, attempt, "no answer from JetStream; trying again");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn ensure(js: &jetstream::Context, wanted: stream::Config) -> Result<Provisioned, BusError> {
    let name = wanted.name.clone();
    let actual = match stream_info(js, &name).await? {
        Some(info) => info.config,
        None => {
            js.create_stream(wanted)
                .await
                .map_err(|e| BusError::js(format!("creating stream {name}"), e))?;
            tracing::info!(stream = %name, "stream created");
            return Ok(Provisioned::Created);
        }
    };
    if let Some(d) = immutable_differences(&actual, &wanted).into_iter().next() {
        return Err(BusError::StreamSetting {
            stream: name,
            setting: d.setting,
            actual: d.actual,
            wanted: d.wanted,
            hint: d.hint,
        });
    }
    let mut changes = Vec::new();
    if actual.duplicate_window != wanted.duplicate_window {
        changes.push(format!(
            "duplicate_window {:?} -> {:?}",
            actual.duplicate_window, wanted.duplicate_window
        ));
    }
    if actual.num_replicas != wanted.num_replicas {
        changes.push(format!(
            "num_replicas {} -> {}",
            actual.num_replicas, wanted.num_replicas
        ));
    }
    if actual.max_message_size != wanted.max_message_size {
        changes.push(format!(
            "max_message_size {} -> {}",
            actual.max_message_size, wanted.max_message_size
        ));
    }
    if placement_tags(&actual) != placement_tags(&wanted) {
        changes.push(format!(
            "placement tags {:?} -> {:?}",
            placement_tags(&actual),
            placement_tags(&wanted)
        ));
    }
    if actual.description != wanted.description {
        changes.push("description".to_owned());
    }
    if actual.allow_atomic_publish != wanted.allow_atomic_publish {
        changes.push(format!(
            "allow_atomic {} -> {}",
            actual.allow_atomic_publish, wanted.allow_atomic_publish
        ));
    }
    if changes.is_empty() {
        return Ok(Provisioned::Unchanged);
    }
    let update = stream::Config {
        duplicate_window: wanted.duplicate_window,
        num_replicas: wanted.num_replicas,
        max_message_size: wanted.max_message_size,
        placement: wanted.placement,
        description: wanted.description,
        allow_atomic_publish: wanted.allow_atomic_publish,
        ..actual
    };
    js.update_stream(update)
        .await
        .map_err(|e| BusError::js(format!("updating stream {name}"), e))?;
    tracing::info!(stream = %name, changes = ?changes, "stream reconciled");
    Ok(Provisioned::Updated(changes))
}

fn placement_tags(c: &stream::Config) -> BTreeSet<String> {
    c.placement
        .as_ref()
        .map(|p| p.tags.iter().cloned().collect())
        .unwrap_or_default()
}

/// One setting of one stream that is not as the spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Difference {
    setting: &'static str,
    actual: String,
    wanted: String,
    hint: &'static str,
}

/// What neither `apply` nor a node may accept or change in place.
fn immutable_differences(actual: &stream::Config, wanted: &stream::Config) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut differ = |setting, actual: String, wanted: String, hint| {
        out.push(Difference {
            setting,
            actual,
            wanted,
            hint,
        })
    };
    if actual.storage != wanted.storage {
        differ(
            "storage",
            format!("{:?}", actual.storage),
            format!("{:?}", wanted.storage),
            "storage cannot change in place; migrate the stream deliberately",
        );
    }
    if actual.subjects != wanted.subjects {
        differ(
            "subjects",
            actual.subjects.join(","),
            wanted.subjects.join(","),
            "the subject is the agency's identity; fix the registry or the stream by hand",
        );
    }
    for (setting, a, w) in [
        ("deny_delete", actual.deny_delete, wanted.deny_delete),
        ("deny_purge", actual.deny_purge, wanted.deny_purge),
        ("allow_rollup", actual.allow_rollup, wanted.allow_rollup),
    ] {
        if a != w {
            differ(
                setting,
                a.to_string(),
                w.to_string(),
                "the log must be immutable; investigate who changed it",
            );
        }
    }
    // The server reports "no limit" as -1 where a fresh config says 0.
    let limited = |c: &stream::Config| {
        (
            c.max_age,
            c.max_messages.max(0),
            c.max_bytes.max(0),
            c.max_messages_per_subject.max(0),
        )
    };
    if actual.retention != wanted.retention || limited(actual) != limited(wanted) {
        differ(
            "retention limits",
            format!("{:?} {:?}", actual.retention, limited(actual)),
            format!("{:?} {:?}", wanted.retention, limited(wanted)),
            "Halcyon keeps every event; a limit would silently drop history",
        );
    }
    out
}

/// Every way the streams on the server fall short of `spec`, one line per difference (empty: they match).
/// A node accepts more replicas and a longer duplicate window than the spec's, never fewer.
fn shortfalls(actual: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let name = &wanted.name;
    let mut out: Vec<String> = immutable_differences(actual, wanted)
        .into_iter()
        .map(|d| {
            format!(
                "{name}: {} is {}, the spec says {}",
                d.setting, d.actual, d.wanted
            )
        })
        .collect();
    if actual.num_replicas < wanted.num_replicas {
        out.push(format!(
            "{name}: replicas {} is fewer than the spec's {}",
            actual.num_replicas, wanted.num_replicas
        ));
    }
    if actual.duplicate_window < wanted.duplicate_window {
        out.push(format!(
            "{name}: duplicate window {} s is shorter than the spec's {} s",
            actual.duplicate_window.as_secs(),
            wanted.duplicate_window.as_secs()
        ));
    }
    if actual.max_message_size != wanted.max_message_size {
        out.push(format!(
            "{name}: max message size {} bytes, the spec says {}",
            actual.max_message_size, wanted.max_message_size
        ));
    }
    if !placement_tags(wanted).is_subset(&placement_tags(actual)) {
        out.push(format!(
            "{name}: placement tags {:?}, the spec says {:?}",
            placement_tags(actual),
            placement_tags(wanted)
        ));
    }
    if wanted.allow_atomic_publish && !actual.allow_atomic_publish {
        out.push(format!(
            "{name}: atomic batch publishing is off, the spec turns it on"
        ));
    }
    out
}

/// Creates the bucket of heartbeats and leases, or raises its replicas to the spec's.
async fn ensure_bucket(js: &jetstream::Context, class: &BucketClass) -> Result<Provisioned, BusError> {
    let name = crate::nodes::NODES_STREAM;
    match stream_info(js, name).await? {
        None => {
            js.create_key_value(crate::nodes::bucket_config(class))
                .await
                .map_err(|e| BusError::js(format!("creating the key-value bucket {name}"), e))?;
            Ok(Provisioned::Created)
        }
        Some(info) if info.config.num_replicas != class.replicas => {
            let from = info.config.num_replicas;
            let mut config = info.config.clone();
            config.num_replicas = class.replicas;
            js.update_stream(config)
                .await
                .map_err(|e| BusError::js(format!("updating {name}"), e))?;
            Ok(Provisioned::Updated(vec![format!(
                "replicas {from} -> {}",
                class.replicas
            )]))
        }
        Some(_) => Ok(Provisioned::Unchanged),
    }
}

/// Checks, without changing anything, that every stream of `spec` exists with at least its settings.
/// Returns each stream's info (for the durability check); fails naming every difference.
pub async fn verify<'a>(
    js: &jetstream::Context,
    spec: &StreamSpec,
    agencies: impl IntoIterator<Item = &'a AgencyId>,
) -> Result<Vec<stream::Info>, BusError> {
    let mut differences = Vec::new();
    let mut infos = Vec::new();
    for wanted in spec.wanted(agencies) {
        match patiently(|| stream_info(js, &wanted.name)).await? {
            None => differences.push(format!("{}: the stream does not exist", wanted.name)),
            Some(info) => {
                differences.extend(shortfalls(&info.config, &wanted));
                infos.push(info);
            }
        }
    }
    let bucket = crate::nodes::NODES_STREAM;
    match patiently(|| stream_info(js, bucket)).await? {
        None => differences.push(format!(
            "{bucket}: the key-value bucket of node heartbeats and duty leases does not exist"
        )),
        Some(info) => {
            if info.config.num_replicas < spec.nodes.replicas {
                differences.push(format!(
                    "{bucket}: replicas {} is fewer than the spec's {}",
                    info.config.num_replicas, spec.nodes.replicas
                ));
            }
            infos.push(info);
        }
    }
    if differences.is_empty() {
        Ok(infos)
    } else {
        Err(BusError::StreamsDiffer { differences })
    }
}

/// A stream's info, `None` if it does not exist.
pub async fn stream_info(js: &jetstream::Context, name: &str) -> Result<Option<stream::Info>, BusError> {
    match js.get_stream(name).await {
        Ok(mut s) => Ok(Some(
            s.info()
                .await
                .map_err(|e| BusError::js(format!("reading stream {name}"), e))?
                .clone(),
        )),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(BusError::js(format!("looking up stream {name}"), e)),
    }
}

/// The payload of the message at `sequence` of `stream`, `None` if the stream or the message is not there.
/// Asked of the stream's leader (not a direct get, which any replica may answer, one that may still be
/// catching up after a failure).
pub async fn stored_payload(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<Option<bytes::Bytes>, BusError> {
    Ok(stored_message(js, stream, sequence).await?.map(|m| m.payload))
}

/// The message at `sequence` of `stream`, from the stream's leader; `None` if it is not there.
async fn stored_message(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<Option<jetstream::message::StreamMessage>, BusError> {
    let handle = match js.get_stream_no_info(stream).await {
        Ok(s) => s,
        Err(e) => return Err(BusError::js(format!("looking up stream {stream}"), e)),
    };
    match handle.get_raw_message(sequence).await {
        Ok(m) if m.sequence == sequence => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(BusError::js(format!("reading {stream}:{sequence}"), e)),
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Every stream's info in one listing (paged by the server): what the node's health and metrics read each
/// second, instead of one request per stream.
pub async fn all_stream_infos(js: &jetstream::Context) -> Result<Vec<stream::Info>, BusError> {
    js.streams()
        .try_collect()
        .await
        .map_err(|e| BusError::js("listing streams", e))
}

/// When the server stored the message at `sequence` of `stream` (Unix ms), `None` if it is not there.
pub async fn stored_at_ms(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<Option<i64>, BusError> {
    Ok(stored_message(js, stream, sequence)
        .await?
        .map(|m| i64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)))
}

/// The agency event streams that exist on the server, in name order.
pub async fn list_event_streams(js: &jetstream::Context) -> Result<Vec<String>, BusError> {
    let mut names: Vec<String> = js
        .stream_names()
        .try_filter(|n| futures::future::ready(n.starts_with(EVENTS_STREAM_PREFIX)))
        .try_collect()
        .await
        .map_err(|e| BusError::js("listing streams", e))?;
    names.sort();
    Ok(names)
}

/// What one server's monitoring endpoint says about durability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSync {
    pub monitor_url: String,
    pub server_name: String,
    pub sync_always: bool,
}

/// Asks one server's monitoring endpoint (`http://host:port/varz`) its name and whether JetStream syncs
/// every write. A plain HTTP/1.0 GET over TCP: the endpoint is local and this avoids an HTTP client.
pub async fn server_sync(monitor_url: &str) -> Result<ServerSync, BusError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = monitor_url.trim_start_matches("http://").trim_end_matches('/');
    let fail = |detail: String| BusError::NotDurable { detail };
    let mut conn = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(hostport))
        .await
        .map_err(|_| fail(format!("monitoring endpoint {monitor_url} did not answer")))?
        .map_err(|e| fail(format!("cannot reach monitoring endpoint {monitor_url}: {e}")))?;
    conn.write_all(format!("GET /varz HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut body))
        .await
        .map_err(|_| fail(format!("monitoring endpoint {monitor_url} timed out")))?
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&body);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let varz: serde_json::Value =
        serde_json::from_str(json).map_err(|e| fail(format!("unreadable {monitor_url}/varz: {e}")))?;
    Ok(ServerSync {
        monitor_url: monitor_url.to_owned(),
        server_name: varz
            .pointer("/server_name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned(),
        sync_always: varz
            .pointer("/jetstream/config/sync_always")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    })
}

/// Asks one server whether JetStream syncs every write.
pub async fn check_sync_always(monitor_url: &str) -> Result<(), BusError> {
    let sync = server_sync(monitor_url).await?;
    if sync.sync_always {
        Ok(())
    } else {
        Err(not_synced(&sync))
    }
}

fn not_synced(s: &ServerSync) -> BusError {
    BusError::NotDurable {
        detail: format!(
            "server {} ({}/varz) has no jetstream.config.sync_always=true; set `sync_interval: always` in its jetstream block",
            s.server_name, s.monitor_url
        ),
    }
}

/// Checks that every server of the cluster syncs every write: each monitoring endpoint given must say so,
/// and every server that leads or holds a replica of one of `streams` must be among them (a server whose
/// endpoint was not given cannot be vouched for). Returns the servers checked.
pub async fn check_sync_everywhere(
    monitor_urls: &[String],
    streams: &[stream::Info],
) -> Result<Vec<ServerSync>, BusError> {
    if monitor_urls.is_empty() {
        return Err(BusError::NotDurable {
            detail: "no monitoring endpoint given".into(),
        });
    }
    let mut servers = Vec::new();
    let mut unreachable = Vec::new();
    for url in monitor_urls {
        match server_sync(url).await {
            Ok(sync) if !sync.sync_always => return Err(not_synced(&sync)),
            Ok(sync) => servers.push(sync),
            Err(e) => unreachable.push(e.to_string()),
        }
    }
    let checked: BTreeSet<&str> = servers.iter().map(|s| s.server_name.as_str()).collect();
    let mut unchecked = BTreeSet::new();
    let mut away = BTreeSet::new();
    for info in streams {
        let Some(cluster) = &info.cluster else { continue };
        let leader = cluster.leader.iter().map(|l| (l.clone(), true));
        // A replica the leader has not heard from lately is down: it cannot be vouched for now, and it
        // acknowledges nothing until it is back (when a node starting then checks it).
        let replicas = cluster
            .replicas
            .iter()
            .map(|p| (p.name.clone(), !p.offline && p.active <= Duration::from_secs(5)));
        for (server, up) in leader.chain(replicas) {
            if checked.contains(server.as_str()) {
                continue;
            }
            if up {
                unchecked.insert(format!("{server} (holds {})", info.config.name));
            } else {
                away.insert(server);
            }
        }
    }
    if !unchecked.is_empty() {
        return Err(BusError::NotDurable {
            detail: format!(
                "server(s) {} hold stream replicas but their monitoring endpoints were not given or did not answer (checked: {}; not answering: {}); list every server's endpoint in nats_monitor_url",
                unchecked.into_iter().collect::<Vec<_>>().join(", "),
                checked.into_iter().collect::<Vec<_>>().join(", "),
                if unreachable.is_empty() {
                    "none".to_owned()
                } else {
                    unreachable.join("; ")
                },
            ),
        });
    }
    if !away.is_empty() || !unreachable.is_empty() {
        tracing::warn!(
            down = ?away,
            unreachable = ?unreachable,
            "some servers are down and could not be checked for sync-always; every server holding a current replica was"
        );
    }
    if servers.is_empty() {
        return Err(BusError::NotDurable {
            detail: format!("no monitoring endpoint answered: {}", unreachable.join("; ")),
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_specs_parse_and_the_local_one_is_the_single_server_spec() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let local = StreamSpec::load(&root.join("streams-local.toml")).unwrap();
        assert_eq!(local, StreamSpec::single_server());
        let cluster = StreamSpec::load(&root.join("streams.toml")).unwrap();
        assert_eq!(cluster.events.replicas, 3);
        assert_eq!(cluster.audit.replicas, 3);
        assert_eq!(cluster.checkpoints.replicas, 3);
    }

    #[test]
    fn a_spec_with_an_impossible_value_is_refused_with_its_name() {
        let bad = toml::to_string(&StreamSpec::replicated(7)).unwrap();
        let err = StreamSpec::from_toml(&bad).unwrap_err();
        assert!(err.contains("[events] replicas must be 1 to 5, got 7"), "{err}");
        let err = StreamSpec::from_toml("[events]\nreplicas = 3\n").unwrap_err();
        assert!(err.contains("missing field"), "{err}");
    }

    #[test]
    fn shortfalls_name_each_difference_and_accept_more_than_the_spec() {
        let spec = StreamSpec::replicated(3);
        let agency: AgencyId = "police-sy".parse().unwrap();
        let wanted = spec.wanted([&agency]).remove(0);
        assert!(shortfalls(&wanted, &wanted).is_empty());
        let more = stream::Config {
            num_replicas: 5,
            duplicate_window: Duration::from_secs(7200),
            ..wanted.clone()
        };
        assert!(shortfalls(&more, &wanted).is_empty());
        let less = stream::Config {
            num_replicas: 1,
            duplicate_window: Duration::from_secs(60),
            deny_delete: false,
            max_bytes: 1 << 20,
            ..wanted.clone()
        };
        let found = shortfalls(&less, &wanted);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found
                .iter()
                .any(|d| d.contains("replicas 1 is fewer than the spec's 3"))
        );
        assert!(found.iter().any(|d| d.contains("deny_delete is false")));
        assert!(found.iter().any(|d| d.contains("duplicate window 60 s")));
        assert!(found.iter().any(|d| d.contains("retention limits")));
    }
}
