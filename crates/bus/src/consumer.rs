//! Reading a stream from a position with an ordered consumer. The consumer's own state is not progress:
//! the caller says where to start (its checkpoint + 1) and keeps its own record of what it has applied.

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::{BoxError, BusError};

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

/// Where an ordered read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this sequence (1 for the beginning).
    Sequence(u64),
    /// At the first message the server stored at or after this time (Unix ms).
    StoredAt(i64),
}

/// An ordered read: its messages, and how many of them the stream held when the read began.
pub struct OrderedRead<S> {
    pub messages: S,
    /// Messages from the start (matching the filter) that the stream held when the consumer was created.
    pub pending_at_start: u64,
}

impl<S> std::fmt::Debug for OrderedRead<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderedRead")
            .field("pending_at_start", &self.pending_at_start)
            .finish_non_exhaustive()
    }
}

/// All messages of `stream` from `start_sequence` (1 for the beginning) on, live.
pub async fn ordered_messages(
    js: &jetstream::Context,
    stream: &str,
    start_sequence: u64,
) -> Result<impl Stream<Item = Result<RawMessage, BusError>> + Send + 'static, BusError> {
    Ok(ordered_read(js, stream, Start::Sequence(start_sequence), None)
        .await?
        .messages)
}

/// The messages of `stream` from `start` on, live, only those on `filter_subject` when given (the server
/// filters, so a read of one case does not carry the rest of the stream over the wire).
pub async fn ordered_read(
    js: &jetstream::Context,
    stream: &str,
    start: Start,
    filter_subject: Option<&str>,
) -> Result<OrderedRead<impl Stream<Item = Result<RawMessage, BusError>> + Send + 'static>, BusError> {
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| BusError::js(format!("opening stream {stream}"), e))?;
    let deliver_policy = match start {
        Start::Sequence(s) => DeliverPolicy::ByStartSequence {
            start_sequence: s.max(1),
        },
        Start::StoredAt(ms) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(
                |e| BusError::Consume {
                    stream: stream.to_owned(),
                    source: format!("start time {ms} ms: {e}").into(),
                },
            )?,
        },
    };
    let consumer = handle
        .create_consumer(OrderedConfig {
            deliver_policy,
            filter_subject: filter_subject.unwrap_or_default().to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js(format!("creating an ordered consumer on {stream}"), e))?;
    let pending_at_start = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| BusError::js(format!("reading {stream}"), e))?;
    let name = stream.to_owned();
    let messages = messages.map(move |m| {
        let fail = |source: BoxError| BusError::Consume {
            stream: name.clone(),
            source,
        };
        let m = m.map_err(|e| fail(e.into()))?;
        let info = m
            .info()
            .map_err(|e| fail(format!("message without JetStream metadata: {e}").into()))?;
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
    });
    Ok(OrderedRead {
        messages,
        pending_at_start,
    })
}
