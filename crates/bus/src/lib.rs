//! NATS JetStream for Halcyon: connecting with an identity, provisioning the per-agency streams and the
//! AUDIT stream, publishing events so that each is kept exactly once, reading streams with ordered
//! consumers, and writing access records. Knows nothing of sled or the projector.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod batch;
pub mod checkpoint;
pub mod connect;
pub mod consumer;
pub mod error;
pub mod nodes;
pub mod publisher;
pub mod streams;

pub use audit::AuditWriter;
pub use batch::{BATCH_LEN_MAX, BatchConfig, BatchError, BatchOutcome, BatchPublisher, InvalidEvent};
pub use connect::{ClientTls, Credentials, Violations, connect, connect_watching, seed_urls};
pub use consumer::{OrderedRead, RawMessage, Start, ordered_messages, ordered_read};
pub use error::{BoxError, BusError};
pub use publisher::{PublishError, Published, Publisher, PublisherConfig};
pub use streams::{StreamSpec, list_event_streams};

/// A place in a stream: the consistency token a publish returns and a query may wait for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub stream: String,
    pub sequence: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.stream, self.sequence)
    }
}

impl std::str::FromStr for Position {
    type Err = String;
    /// Parses `STREAM:SEQUENCE`, e.g. `EVENTS_POLICE_SY:42`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (stream, seq) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not a position (STREAM:SEQUENCE)"))?;
        let sequence = seq
            .parse()
            .map_err(|_| format!("{s:?}: sequence {seq:?} is not a number"))?;
        if stream.is_empty() {
            return Err(format!("{s:?}: stream name is empty"));
        }
        Ok(Self {
            stream: stream.to_owned(),
            sequence,
        })
    }
}
