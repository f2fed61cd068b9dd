//! Reading a stream from a position with an ordered consumer. The consumer's own state is not progress:
//! the caller says where to start (its checkpoint + 1) and keeps its own record of what it has applied.

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::BusError;

/// One stored message, as the projector needs it.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub stream: String,
    pub sequence: u64,
    pub subject: String,
    pub payload: Bytes,
    /// When the server stored it (Unix ms).
    pub stored_at_ms: i64,
    /// Messages after this one in the stream when it was delivered (the consumer's lag).
    pub pending: u64,
}

/// All messages of `stream` from `start_sequence` (1 for the beginning) on, live.
pub async fn ordered_messages(
    js: &jetstream::Context,
    stream: &str,
    start_sequence: u64,
) -> Result<impl Stream<Item = Result<RawMessage, BusError>> + Send + 'static, BusError> {
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| BusError::js(format!("opening stream {stream}"), e))?;
    let consumer = handle
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start_sequence.max(1),
            },
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
        let fail = |reason: String| BusError::Consume {
            stream: name.clone(),
            reason,
        };
        let m = m.map_err(|e| fail(e.to_string()))?;
        let info = m
            .info()
            .map_err(|e| fail(format!("message without JetStream metadata: {e}")))?;
        let stored_at_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        Ok(RawMessage {
            stream: name.clone(),
            sequence,
            subject: m.subject.to_string(),
            payload: m.payload.clone(),
            stored_at_ms,
            pending,
        })
    }))
}
