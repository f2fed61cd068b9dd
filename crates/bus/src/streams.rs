//! Stream provisioning: one `EVENTS_<AGENCY>` stream per registered agency and the AUDIT stream. Idempotent;
//! reconciles what may change (duplicate window, replicas), refuses what must not change silently.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::TryStreamExt;
use halcyon_schema::subject::{AUDIT_PREFIX, AUDIT_STREAM, EVENTS_STREAM_PREFIX, agency_events_filter};
use halcyon_schema::{AgencyId, StreamName};

use crate::error::BusError;

/// Settings an operator chooses per deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a re-sent event. The projector also remembers
    /// every event id, so a re-send after the window is stored twice but projected once.
    pub duplicate_window: Duration,
    /// 1 on a laptop, 3 in a cluster.
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(3600),
            replicas: 1,
        }
    }
}

/// What provisioning did to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    Created,
    Unchanged,
    /// Settings that were changed, e.g. `duplicate_window 2m -> 1h`.
    Updated(Vec<String>),
}

fn wanted(
    name: &str,
    subjects: Vec<String>,
    description: String,
    settings: &StreamSettings,
) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        description: Some(description),
        subjects,
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        discard: stream::DiscardPolicy::New,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates or reconciles `EVENTS_<AGENCY>` on `halcyon.events.<agency>.>`.
pub async fn ensure_event_stream(
    js: &jetstream::Context,
    agency: &AgencyId,
    settings: &StreamSettings,
) -> Result<Provisioned, BusError> {
    let name = StreamName::for_agency(agency);
    let config = stream::Config {
        // Durable bulk loads: atomic batches share one fsync (`crate::batch`).
        allow_atomic_publish: true,
        ..wanted(
            name.as_str(),
            vec![agency_events_filter(agency)],
            format!("case events published by agency {agency}"),
            settings,
        )
    };
    ensure(js, config).await
}

/// Creates or reconciles the AUDIT stream on `halcyon.audit.>`.
pub async fn ensure_audit_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<Provisioned, BusError> {
    let config = wanted(
        AUDIT_STREAM,
        vec![format!("{AUDIT_PREFIX}.>")],
        "access records written by halcyon nodes before every disclosure".to_owned(),
        &StreamSettings {
            duplicate_window: Duration::from_secs(120),
            ..settings.clone()
        },
    );
    ensure(js, config).await
}

/// Creates or reconciles the CHECKPOINTS stream on `halcyon.checkpoints.>`: each agency stream's signed
/// hash-chain checkpoints (`crate::checkpoint`), written only by halcyon nodes, never deleted.
pub async fn ensure_checkpoint_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<Provisioned, BusError> {
    use crate::checkpoint::{CHECKPOINT_PREFIX, CHECKPOINT_STREAM};
    let config = wanted(
        CHECKPOINT_STREAM,
        vec![format!("{CHECKPOINT_PREFIX}.>")],
        "signed hash-chain checkpoints of every agency stream, written by halcyon nodes".to_owned(),
        &StreamSettings {
            duplicate_window: Duration::from_secs(120),
            ..settings.clone()
        },
    );
    ensure(js, config).await
}

async fn ensure(js: &jetstream::Context, wanted: stream::Config) -> Result<Provisioned, BusError> {
    let name = wanted.name.clone();
    let mut existing = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => {
            js.create_stream(wanted)
                .await
                .map_err(|e| BusError::js(format!("creating stream {name}"), e))?;
            tracing::info!(stream = %name, "stream created");
            return Ok(Provisioned::Created);
        }
        Err(e) => return Err(BusError::js(format!("looking up stream {name}"), e)),
    };
    let actual = existing
        .info()
        .await
        .map_err(|e| BusError::js(format!("reading stream {name}"), e))?
        .config
        .clone();
    let refuse =
        |setting: &'static str, actual: String, wanted: String, hint: &'static str| BusError::StreamSetting {
            stream: name.clone(),
            setting,
            actual,
            wanted,
            hint,
        };
    if actual.storage != wanted.storage {
        return Err(refuse(
            "storage",
            format!("{:?}", actual.storage),
            format!("{:?}", wanted.storage),
            "storage cannot change in place; migrate the stream deliberately",
        ));
    }
    if actual.subjects != wanted.subjects {
        return Err(refuse(
            "subjects",
            actual.subjects.join(","),
            wanted.subjects.join(","),
            "the subject is the agency's identity; fix the registry or the stream by hand",
        ));
    }
    for (setting, a, w) in [
        ("deny_delete", actual.deny_delete, wanted.deny_delete),
        ("deny_purge", actual.deny_purge, wanted.deny_purge),
    ] {
        if a != w {
            return Err(refuse(
                setting,
                a.to_string(),
                w.to_string(),
                "the log must be immutable; investigate who changed it",
            ));
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
    if actual.retention != wanted.retention || limited(&actual) != limited(&wanted) {
        return Err(refuse(
            "retention limits",
            format!("{:?} {:?}", actual.retention, limited(&actual)),
            format!("{:?} {:?}", wanted.retention, limited(&wanted)),
            "Halcyon keeps every event; a limit would silently drop history",
        ));
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

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
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

/// Asks the server's monitoring endpoint (`http://host:port/varz`) whether JetStream syncs every write.
/// A plain HTTP/1.0 GET over TCP: the endpoint is local and this avoids an HTTP client dependency.
pub async fn check_sync_always(monitor_url: &str) -> Result<(), BusError> {
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
        .map_err(|_| fail("monitoring endpoint timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&body);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let varz: serde_json::Value =
        serde_json::from_str(json).map_err(|e| fail(format!("unreadable /varz: {e}")))?;
    match varz
        .pointer("/jetstream/config/sync_always")
        .and_then(|v| v.as_bool())
    {
        Some(true) => Ok(()),
        _ => Err(fail(format!(
            "{monitor_url}/varz has no jetstream.config.sync_always=true; set `sync_interval: always` in the jetstream block"
        ))),
    }
}
