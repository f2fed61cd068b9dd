//! Errors of the bus layer.

/// The error underneath a [`BusError`], kept whole (its chain of sources) rather than as text.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Something went wrong talking to NATS. Each variant says what Halcyon was doing.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("NATS server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("NATS credentials {path}: {reason}")]
    CredentialsFile { path: String, reason: String },
    #[error("JetStream request failed while {doing}: {source}")]
    JetStream { doing: String, source: BoxError },
    #[error("stream {stream}: setting {setting} is {actual} on the server but {wanted} here; {hint}")]
    StreamSetting {
        stream: String,
        setting: &'static str,
        actual: String,
        wanted: String,
        hint: &'static str,
    },
    #[error("stream spec {path}: {reason}")]
    Spec { path: String, reason: String },
    #[error(
        "the streams do not match the stream spec ({} difference(s)): {}; an operator applies the spec with `halcyon streams apply --spec FILE` (a node never changes a stream)",
        .differences.len(),
        .differences.join("; ")
    )]
    StreamsDiffer { differences: Vec<String> },
    #[error(
        "the NATS server does not sync every JetStream write to disk (sync_interval is not `always`): {detail}"
    )]
    NotDurable { detail: String },
    #[error("reading stream {stream}: {source}")]
    Consume { stream: String, source: BoxError },
    #[error("the AUDIT stream did not acknowledge the access record: {reason}")]
    AuditUnavailable { reason: String },
}

impl BusError {
    pub(crate) fn js(doing: impl Into<String>, e: impl Into<BoxError>) -> Self {
        Self::JetStream {
            doing: doing.into(),
            source: e.into(),
        }
    }
}
