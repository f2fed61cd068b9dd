//! Durable bulk publishing: one agency's events as JetStream atomic batches (ADR-50). On a server that
//! syncs every write, the whole batch is stored under one fsync instead of one per event (docs/measured.md:
//! about 12× the per-event rate at 1,000 events per batch). Each event keeps what the
//! per-event [`Publisher`] gives it: validation before sending, its case subject, and its event id as
//! `Nats-Msg-Id`. A batch is stored whole or not at all, at consecutive sequences of one stream.
//!
//! Retries and dedupe. JetStream dedupes an atomic batch as a whole: a batch holding any event id the
//! stream already has is refused whole (error 10201), its new events included. So:
//! - a batch whose outcome is unknown (no commit acknowledgement in time, a dropped connection) is retried
//!   only by resending the identical batch — same events, same order, a fresh batch id;
//! - 10201 on such a retry means an earlier attempt was stored; 10201 on a first attempt means some event
//!   was stored before by someone else. Either way the batch's events then go one by one through the
//!   per-event [`Publisher`]: stored events come back as duplicates with their original positions, new ones
//!   are stored. Nothing is stored twice and every event gets its position.
//!
//! The wire protocol (ADR-50): every message carries `Nats-Batch-Id` and `Nats-Batch-Sequence` (1, 2, …);
//! the first is a request the server answers with an empty message (or an error), the middle ones are plain
//! publishes, and the last also carries `Nats-Batch-Commit: 1` and is answered with a publish
//! acknowledgement naming the batch, its size and the sequence of its last message. The stream must allow
//! atomic publishing ([`crate::ensure_event_stream`] sets `allow_atomic`).

use std::fmt;
use std::time::Duration;

use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_MESSAGE_ID,
};
use async_nats::{HeaderMap, RequestErrorKind, StatusCode};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use halcyon_schema::{AgencyId, Problem, pb, validate_envelope};
use prost::Message;

use crate::Position;
use crate::publisher::{PublishError, Published, Publisher, PublisherConfig};

/// The server's limit on messages in one atomic batch.
pub const BATCH_LEN_MAX: usize = 1000;

/// JetStream error codes this module acts on (nats-server `errors.json`).
mod code {
    /// The stream does not allow atomic publishing.
    pub const DISABLED: u64 = 10174;
    /// The batch was abandoned incomplete (a gap, a timeout, too many batches in flight): not stored.
    pub const INCOMPLETE: u64 = 10176;
    /// The batch holds an event id the stream already has: not stored.
    pub const DUPLICATE: u64 = 10201;
    /// JetStream is electing a leader or catching up: not stored.
    pub const CLUSTER_NOT_AVAILABLE: u64 = 10008;
    pub const CLUSTER_NOT_LEADER: u64 = 10009;
}

#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Events per atomic batch in [`BatchPublisher::publish_all`], at most [`BATCH_LEN_MAX`]. Larger
    /// batches spread one fsync over more events; a 1,000-event commit takes about 15 ms.
    pub batch_len: usize,
    /// Attempts per batch when its outcome is unknown or the stream has no leader yet; each resends the
    /// identical batch. With the back-off (doubling to 2 s), ten ride out a leader election of seconds.
    pub attempts_max: u32,
    pub backoff_initial: Duration,
    /// How long to wait for the reply to a batch's first message and for the commit acknowledgement.
    pub ack_timeout: Duration,
    /// Events awaiting acknowledgement at once when a batch has to go one by one.
    pub window: usize,
    /// When set, refuse envelopes of any other agency before they reach the server.
    pub agency: Option<AgencyId>,
    /// As [`PublisherConfig::future_tolerance_ms`].
    pub future_tolerance_ms: i64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            batch_len: BATCH_LEN_MAX,
            attempts_max: 10,
            backoff_initial: Duration::from_millis(50),
            ack_timeout: Duration::from_secs(5),
            window: 1024,
            agency: None,
            future_tolerance_ms: halcyon_schema::validate::CLOCK_TOLERANCE_MS,
        }
    }
}

