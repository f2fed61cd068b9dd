//! The access trail as an auditor reads it, straight from the streams: every access record in the AUDIT
//! stream with the sequence of the message that holds it, the break-glass reviews agencies have published,
//! and which break-glass uses are still unreviewed.
//!
//! A review is an event (`BreakGlassReviewed`) that the reviewer's agency publishes on its own stream about
//! the child the access concerned, so the review trail has the guarantees of the case history: immutable,
//! validated, and attributable by its subject (an agency can publish only as itself). A break-glass use is
//! unreviewed while no valid review names its record id.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::audit::decode_records;
use halcyon_bus::{BoxError, BusError, Position, RawMessage, list_event_streams, ordered_messages};
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::pb::{self, event::Kind};
use halcyon_schema::subject::AUDIT_STREAM;
use halcyon_schema::{AgencyId, CaseId, EventId, SCHEMA_VERSION, check_envelope, parse_event_subject};
use prost::Message;

/// Longest wait for the next message of a stream being read to its end.
const READ_WAIT: Duration = Duration::from_secs(10);

/// An access record and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedRecord {
    /// Sequence in the AUDIT stream of the message holding the record (one message may hold several).
    pub sequence: u64,
    pub record: pb::AccessRecord,
}

/// A published review of a break-glass access.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// The reviewing agency (from the subject, which the server vouches for).
    pub agency: AgencyId,
    pub position: Position,
    pub event_id: String,
    pub occurred_at_ms: i64,
    pub review: pb::BreakGlassReviewed,
}

/// Calls `each` with every message `stream` holds now, oldest first.
async fn read_to_end(
    js: &jetstream::Context,
    stream: &str,
    mut each: impl FnMut(RawMessage) -> Result<(), BusError>,
) -> Result<(), BusError> {
    let js_error = |doing: String, e: BoxError| BusError::JetStream { doing, source: e };
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|e| js_error(format!("opening stream {stream}"), e.into()))?;
    let state = handle
        .info()
        .await
        .map_err(|e| js_error(format!("reading stream {stream}"), e.into()))?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(());
    }
    let last = state.last_sequence;
    let mut messages = std::pin::pin!(ordered_messages(js, stream, state.first_sequence).await?);
    loop {
        let m = tokio::time::timeout(READ_WAIT, messages.next())
            .await
            .map_err(|_| BusError::Consume {
                stream: stream.to_owned(),
                source: format!("no message within {READ_WAIT:?}").into(),
            })?
            .ok_or_else(|| BusError::Consume {
                stream: stream.to_owned(),
                source: "the consumer ended early".into(),
            })??;
        let sequence = m.sequence;
        each(m)?;
        if sequence >= last {
            return Ok(());
        }
    }
}

