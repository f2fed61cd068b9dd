//! Tamper evidence over NATS: the CHECKPOINTS stream (`halcyon.checkpoints.<STREAM>`, one subject per
//! agency stream, `deny_delete` and `deny_purge`, written only by halcyon nodes), reading a stream's stored
//! messages as the chain sees them (with the `Nats-Msg-Id` event id), publishing a checkpoint so that each
//! subject holds one linear chain (`Nats-Expected-Last-Subject-Sequence`), and verifying a stream.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use halcyon_ledger::{Checkpoint, Keyring, Report, StoredMessage, Verifier};

use crate::error::{BoxError, BusError};

/// The stream that keeps every agency stream's signed checkpoints.
pub const CHECKPOINT_STREAM: &str = "CHECKPOINTS";
/// Subjects of the CHECKPOINTS stream: `halcyon.checkpoints.<STREAM>`.
pub const CHECKPOINT_PREFIX: &str = "halcyon.checkpoints";
/// The checkpoint keeper's terms: a node that takes the duty writes one here first, and each of its
/// checkpoints is accepted only while that is still the last term (the server checks it), so a former keeper
/// that was paused past its lease cannot write after another took over. Not a checkpoint subject: no
/// stream is named `keeper`.
pub const KEEPER_TERM_SUBJECT: &str = "halcyon.checkpoints.keeper";
/// The longest a read waits for the next message it knows is there.
const READ_WAIT: Duration = Duration::from_secs(30);

/// Where the checkpoints of `stream` are published.
pub fn checkpoint_subject(stream: &str) -> String {
    format!("{CHECKPOINT_PREFIX}.{stream}")
}

/// What went wrong with checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Another writer extended this stream's checkpoint chain first; re-read the last checkpoint.
    #[error("stream {stream}: another checkpoint was published since the one this node extends")]
    Conflict { stream: String },
    #[error("checkpoint message {sequence} in {CHECKPOINT_STREAM} is unreadable: {reason}")]
    Unreadable { sequence: u64, reason: String },
    #[error("stream {stream} does not exist")]
    UnknownStream { stream: String },
    /// Another node began a keeper term since this node's: it may no longer write checkpoints.
    #[error("another node took over the checkpoint duty (a keeper term after {term} was begun)")]
    Fenced { term: u64 },
}

/// The fence of one keeper term: its sequence in CHECKPOINTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub sequence: u64,
}

/// Begins a keeper term for `node_id` (holding the duty's lease at `lease_revision`): every checkpoint
/// published with the returned [`Term`] is refused by the server once a later term begins.
pub async fn begin_term(
    js: &jetstream::Context,
    node_id: &str,
    lease_revision: u64,
) -> Result<Term, CheckpointError> {
    let handle = js
        .get_stream(CHECKPOINT_STREAM)
        .await
        .map_err(|e| BusError::js(format!("opening stream {CHECKPOINT_STREAM}"), e))?;
    let last = match handle.get_last_raw_message_by_subject(KEEPER_TERM_SUBJECT).await {
        Ok(m) => m.sequence,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            0
        }
        Err(e) => return Err(BusError::js("reading the last keeper term", e).into()),
    };
    let body =
        serde_json::json!({ "node_id": node_id, "lease_revision": lease_revision, "after_term": last });
    let publish = jetstream::message::PublishMessage::build()
        .payload(body.to_string().into())
        .expected_last_subject_sequence(last);
    let ack = js
        .send_publish(KEEPER_TERM_SUBJECT, publish)
        .await
        .map_err(|e| BusError::js("beginning a keeper term", e))?
        .await
        .map_err(|e| {
            if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence {
                CheckpointError::Fenced { term: last }
            } else {
                BusError::js("beginning a keeper term", e).into()
            }
        })?;
    Ok(Term {
        sequence: ack.sequence,
    })
}

/// One stored message as the chain needs it.
#[derive(Debug, Clone)]
pub struct ChainMessage {
    pub sequence: u64,
    pub subject: String,
    /// The `Nats-Msg-Id` header; empty when the message has none.
    pub event_id: String,
    pub payload: Bytes,
    /// Messages after this one when it was delivered.
    pub pending: u64,
}

impl ChainMessage {
    pub fn stored(&self) -> StoredMessage<'_> {
        StoredMessage {
            sequence: self.sequence,
            subject: &self.subject,
            event_id: &self.event_id,
            payload: &self.payload,
        }
    }
}