/// One event of a batch that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEvent {
    /// Its place in the batch (or, from `publish_all`, in the input), from 0.
    pub index: usize,
    /// As given, possibly empty or malformed.
    pub event_id: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for InvalidEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {} ({:?}): ", self.index, self.event_id)?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Why a batch was not (or not wholly) stored. Each variant says what the publisher should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Nothing was sent: fix these events. Every invalid event is listed with every problem.
    #[error("{} invalid event(s); nothing was sent: {}", .0.len(), list(.0))]
    Invalid(Vec<InvalidEvent>),
    /// Nothing was sent: a batch is stored in one stream, so it holds one agency's events.
    #[error("event {index} is agency {found}'s but the batch is agency {expected}'s; nothing was sent")]
    MixedAgencies {
        index: usize,
        expected: String,
        found: String,
    },
    /// Nothing was sent: split the batch.
    #[error("the batch holds {len} events; an atomic batch holds at most {max}; nothing was sent")]
    TooLong { len: usize, max: usize },
    /// This identity may not publish these events.
    #[error("denied: {0}")]
    Denied(String),
    /// The stream refused the batch and will refuse it again (e.g. atomic publishing not enabled).
    #[error("the stream refused the batch (JetStream error {err_code}): {description}")]
    Rejected { err_code: u64, description: String },
    /// NATS or the stream did not answer; the batch may or may not be stored. Resend the identical batch.
    #[error("unavailable: {0}; resend the identical batch")]
    Unavailable(String),
    /// Published one by one after a 10201 refusal, and this event was not stored (`stored` others were).
    /// Resend the identical batch: stored events come back as duplicates.
    #[error("event {index}, published one by one ({stored} of the batch stored): {source}")]
    Event {
        index: usize,
        stored: usize,
        #[source]
        source: PublishError,
    },
}

fn list(invalid: &[InvalidEvent]) -> String {
    let each: Vec<String> = invalid.iter().map(ToString::to_string).collect();
    each.join(" | ")
}

impl BatchError {
    /// Whether resending the identical batch later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            BatchError::Unavailable(_) => true,
            BatchError::Event { source, .. } => matches!(source, PublishError::Unavailable(_)),
            _ => false,
        }
    }
}

/// What [`BatchPublisher::publish_all`] did with one group of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The events' places in the input, from 0, in the order they were sent.
    pub indices: Vec<usize>,
    /// One [`Published`] per index, in the same order; or why the group was not (wholly) stored.
    pub result: Result<Vec<Published>, BatchError>,
}

/// Publishes events in atomic batches; see the module documentation for retries and dedupe.
#[derive(Debug, Clone)]
pub struct BatchPublisher {
    client: async_nats::Client,
    /// For batches that must go one by one.
    single: Publisher,
    config: BatchConfig,
}

/// A validated, encoded event, ready to send.
#[derive(Debug, Clone)]
struct Prepared {
    index: usize,
    agency: AgencyId,
    subject: String,
    msg_id: String,
    payload: Bytes,
    /// For the per-event publisher, should the batch have to go one by one.
    envelope: pb::Envelope,
}

/// How one attempt at a batch ended, short of a commit.
enum AttemptError {
    /// The server refused the batch; it was not stored.
    Refused { err_code: u64, description: String },
    /// No answer, or none in time: the batch may or may not be stored.
    Unknown(String),
}

