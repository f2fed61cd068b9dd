//! The publisher agency systems embed: validates before sending, sends the event id as `Nats-Msg-Id`,
//! waits for JetStream's acknowledgement, retries with the same id, and pipelines bulk loads within a
//! bounded window. Returns the position as a consistency token.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use halcyon_schema::{AgencyId, Problem, check_envelope, event_subject, pb};
use prost::Message;

use crate::Position;
use crate::connect::Violations;

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Publishes awaiting acknowledgement at once in bulk loads.
    pub window: usize,
    /// Attempts per event for timeouts and "no responders", with exponential backoff.
    pub attempts_max: u32,
    pub backoff_initial: Duration,
    pub ack_timeout: Duration,
    /// When set, refuse envelopes of any other agency before they reach the server (which would refuse
    /// them too, but only as a timeout).
    pub agency: Option<AgencyId>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            window: 1024,
            attempts_max: 6,
            backoff_initial: Duration::from_millis(50),
            ack_timeout: Duration::from_secs(5),
            agency: None,
        }
    }
}

/// Why an event was not stored. Each variant says what the publisher should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Fix the event: every problem is listed.
    #[error("invalid event: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    /// Someone else wrote to the case first: reload and decide again.
    #[error("conflict on {subject}: expected last sequence {expected}, the stream has {actual}")]
    Conflict {
        subject: String,
        expected: u64,
        actual: String,
    },
    /// NATS or the stream is not there; safe to retry later with the same event id.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This identity may not publish that event.
    #[error("denied: {0}")]
    Denied(String),
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub position: Position,
    /// JetStream had already stored this event id (a retry or a re-send within the duplicate window).
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    config: PublisherConfig,
    violations: Option<Violations>,
}

impl Publisher {
    pub fn new(client: async_nats::Client, config: PublisherConfig) -> Self {
        let js = jetstream::context::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(config.window.max(1))
            .backpressure_on_inflight(true)
            .build(client);
        Self {
            js,
            config,
            violations: None,
        }
    }

    /// Reports a missing acknowledgement as `Denied` when the server said the identity may not publish
    /// there (see [`crate::connect::connect_watching`]).
    pub fn with_violations(mut self, violations: Violations) -> Self {
        self.violations = Some(violations);
        self
    }

    fn denied(&self, subject: &str) -> Option<PublishError> {
        let report = self.violations.as_ref()?.about(subject)?;
        Some(PublishError::Denied(format!("the NATS server refused: {report}")))
    }

    /// Validates and encodes one event, once, for sending and any retries.
    fn prepare(&self, envelope: &pb::Envelope) -> Result<Prepared, PublishError> {
        let checked = check_envelope(envelope).map_err(PublishError::Invalid)?;
        if let Some(me) = &self.config.agency
            && me != &checked.agency
        {
            return Err(PublishError::Denied(format!(
                "this publisher speaks for agency {me}, not {}",
                checked.agency
            )));
        }
        Ok(Prepared {
            subject: event_subject(&checked.agency, &checked.case),
            payload: bytes::Bytes::from(envelope.encode_to_vec()),
            msg_id: checked.event_id.to_string(),
        })
    }

    fn message(
        &self,
        p: &Prepared,
        expected_last_sequence: Option<u64>,
    ) -> jetstream::message::PublishMessage {
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(p.payload.clone())
            .message_id(&p.msg_id);
        if let Some(expected) = expected_last_sequence {
            publish = publish.expected_last_subject_sequence(expected);
        }
        publish
    }

    /// Validates, encodes and publishes one event; optionally only if the case subject's last sequence is
    /// `expected_last_sequence` (0: the case has no events yet).
    pub async fn publish(
        &self,
        envelope: &pb::Envelope,
        expected_last_sequence: Option<u64>,
    ) -> Result<Published, PublishError> {
        let prepared = self.prepare(envelope)?;
        self.send(&prepared, expected_last_sequence, 1).await
    }

