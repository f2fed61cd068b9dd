//! Operator reads are accountable like any other (issue 20): a CLI command that reads child data from the
//! streams or a node's read models (`replay`, `audit as-of`, `audit chronology`, `audit access`, `export`)
//! first writes one access record to the AUDIT stream — the operator's identity and stated reason, the
//! command, the child when it names one — and waits for the stream's acknowledgement. If the record cannot
//! be written the command prints nothing of the data and exits non-zero: no read without a record, as for
//! the gRPC API (docs/operations.md, "Operator reads").

use std::time::Duration;

use anyhow::anyhow;
use async_nats::jetstream;
use halcyon_grpc::pb;
use halcyon_policy::Purpose;
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::{ChildId, EventId};
use prost::Message as _;

use crate::{Failure, config_error};

/// The subject operator reads are recorded on (the AUDIT stream takes `halcyon.audit.>`; nodes write on
/// `halcyon.audit.<node id>`, which no node is named).
pub const OPERATOR_AUDIT_SUBJECT: &str = "halcyon.audit.operator-cli";
/// How long the record may go unacknowledged before the command fails closed.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// The longest operator id and reason accepted.
const OPERATOR_MAX: usize = 64;
const REASON_MAX: usize = 500;

/// Who reads and why: required of every command that reads child data.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorRead {
    /// The person reading (a staff identifier, not a name): recorded in the access log before anything is
    /// shown.
    #[arg(long = "operator", env = "HALCYON_OPERATOR", value_name = "PERSON_ID")]
    pub operator: String,
    /// Why this read is needed (a case review, a subject access request, an incident number): recorded with
    /// it.
    #[arg(long = "read-reason", env = "HALCYON_READ_REASON", value_name = "TEXT")]
    pub reason: String,
}

impl OperatorRead {
    fn checked(&self) -> Result<(&str, &str), Failure> {
        let (operator, reason) = (self.operator.trim(), self.reason.trim());
        if operator.is_empty()
            || operator.chars().count() > OPERATOR_MAX
            || operator.chars().any(char::is_control)
        {
            return Err(config_error(anyhow!(
                "--operator: the reading person's identifier, 1 to {OPERATOR_MAX} printable characters"
            )));
        }
        if reason.is_empty() || reason.chars().count() > REASON_MAX {
            return Err(config_error(anyhow!(
                "--read-reason: why this read is needed, 1 to {REASON_MAX} characters"
            )));
        }
        Ok((operator, reason))
    }

    /// Writes the read's access record and waits for AUDIT's acknowledgement; on any failure the read must
    /// not go on (the error says the access log is unavailable).
    pub async fn record(
        &self,
        js: &jetstream::Context,
        command: &str,
        purpose: Purpose,
        child: Option<ChildId>,
    ) -> Result<(), Failure> {
        let (operator, reason) = self.checked()?;
        let record = pb::AccessRecord {
            record_id: EventId::new().to_string(),
            at: Some(timestamp_from_millis(halcyon_schema::clock::now_ms())),
            role: "operator".into(),
            principal_id: format!("operator-cli:{operator}"),
            purpose: purpose.to_pb() as i32,
            method: command.to_owned(),
            child_id: child.map(|c| c.to_string()).unwrap_or_default(),
            outcome: pb::AccessOutcome::Permitted as i32,
            node_id: "operator-cli".into(),
            reason: reason.to_owned(),
            acting_person_id: operator.to_owned(),
            acting_person_role: "operator".into(),
            ..Default::default()
        };
        let id = record.record_id.clone();
        let payload = pb::AccessRecords {
            records: vec![record],
        }
        .encode_to_vec();
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(&id);
        let written = async {
            let ack = js
                .send_publish(OPERATOR_AUDIT_SUBJECT, publish)
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(ACK_WAIT, written).await {
            Ok(Ok(ack)) if ack.stream == halcyon_schema::subject::AUDIT_STREAM => Ok(()),
            Ok(Ok(ack)) => Err(anyhow!(
                "the access record went to stream {}, not AUDIT; nothing was read",
                ack.stream
            )
            .into()),
            Ok(Err(e)) => Err(anyhow!(
                "the access log (AUDIT) is unavailable, so nothing was read: the read's access record was not \
                 written ({e})"
            )
            .into()),
            Err(_) => Err(anyhow!(
                "the access log (AUDIT) is unavailable, so nothing was read: no acknowledgement of the read's \
                 access record within {ACK_WAIT:?}"
            )
            .into()),
        }
    }
}