/// Every access record in the AUDIT stream, oldest first.
pub async fn access_records(js: &jetstream::Context) -> Result<Vec<LocatedRecord>, BusError> {
    let mut out = Vec::new();
    read_to_end(js, AUDIT_STREAM, |m| {
        let records = decode_records(&m.payload).map_err(|e| BusError::Consume {
            stream: AUDIT_STREAM.into(),
            source: format!("message {} is not a set of access records: {e}", m.sequence).into(),
        })?;
        out.extend(records.into_iter().map(|record| LocatedRecord {
            sequence: m.sequence,
            record,
        }));
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Brings `store`'s index of the access log (`halcyon_projector::access_index`) up to what AUDIT holds
/// now, from where it stood; returns the records added. A review store answers from the index, as a node
/// does, instead of reading the whole log for each question. Each chunk is written on the blocking pool
/// while the read goes on being served (a read left unpolled for long loses its consumer).
pub async fn index_audit(
    js: &jetstream::Context,
    store: &std::sync::Arc<halcyon_projector::Projector>,
) -> Result<u64, BusError> {
    let failed = |e: String| BusError::Consume {
        stream: AUDIT_STREAM.into(),
        source: format!("indexing the access log: {e}").into(),
    };
    let from = store.access_position().map_err(|e| failed(e.to_string()))? + 1;
    let mut audit = js
        .get_stream(AUDIT_STREAM)
        .await
        .map_err(|e| BusError::JetStream {
            doing: format!("opening stream {AUDIT_STREAM}"),
            source: e.into(),
        })?;
    let state = audit
        .info()
        .await
        .map_err(|e| BusError::JetStream {
            doing: format!("reading stream {AUDIT_STREAM}"),
            source: e.into(),
        })?
        .state
        .clone();
    let last = state.last_sequence;
    if state.messages == 0 || from > last {
        return Ok(0);
    }
    let messages = ordered_messages(js, AUDIT_STREAM, state.first_sequence.max(from)).await?;
    let mut chunks = std::pin::pin!(messages.ready_chunks(1000));
    let mut added = 0u64;
    let mut writing: Option<tokio::task::JoinHandle<Result<(), halcyon_projector::ProjectorError>>> = None;
    loop {
        let chunk = tokio::time::timeout(READ_WAIT, chunks.next())
            .await
            .map_err(|_| failed(format!("no message within {READ_WAIT:?}")))?
            .ok_or_else(|| failed("the read of AUDIT ended early".into()))?;
        let (mut rows, mut through) = (Vec::new(), 0);
        for m in chunk {
            let m = m?;
            rows.extend(halcyon_projector::access_index::AccessRow::of_message(
                m.sequence, &m.payload,
            ));
            through = m.sequence;
        }
        added += rows.len() as u64;
        // One chunk written at a time, in order, while the next is read.
        if let Some(previous) = writing.take() {
            previous
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
        }
        let s = store.clone();
        writing = Some(tokio::task::spawn_blocking(move || {
            s.index_access(through, &rows)
        }));
        if through >= last {
            break;
        }
    }
    if let Some(previous) = writing.take() {
        previous
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(added)
}

/// The access records the index of `store` holds that `selection` selects, oldest first.
pub fn indexed_records(
    store: &halcyon_projector::Projector,
    selection: &halcyon_projector::access_index::AccessSelection,
) -> Result<Vec<LocatedRecord>, halcyon_projector::ProjectorError> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store.access_before(selection, before, 1000)?;
        let Some(last) = page.last() else {
            break;
        };
        before = Some(last.cursor);
        let more = page.len() == 1000;
        out.extend(page.into_iter().map(|row| LocatedRecord {
            sequence: row.cursor.sequence,
            record: row.record,
        }));
        if !more {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

/// The review in a stored message, if it holds a valid `BreakGlassReviewed` published by the agency it
/// names. Invalid envelopes are the projector's business (quarantine); they review nothing.
pub fn review_in(m: &RawMessage) -> Option<Review> {
    let envelope = pb::Envelope::decode(m.payload.as_ref()).ok()?;
    let Some(Kind::BreakGlassReviewed(review)) = envelope.event.as_ref().and_then(|e| e.kind.as_ref()) else {
        return None;
    };
    let (subject_agency, _) = parse_event_subject(&m.subject).ok()?;
    let checked = check_envelope(&envelope).ok()?;
    if checked.agency != subject_agency {
        return None;
    }
    Some(Review {
        agency: subject_agency,
        position: Position {
            stream: m.stream.clone(),
            sequence: m.sequence,
        },
        event_id: envelope.event_id.clone(),
        occurred_at_ms: checked.occurred_at_ms,
        review: review.clone(),
    })
}

/// Every valid break-glass review in the agency streams, by the access record it reviews (oldest first).
pub async fn reviews(js: &jetstream::Context) -> Result<BTreeMap<String, Vec<Review>>, BusError> {
    let mut out: BTreeMap<String, Vec<Review>> = BTreeMap::new();
    for stream in list_event_streams(js).await? {
        read_to_end(js, &stream, |m| {
            if let Some(review) = review_in(&m) {
                out.entry(review.review.access_record_id.clone())
                    .or_default()
                    .push(review);
            }
            Ok(())
        })
        .await?;
    }
    for reviews in out.values_mut() {
        reviews.sort_by_key(|r| r.occurred_at_ms);
    }
    Ok(out)
}

/// Who records a review, and what they found.
#[derive(Debug, Clone)]
pub struct ReviewDecision {
    /// The reviewer's agency: publishes the review on its own stream.
    pub agency: AgencyId,
    /// The case in that agency's stream that holds its reviews.
    pub case: CaseId,
    /// The reviewer's practitioner id.
    pub reviewer_id: String,
    pub outcome: pb::BreakGlassReviewOutcome,
    pub reason: String,
}

/// The event recording a review of `record` (at `sequence` in AUDIT), about the child it concerned (`child`:
/// identifiers by which every agency knows it — an NHS number or a UPN, never a local id), at `now_ms`.
pub fn review_envelope(
    record: &LocatedRecord,
    child: pb::ChildIdentifiers,
    decision: &ReviewDecision,
    now_ms: i64,
) -> pb::Envelope {
    pb::Envelope {
        event_id: EventId::new().to_string(),
        case_id: decision.case.to_string(),
        agency_id: decision.agency.to_string(),
        occurred_at: Some(timestamp_from_millis(now_ms)),
        recorded_at: Some(timestamp_from_millis(now_ms)),
        actor: Some(pb::Actor {
            practitioner_id: decision.reviewer_id.clone(),
            role: "privacy officer".into(),
            system: "halcyon audit access review".into(),
        }),
        child: Some(pb::ChildIdentifiers {
            nhs_number: child.nhs_number,
            upn: child.upn,
            ..Default::default()
        }),
        category: pb::DataCategory::D13AccessLog as i32,
        schema_version: SCHEMA_VERSION,
        // Accountability for processing (UK GDPR Art 5(2)) is a legal obligation.
        lawful_basis: pb::LawfulBasis::LegalObligation as i32,
        event: Some(pb::Event {
            kind: Some(Kind::BreakGlassReviewed(pb::BreakGlassReviewed {
                access_record_id: record.record.record_id.clone(),
                audit_sequence: record.sequence,
                accessing_agency_id: record.record.agency_id.clone(),
                reviewer_id: decision.reviewer_id.clone(),
                outcome: decision.outcome as i32,
                reason: decision.reason.clone(),
            })),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LocatedRecord {
        LocatedRecord {
            sequence: 7,
            record: pb::AccessRecord {
                record_id: uuid::Uuid::now_v7().to_string(),
                agency_id: "yjs-rotherham".into(),
                break_glass_relied_on: true,
                ..Default::default()
            },
        }
    }

    fn decision() -> ReviewDecision {
        ReviewDecision {
            agency: "csc-rotherham".parse().unwrap(),
            case: "access-reviews".parse().unwrap(),
            reviewer_id: "dpo-01".into(),
            outcome: pb::BreakGlassReviewOutcome::Justified,
            reason: "child missing overnight".into(),
        }
    }

    fn message(subject: &str, envelope: &pb::Envelope) -> RawMessage {
        RawMessage {
            stream: "EVENTS_CSC_ROTHERHAM".into(),
            sequence: 3,
            subject: subject.into(),
            payload: envelope.encode_to_vec().into(),
            stored_at_ms: 0,
            pending: 0,
        }
    }

    #[test]
    fn a_review_envelope_is_valid_and_is_read_back_as_a_review() {
        let r = record();
        let child = pb::ChildIdentifiers {
            nhs_number: "9434765919".into(),
            local_id: "SYP-1".into(),
            given_name: "never copied".into(),
            ..Default::default()
        };
        let envelope = review_envelope(&r, child, &decision(), 1_767_603_600_000);
        let checked = check_envelope(&envelope).unwrap();
        assert_eq!(
            checked.local_id, None,
            "a local id would name another agency's child"
        );
        assert_eq!(envelope.child.as_ref().unwrap().given_name, "");
        let read = review_in(&message("halcyon.events.csc-rotherham.access-reviews", &envelope)).unwrap();
        assert_eq!(read.agency.as_str(), "csc-rotherham");
        assert_eq!(read.review.access_record_id, r.record.record_id);
        assert_eq!(read.review.audit_sequence, 7);
        assert_eq!(read.review.accessing_agency_id, "yjs-rotherham");
    }

    #[test]
    fn a_review_on_another_agencys_subject_or_invalid_reviews_nothing() {
        let envelope = review_envelope(
            &record(),
            pb::ChildIdentifiers {
                nhs_number: "9434765919".into(),
                ..Default::default()
            },
            &decision(),
            1_767_603_600_000,
        );
        assert!(review_in(&message("halcyon.events.police-sy.access-reviews", &envelope)).is_none());
        let mut blank = envelope.clone();
        if let Some(Kind::BreakGlassReviewed(r)) = blank.event.as_mut().and_then(|e| e.kind.as_mut()) {
            r.reason.clear();
        }
        assert!(review_in(&message("halcyon.events.csc-rotherham.access-reviews", &blank)).is_none());
        let mut other = envelope;
        other.event = Some(pb::Event {
            kind: Some(Kind::ConcernRecorded(pb::ConcernRecorded::default())),
        });
        assert!(review_in(&message("halcyon.events.csc-rotherham.access-reviews", &other)).is_none());
    }
}
