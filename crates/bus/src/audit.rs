//! The audit writer: access records go to the AUDIT stream, and a disclosure waits for the acknowledgement.

use async_nats::jetstream;
use halcyon_schema::{AgencyId, audit_subject, pb};
use prost::Message;

use crate::Position;
use crate::error::BusError;

#[derive(Debug, Clone)]
pub struct AuditWriter {
    js: jetstream::Context,
}

impl AuditWriter {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    /// Writes one access record and waits until JetStream has stored it.
    pub async fn record(&self, agency: &AgencyId, record: &pb::AccessRecord) -> Result<Position, BusError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(record.encode_to_vec().into())
            .message_id(&record.record_id);
        let fail = |e: &dyn std::fmt::Display| BusError::AuditUnavailable {
            reason: e.to_string(),
        };
        let ack = self
            .js
            .send_publish(audit_subject(agency), publish)
            .await
            .map_err(|e| fail(&e))?;
        let ack = ack.await.map_err(|e| fail(&e))?;
        Ok(Position {
            stream: ack.stream,
            sequence: ack.sequence,
        })
    }
}