/// A JetStream publish acknowledgement as the server sends it, errors and batch fields included.
#[derive(Debug, serde::Deserialize)]
struct AckReply {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Debug, serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl BatchPublisher {
    pub fn new(client: async_nats::Client, config: BatchConfig) -> Self {
        let single = Publisher::new(
            client.clone(),
            PublisherConfig {
                window: config.window.max(1),
                attempts_max: config.attempts_max,
                backoff_initial: config.backoff_initial,
                ack_timeout: config.ack_timeout,
                agency: config.agency.clone(),
                future_tolerance_ms: config.future_tolerance_ms,
            },
        );
        Self {
            client,
            single,
            config,
        }
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Validates every envelope, then stores them as one atomic batch at consecutive positions of their
    /// agency's stream; returns one position per envelope, in order. All envelopes must be of one agency,
    /// at most [`BATCH_LEN_MAX`] of them. An empty slice stores nothing.
    pub async fn publish_batch(&self, envelopes: &[pb::Envelope]) -> Result<Vec<Published>, BatchError> {
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        if envelopes.len() > BATCH_LEN_MAX {
            return Err(BatchError::TooLong {
                len: envelopes.len(),
                max: BATCH_LEN_MAX,
            });
        }
        let mut events = Vec::with_capacity(envelopes.len());
        let mut invalid = Vec::new();
        for (index, envelope) in envelopes.iter().enumerate() {
            match prepare(index, envelope.clone(), self.config.future_tolerance_ms) {
                Ok(event) => events.push(event),
                Err(bad) => invalid.push(bad),
            }
        }
        if !invalid.is_empty() {
            return Err(BatchError::Invalid(invalid));
        }
        let agency = &events[0].agency;
        if let Some(other) = events.iter().find(|e| &e.agency != agency) {
            return Err(BatchError::MixedAgencies {
                index: other.index,
                expected: agency.to_string(),
                found: other.agency.to_string(),
            });
        }
        self.check_agency(agency)?;
        self.send(&events).await
    }

    /// Publishes many events, grouping each agency's events, in input order, into batches of
    /// `batch_len`; sends one batch at a time (more in flight do not help on one server). Yields one
    /// outcome per batch sent, and one per event refused before sending (invalid, or another agency's).
    /// Within an agency, events are stored in input order.
    pub fn publish_all<'a, I>(&'a self, envelopes: I) -> impl Stream<Item = BatchOutcome> + 'a
    where
        I: IntoIterator<Item = pb::Envelope> + 'a,
        I::IntoIter: 'a,
    {
        let grouper = Grouper {
            input: envelopes.into_iter().enumerate(),
            open: Vec::new(),
            exhausted: false,
            batch_len: self.config.batch_len.clamp(1, BATCH_LEN_MAX),
        };
        futures::stream::unfold(grouper, move |mut grouper| async move {
            let outcome = match grouper.next_group(self)? {
                Group::Refused(outcome) => outcome,
                Group::Batch(events) => BatchOutcome {
                    indices: events.iter().map(|e| e.index).collect(),
                    result: self.send(&events).await,
                },
            };
            Some((outcome, grouper))
        })
    }

    fn check_agency(&self, agency: &AgencyId) -> Result<(), BatchError> {
        match &self.config.agency {
            Some(me) if me != agency => Err(BatchError::Denied(format!(
                "this publisher speaks for agency {me}, not {agency}"
            ))),
            _ => Ok(()),
        }
    }