/// Every message of `stream` from `start_sequence` on, live, through an ordered consumer (on
/// `filter_subject` only, when given).
pub async fn chain_messages(
    js: &jetstream::Context,
    stream: &str,
    start_sequence: u64,
    filter_subject: Option<String>,
) -> Result<impl Stream<Item = Result<ChainMessage, BusError>> + Send + 'static, CheckpointError> {
    let handle = match js.get_stream(stream).await {
        Ok(h) => h,
        Err(e) if is_not_found(&e) => {
            return Err(CheckpointError::UnknownStream {
                stream: stream.to_owned(),
            });
        }
        Err(e) => return Err(BusError::js(format!("opening stream {stream}"), e).into()),
    };
    let consumer = handle
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start_sequence.max(1),
            },
            filter_subject: filter_subject.unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js(format!("creating an ordered consumer on {stream}"), e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| BusError::js(format!("reading {stream}"), e))?;
    let name = stream.to_owned();
    Ok(messages.map(move |m| {
        let fail = |source: BoxError| BusError::Consume {
            stream: name.clone(),
            source,
        };
        let m = m.map_err(|e| fail(e.into()))?;
        let info = m
            .info()
            .map_err(|e| fail(format!("message without JetStream metadata: {e}").into()))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let event_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        Ok(ChainMessage {
            sequence,
            subject: m.subject.to_string(),
            event_id,
            payload: m.payload.clone(),
            pending,
        })
    }))
}

/// A checkpoint and its place in the CHECKPOINTS stream.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub checkpoint: Checkpoint,
    /// Its sequence in CHECKPOINTS (what the next checkpoint of the same stream expects as the last).
    pub sequence: u64,
}

/// The last checkpoint of `stream`, if any.
pub async fn last_checkpoint(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Option<StoredCheckpoint>, CheckpointError> {
    let handle = js
        .get_stream(CHECKPOINT_STREAM)
        .await
        .map_err(|e| BusError::js(format!("opening stream {CHECKPOINT_STREAM}"), e))?;
    let message = match handle
        .get_last_raw_message_by_subject(&checkpoint_subject(stream))
        .await
    {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(BusError::js(format!("reading the last checkpoint of {stream}"), e).into());
        }
    };
    let checkpoint = decode(message.sequence, &message.payload)?;
    Ok(Some(StoredCheckpoint {
        checkpoint,
        sequence: message.sequence,
    }))
}

fn decode(sequence: u64, payload: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let text = std::str::from_utf8(payload).map_err(|e| CheckpointError::Unreadable {
        sequence,
        reason: e.to_string(),
    })?;
    Checkpoint::from_json(text).map_err(|e| CheckpointError::Unreadable {
        sequence,
        reason: e.to_string(),
    })
}

/// Every checkpoint CHECKPOINTS holds, of one stream or of all, in order; and the messages that are not
/// checkpoints (sequence, reason).
#[derive(Debug, Default)]
pub struct Checkpoints {
    pub checkpoints: Vec<StoredCheckpoint>,
    pub unreadable: Vec<(u64, String)>,
}

pub async fn read_checkpoints(
    js: &jetstream::Context,
    stream: Option<&str>,
) -> Result<Checkpoints, CheckpointError> {
    let mut out = Checkpoints::default();
    let filter = stream.map_or_else(|| format!("{CHECKPOINT_PREFIX}.>"), checkpoint_subject);
    let last = match stream {
        Some(s) => match last_checkpoint(js, s).await {
            Ok(Some(c)) => c.sequence,
            Ok(None) => return Ok(out),
            Err(CheckpointError::Unreadable { sequence, .. }) => sequence,
            Err(e) => return Err(e),
        },
        None => {
            let mut handle = js
                .get_stream(CHECKPOINT_STREAM)
                .await
                .map_err(|e| BusError::js(format!("opening stream {CHECKPOINT_STREAM}"), e))?;
            let state = handle
                .info()
                .await
                .map_err(|e| BusError::js(format!("reading stream {CHECKPOINT_STREAM}"), e))?
                .state
                .clone();
            if state.messages == 0 {
                return Ok(out);
            }
            state.last_sequence
        }
    };
    let messages = chain_messages(js, CHECKPOINT_STREAM, 1, Some(filter)).await?;
    let mut messages = std::pin::pin!(messages);
    loop {
        let m = tokio::time::timeout(READ_WAIT, messages.next())
            .await
            .map_err(|_| BusError::Consume {
                stream: CHECKPOINT_STREAM.into(),
                source: format!("no message in {} s", READ_WAIT.as_secs()).into(),
            })?
            .ok_or_else(|| BusError::Consume {
                stream: CHECKPOINT_STREAM.into(),
                source: "the read ended early".into(),
            })??;
        if m.subject == KEEPER_TERM_SUBJECT {
            // A keeper term, not a checkpoint.
        } else {
            match decode(m.sequence, &m.payload) {
                Ok(checkpoint) => out.checkpoints.push(StoredCheckpoint {
                    checkpoint,
                    sequence: m.sequence,
                }),
                Err(e) => out.unreadable.push((m.sequence, e.to_string())),
            }
        }
        if m.sequence >= last || m.pending == 0 {
            return Ok(out);
        }
    }
}

