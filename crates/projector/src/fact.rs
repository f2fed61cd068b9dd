//! A projected fact: an envelope as an agency published it, with where and when the bus stored it.

use halcyon_schema::pb;
use halcyon_schema::pb::event::Kind;

/// A projected fact about a child.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub stream: String,
    pub sequence: u64,
    pub stored_at_ms: i64,
    pub envelope: pb::Envelope,
    /// Set on a fact read through [`crate::corrections::effective`] that its recording agency corrected.
    pub corrected: Option<crate::corrections::Correction>,
}

impl Fact {
    pub fn kind(&self) -> Option<&Kind> {
        self.envelope.event.as_ref().and_then(|e| e.kind.as_ref())
    }

    pub fn occurred_ms(&self) -> i64 {
        self.envelope
            .occurred_at
            .as_ref()
            .map(halcyon_schema::convert::timestamp_millis)
            .unwrap_or_default()
    }
}