    /// Sends one agency's prepared events as an atomic batch, resending the identical batch while the
    /// outcome is unknown; on a 10201 refusal, publishes them one by one.
    async fn send(&self, events: &[Prepared]) -> Result<Vec<Published>, BatchError> {
        let mut backoff = self.config.backoff_initial;
        let mut attempt = 1;
        loop {
            match self.attempt(events).await {
                Ok(last) => {
                    let n = events.len() as u64;
                    let first = last.sequence + 1 - n;
                    return Ok((first..=last.sequence)
                        .map(|sequence| Published {
                            position: Position {
                                stream: last.stream.clone(),
                                sequence,
                            },
                            duplicate: false,
                        })
                        .collect());
                }
                Err(AttemptError::Refused { err_code, .. }) if err_code == code::DUPLICATE => {
                    if attempt > 1 {
                        tracing::debug!(
                            attempt,
                            n_events = events.len(),
                            "batch already stored by an earlier attempt; collecting its positions"
                        );
                    } else {
                        tracing::debug!(
                            n_events = events.len(),
                            "batch holds an event stored before; publishing its events one by one"
                        );
                    }
                    return self.one_by_one(events).await;
                }
                Err(AttemptError::Refused {
                    err_code,
                    description,
                }) if !transient(err_code) => {
                    let description = if err_code == code::DISABLED {
                        format!("{description}; the stream needs allow_atomic (run `halcyon streams apply`)")
                    } else {
                        description
                    };
                    return Err(BatchError::Rejected {
                        err_code,
                        description,
                    });
                }
                Err(e) => {
                    let reason = match e {
                        AttemptError::Refused {
                            err_code,
                            description,
                        } => format!("JetStream error {err_code}: {description}"),
                        AttemptError::Unknown(reason) => reason,
                    };
                    if attempt >= self.config.attempts_max {
                        return Err(BatchError::Unavailable(format!(
                            "{} events on {}: no commit after {attempt} attempts ({reason})",
                            events.len(),
                            events[0].subject
                        )));
                    }
                    tracing::debug!(attempt, %reason, "no commit acknowledged; resending the batch");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt at storing `events` as an atomic batch under a fresh batch id. Returns the position of
    /// the last event.
    async fn attempt(&self, events: &[Prepared]) -> Result<Position, AttemptError> {
        // A NUID: unique, 22 characters (the server allows 64).
        let inbox = self.client.new_inbox();
        let batch_id = inbox.rsplit('.').next().unwrap_or(&inbox);
        let n = events.len();
        for (i, event) in events.iter().enumerate() {
            let sequence = i + 1;
            let mut headers = HeaderMap::new();
            headers.insert(NATS_BATCH_ID, batch_id);
            headers.insert(NATS_BATCH_SEQUENCE, sequence.to_string());
            headers.insert(NATS_MESSAGE_ID, event.msg_id.as_str());
            let last = sequence == n;
            if last {
                headers.insert(NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL);
            }
            if sequence > 1 && !last {
                self.client
                    .publish_with_headers(event.subject.clone(), headers, event.payload.clone())
                    .await
                    .map_err(|e| AttemptError::Unknown(format!("sending event {sequence} of {n}: {e}")))?;
                continue;
            }
            let request = async_nats::Request::new()
                .headers(headers)
                .payload(event.payload.clone())
                .timeout(Some(self.config.ack_timeout));
            let reply = self
                .client
                .send_request(event.subject.clone(), request)
                .await
                .map_err(|e| {
                    AttemptError::Unknown(match e.kind() {
                        RequestErrorKind::NoResponders => {
                            format!("no stream answers on {} (is it provisioned?)", event.subject)
                        }
                        RequestErrorKind::TimedOut => format!(
                            "no reply to event {sequence} of {n} within {:?}",
                            self.config.ack_timeout
                        ),
                        _ => format!("event {sequence} of {n}: {e}"),
                    })
                })?;
            if reply.status == Some(StatusCode::NO_RESPONDERS) {
                return Err(AttemptError::Unknown(format!(
                    "no stream answers on {}",
                    event.subject
                )));
            }
            if !last && reply.payload.is_empty() {
                // The server has started the batch.
                continue;
            }
            let ack: AckReply = serde_json::from_slice(&reply.payload).map_err(|e| {
                AttemptError::Unknown(format!(
                    "unreadable reply to event {sequence} of {n}: {e}: {:?}",
                    String::from_utf8_lossy(&reply.payload)
                ))
            })?;
            if let Some(error) = ack.error {
                return Err(AttemptError::Refused {
                    err_code: error.err_code,
                    description: error.description,
                });
            }
            if !last || ack.count.is_none() {
                // A server without atomic batches stores each message as it comes (the event ids keep
                // that from storing anything twice).
                return Err(AttemptError::Refused {
                    err_code: 0,
                    description: format!(
                        "the server acknowledged event {sequence} of {n} as a single message: it does not \
                         publish atomic batches (nats-server 2.12 or later is needed)"
                    ),
                });
            }
            if ack.count != Some(n as u64) || ack.seq < n as u64 {
                // Not what ADR-50 promises; the batch's fate is unclear, and resending it is safe.
                return Err(AttemptError::Unknown(format!(
                    "commit acknowledged {:?} events ending at sequence {}, expected {n}",
                    ack.count, ack.seq
                )));
            }
            return Ok(Position {
                stream: ack.stream,
                sequence: ack.seq,
            });
        }
        unreachable!("the last event of a non-empty batch returns")
    }

    /// Publishes the batch's events one at a time with the per-event publisher (pipelined): already stored
    /// events come back as duplicates with their original positions.
    async fn one_by_one(&self, events: &[Prepared]) -> Result<Vec<Published>, BatchError> {
        let results: Vec<Result<Published, PublishError>> = self
            .single
            .publish_all(events.iter().map(|e| e.envelope.clone()).collect::<Vec<_>>())
            .collect()
            .await;
        let stored = results.iter().filter(|r| r.is_ok()).count();
        let mut published = Vec::with_capacity(events.len());
        for (event, result) in events.iter().zip(results) {
            match result {
                Ok(p) => published.push(p),
                Err(source) => {
                    return Err(BatchError::Event {
                        index: event.index,
                        stored,
                        source,
                    });
                }
            }
        }
        Ok(published)
    }
}

/// Refusals that say nothing was stored and a resend may succeed.
fn transient(err_code: u64) -> bool {
    matches!(
        err_code,
        code::INCOMPLETE | code::CLUSTER_NOT_AVAILABLE | code::CLUSTER_NOT_LEADER
    )
}

fn prepare(index: usize, envelope: pb::Envelope, future_tolerance_ms: i64) -> Result<Prepared, InvalidEvent> {
    let payload = Bytes::from(envelope.encode_to_vec());
    let event_id = envelope.event_id.clone();
    match validate_envelope(envelope).and_then(|valid| {
        let times = halcyon_schema::validate::check_times(
            valid.occurred_at_ms,
            valid.recorded_at_ms,
            crate::publisher::clock_ms(),
            future_tolerance_ms,
        );
        if times.is_empty() { Ok(valid) } else { Err(times) }
    }) {
        Ok(valid) => Ok(Prepared {
            index,
            subject: halcyon_schema::event_subject(&valid.agency, &valid.case),
            msg_id: valid.event_id.to_string(),
            agency: valid.agency,
            payload,
            envelope: valid.envelope,
        }),
        Err(problems) => Err(InvalidEvent {
            index,
            event_id,
            problems,
        }),
    }
}

/// Groups `publish_all`'s input into per-agency batches.
struct Grouper<I> {
    input: I,
    /// Each agency's events not yet sent, in input order; at most `batch_len` each.
    open: Vec<(AgencyId, Vec<Prepared>)>,
    exhausted: bool,
    batch_len: usize,
}

enum Group {
    /// One event refused before sending.
    Refused(BatchOutcome),
    /// One agency's events, to send as a batch.
    Batch(Vec<Prepared>),
}

impl<I: Iterator<Item = (usize, pb::Envelope)>> Grouper<I> {
    /// Reads input until a batch is full, an event is refused, or the input ends (then flushes the open
    /// groups one by one). `None` when everything has been handed out.
    fn next_group(&mut self, publisher: &BatchPublisher) -> Option<Group> {
        loop {
            if self.exhausted {
                return (!self.open.is_empty()).then(|| Group::Batch(self.open.remove(0).1));
            }
            let Some((index, envelope)) = self.input.next() else {
                self.exhausted = true;
                continue;
            };
            let refused = |error| {
                Some(Group::Refused(BatchOutcome {
                    indices: vec![index],
                    result: Err(error),
                }))
            };
            let event = match prepare(index, envelope, publisher.config.future_tolerance_ms) {
                Ok(event) => event,
                Err(invalid) => return refused(BatchError::Invalid(vec![invalid])),
            };
            if let Err(denied) = publisher.check_agency(&event.agency) {
                return refused(denied);
            }
            let slot = match self.open.iter().position(|(a, _)| a == &event.agency) {
                Some(slot) => slot,
                None => {
                    self.open
                        .push((event.agency.clone(), Vec::with_capacity(self.batch_len)));
                    self.open.len() - 1
                }
            };
            self.open[slot].1.push(event);
            if self.open[slot].1.len() >= self.batch_len {
                return Some(Group::Batch(self.open.remove(slot).1));
            }
        }
    }
}