/// Publishes `checkpoint` in keeper term `term`: the server refuses it if a later term has begun (another
/// node holds the duty). Returns its sequence in CHECKPOINTS.
pub async fn publish_checkpoint(
    js: &jetstream::Context,
    checkpoint: &Checkpoint,
    term: Term,
) -> Result<u64, CheckpointError> {
    let publish = jetstream::message::PublishMessage::build()
        .payload(checkpoint.to_json().into())
        // One checkpoint per predecessor: a retry whose first attempt was stored after all (its
        // acknowledgement lost) is dropped as a duplicate, whatever it now covers, so no two checkpoints
        // extend the same one.
        .message_id(format!(
            "{}:{}:{}",
            checkpoint.stream,
            checkpoint.from_sequence,
            hex_prefix(&checkpoint.prev_head)
        ))
        .expected_last_subject_sequence(term.sequence)
        .header(EXPECTED_SUBJECT_HEADER, KEEPER_TERM_SUBJECT);
    let conflict_or = |e: jetstream::context::PublishError, doing: &str| {
        if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence {
            CheckpointError::Fenced { term: term.sequence }
        } else {
            BusError::js(format!("{doing} a checkpoint of {}", checkpoint.stream), e).into()
        }
    };
    let ack = js
        .send_publish(checkpoint_subject(&checkpoint.stream), publish)
        .await
        .map_err(|e| conflict_or(e, "publishing"))?
        .await
        .map_err(|e| conflict_or(e, "awaiting the acknowledgement of"))?;
    if ack.duplicate {
        // A retry of a checkpoint already stored: it is the last one unless another followed it.
        return Err(CheckpointError::Conflict {
            stream: checkpoint.stream.clone(),
        });
    }
    Ok(ack.sequence)
}

/// Makes the server check `Nats-Expected-Last-Subject-Sequence` against another subject of the stream
/// (nats-server 2.11 and later).
const EXPECTED_SUBJECT_HEADER: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What verifying one stream found, and any checkpoint messages that could not be read at all.
#[derive(Debug)]
pub struct Verification {
    pub report: Report,
    pub unreadable: Vec<(u64, String)>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.report.is_intact() && self.unreadable.is_empty()
    }
}

/// Re-derives the chain of `stream` from its stored messages and checks it against every checkpoint
/// CHECKPOINTS holds for it and every one in `exported` (a copy kept elsewhere). Reads the checkpoints
/// first, so a checkpoint published during the read is never ahead of the messages read.
pub async fn verify_stream(
    js: &jetstream::Context,
    stream: &str,
    keys: &Keyring,
    exported: &[Checkpoint],
) -> Result<Verification, CheckpointError> {
    let stored = read_checkpoints(js, Some(stream)).await?;
    let mut handle = match js.get_stream(stream).await {
        Ok(h) => h,
        Err(e) if is_not_found(&e) => {
            return Err(CheckpointError::UnknownStream {
                stream: stream.to_owned(),
            });
        }
        Err(e) => return Err(BusError::js(format!("opening stream {stream}"), e).into()),
    };
    let state = handle
        .info()
        .await
        .map_err(|e| BusError::js(format!("reading stream {stream}"), e))?
        .state
        .clone();
    let mut verifier = Verifier::new(
        stream,
        stored.checkpoints.into_iter().map(|c| c.checkpoint).collect(),
        exported.to_vec(),
        keys,
    );
    if state.messages > 0 {
        let messages = chain_messages(js, stream, 1, None).await?;
        let mut messages = std::pin::pin!(messages);
        loop {
            let m = tokio::time::timeout(READ_WAIT, messages.next())
                .await
                .map_err(|_| BusError::Consume {
                    stream: stream.into(),
                    source: format!("no message in {} s", READ_WAIT.as_secs()).into(),
                })?
                .ok_or_else(|| BusError::Consume {
                    stream: stream.into(),
                    source: "the read ended early".into(),
                })??;
            let going_on = verifier.push(&m.stored()).map_err(|e| BusError::Consume {
                stream: stream.into(),
                source: e.into(),
            })?;
            if !going_on || m.sequence >= state.last_sequence || m.pending == 0 {
                break;
            }
        }
    }
    Ok(Verification {
        report: verifier.finish(),
        unreadable: stored.unreadable,
    })
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}