    /// Sends a prepared event, retrying timeouts and "no responders" with the same id and bounded backoff;
    /// `attempt` counts attempts already made plus one.
    async fn send(
        &self,
        p: &Prepared,
        expected_last_sequence: Option<u64>,
        mut attempt: u32,
    ) -> Result<Published, PublishError> {
        let mut backoff = self.config.backoff_initial * attempt;
        loop {
            let result = match self
                .js
                .send_publish(p.subject.clone(), self.message(p, expected_last_sequence))
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match self.outcome(p, expected_last_sequence, result, attempt) {
                Outcome::Done(result) => return result,
                Outcome::Retry => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
            }
        }
    }

    /// What an acknowledgement (or its absence) means.
    fn outcome(
        &self,
        p: &Prepared,
        expected_last_sequence: Option<u64>,
        result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
        attempt: u32,
    ) -> Outcome {
        let subject = &p.subject;
        Outcome::Done(match result {
            Ok(ack) => Ok(Published {
                position: Position {
                    stream: ack.stream,
                    sequence: ack.sequence,
                },
                duplicate: ack.duplicate,
            }),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // The server says e.g. "wrong last sequence: wrong last sequence: 2 (code 400, error code 10071)".
                let detail = e.to_string();
                let actual = detail
                    .rsplit_once("sequence:")
                    .map(|(_, rest)| {
                        rest.trim_start()
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                    })
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("unknown ({detail})"));
                Err(PublishError::Conflict {
                    subject: subject.clone(),
                    expected: expected_last_sequence.unwrap_or_default(),
                    actual,
                })
            }
            Err(e) if e.kind() == PublishErrorKind::TimedOut && self.denied(subject).is_some() => {
                Err(self.denied(subject).expect("checked"))
            }
            Err(e) if retryable(e.kind()) && attempt < self.config.attempts_max => {
                tracing::debug!(attempt, error = %e, "publish not acknowledged; retrying with the same id");
                return Outcome::Retry;
            }
            Err(e) if retryable(e.kind()) => Err(PublishError::Unavailable(format!(
                "{subject}: no acknowledgement after {attempt} attempts ({e})"
            ))),
            Err(e) => Err(PublishError::Unavailable(format!("{subject}: {e}"))),
        })
    }

    /// Publishes many events with up to `window` awaiting acknowledgement; results come back in input
    /// order, one per event. Each event is validated and encoded once and sent as soon as the window
    /// allows; only an event whose acknowledgement fails is retried, alone, with the same id.
    pub fn publish_all<'a, I>(
        &'a self,
        envelopes: I,
    ) -> impl Stream<Item = Result<Published, PublishError>> + 'a
    where
        I: IntoIterator<Item = pb::Envelope> + 'a,
        I::IntoIter: 'a,
    {
        type InFlight<'b> = futures::future::BoxFuture<'b, Result<Published, PublishError>>;
        let window = self.config.window.max(1);
        let state = (
            envelopes.into_iter(),
            FuturesOrdered::<InFlight<'a>>::new(),
            false,
        );
        futures::stream::unfold(
            state,
            move |(mut pending, mut in_flight, mut drained)| async move {
                while !drained && in_flight.len() < window {
                    let Some(envelope) = pending.next() else {
                        drained = true;
                        break;
                    };
                    let fut: InFlight<'a> = match self.prepare(&envelope) {
                        Err(e) => Box::pin(futures::future::ready(Err(e))),
                        Ok(p) => match self
                            .js
                            .send_publish(p.subject.clone(), self.message(&p, None))
                            .await
                        {
                            Ok(ack) => Box::pin(async move {
                                match self.outcome(&p, None, ack.await, 1) {
                                    Outcome::Done(result) => result,
                                    Outcome::Retry => self.send(&p, None, 2).await,
                                }
                            }),
                            Err(_) => Box::pin(async move { self.send(&p, None, 1).await }),
                        },
                    };
                    in_flight.push_back(fut);
                }
                let next = in_flight.next().await?;
                Some((next, (pending, in_flight, drained)))
            },
        )
    }
}

/// An event validated and encoded once.
#[derive(Debug, Clone)]
struct Prepared {
    subject: String,
    payload: bytes::Bytes,
    msg_id: String,
}

enum Outcome {
    Done(Result<Published, PublishError>),
    Retry,
}

fn retryable(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut | PublishErrorKind::StreamNotFound | PublishErrorKind::BrokenPipe
    )
}
