//! The quarantine read model: events that could not be projected, with where they are and why.

use halcyon_schema::Problem;

/// One quarantined message. The message itself stays in its stream; this says why it was not projected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuarantineRecord {
    pub stream: String,
    pub sequence: u64,
    pub subject: String,
    /// The agency the subject names (the publisher), if the subject could be read.
    pub agency: Option<String>,
    /// The event id, if the payload could be decoded.
    pub event_id: Option<String>,
    pub problems: Vec<Problem>,
    pub stored_at_ms: i64,
}

impl QuarantineRecord {
    pub fn reasons(&self) -> String {
        self.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}
