//! What the projector's test modules share: the deploy registry, stream names, one published message.

use bytes::Bytes;
use halcyon_projector::Incoming;
use halcyon_schema::{Registry, pb};
use prost::Message;

pub fn registry() -> Registry {
    Registry::from_toml(include_str!("../../../../deploy/agencies.toml")).unwrap()
}

/// The stream of a deploy agency.
pub fn stream(agency: &str) -> String {
    format!("EVENTS_{}", agency.to_uppercase())
}

/// One published event: its agency, its envelope and the message the bus stored.
#[derive(Clone)]
pub struct Published {
    pub agency: &'static str,
    pub envelope: pb::Envelope,
    pub message: Incoming,
}

impl Published {
    /// `envelope` as the bus stored it at `sequence` of its agency's stream, at `at_ms`.
    pub fn new(agency: &'static str, sequence: u64, at_ms: i64, envelope: pb::Envelope) -> Self {
        let message = Incoming {
            sequence,
            subject: format!("halcyon.events.{}.{}", envelope.agency_id, envelope.case_id),
            payload: Bytes::from(envelope.encode_to_vec()),
            stored_at_ms: at_ms,
        };
        Published {
            agency,
            envelope,
            message,
        }
    }
}
