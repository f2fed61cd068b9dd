//! Replay: the selected events of the agency streams, merged across streams by (stored time, stream,
//! sequence), read with ordered consumers holding one message per stream at a time, so memory stays
//! constant however long the history. Selects by stream, child (NHS number or halcyon child id), case,
//! sequence range and stored-time range. `halcyon replay` renders what it yields; the chronology names its
//! child the same way.

use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream;
use futures::{Stream, StreamExt};
use halcyon_bus::{BusError, RawMessage, Start, ordered_read};
use halcyon_schema::pb;
use halcyon_schema::{AgencyId, CaseId, ChildId, NhsNumber, StreamName, Upn, event_subject};
use prost::Message as _;

/// How long a read may hear nothing from a stream it expects more messages from.
const IDLE_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("no message from {stream} for {secs} s, though it should hold more")]
    Idle { stream: String, secs: u64 },
}

/// Which events to replay, parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Stream names, all agency streams when empty.
    pub streams: Vec<String>,
    pub child: Option<ChildMatch>,
    pub case: Option<CaseId>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    /// Stored-time bounds, Unix ms, inclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// A child to select events of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildMatch {
    Nhs(NhsNumber),
    Id(ChildId),
}

impl ChildMatch {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(nhs) = s.parse::<NhsNumber>() {
            return Ok(Self::Nhs(nhs));
        }
        if let Ok(id) = s.parse::<ChildId>() {
            return Ok(Self::Id(id));
        }
        Err(format!(
            "{s:?} is neither a valid NHS number (10 digits, mod-11 check) nor a halcyon child id (a UUID)"
        ))
    }

    pub fn matches(&self, envelope: &pb::Envelope) -> bool {
        let Some(child) = &envelope.child else {
            return false;
        };
        match self {
            Self::Nhs(n) => child.nhs_number == n.as_str(),
            Self::Id(id) => derived_child(envelope, child).as_ref() == Some(id),
        }
    }
}

/// The child an envelope is filed under unless a link event says otherwise (as the projector files it).
pub fn derived_child(envelope: &pb::Envelope, child: &pb::ChildIdentifiers) -> Option<ChildId> {
    if let Ok(nhs) = child.nhs_number.parse::<NhsNumber>() {
        return Some(ChildId::from_nhs(&nhs));
    }
    if let Ok(upn) = child.upn.parse::<Upn>() {
        return Some(ChildId::from_upn(&upn));
    }
    let agency = envelope.agency_id.parse::<AgencyId>().ok()?;
    (!child.local_id.is_empty()).then(|| ChildId::from_local(&agency, &child.local_id))
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages read from the streams.
    pub read: u64,
    /// Events that matched the selection and were written.
    pub written: u64,
    /// Streams read.
    pub streams: usize,
}

type Messages = Pin<Box<dyn Stream<Item = Result<RawMessage, BusError>> + Send>>;

/// One stream being read, with the message at its head.
struct Source {
    name: String,
    messages: Messages,
    /// Last sequence to read (the stream's last when the replay began, or --to-seq).
    end: u64,
    head: Option<RawMessage>,
    done: bool,
}

impl Source {
    /// Reads the next message into `head` unless the stream is done.
    async fn fill(&mut self, until_ms: Option<i64>) -> Result<(), ReplayError> {
        if self.done || self.head.is_some() {
            return Ok(());
        }
        let next = tokio::time::timeout(IDLE_MAX, self.messages.next())
            .await
            .map_err(|_| ReplayError::Idle {
                stream: self.name.clone(),
                secs: IDLE_MAX.as_secs(),
            })?;
        let Some(m) = next else {
            self.done = true;
            return Ok(());
        };
        let m = m?;
        if m.sequence > self.end || until_ms.is_some_and(|t| m.stored_at_ms > t) {
            self.done = true;
            return Ok(());
        }
        // The last message to read: the end, or nothing more matching the filter when the read began.
        if m.sequence >= self.end || m.pending == 0 {
            self.done = true;
        }
        self.head = Some(m);
        Ok(())
    }
}

/// A replay in progress: [`Replay::next`] yields the selected events in order.
pub struct Replay {
    sources: Vec<Source>,
    selection: Selection,
    summary: Summary,
    /// Messages the streams held to read when the replay began (for progress).
    pub total: u64,
}

impl Replay {
    /// Opens an ordered read of each selected stream.
    pub async fn open(js: &jetstream::Context, selection: &Selection) -> Result<Self, ReplayError> {
        let mut sources = Vec::new();
        let mut total = 0u64;
        for name in &selection.streams {
            let mut stream = js.get_stream(name).await.map_err(|e| BusError::JetStream {
                doing: format!("opening stream {name}"),
                source: e.into(),
            })?;
            let last = stream
                .info()
                .await
                .map_err(|e| BusError::JetStream {
                    doing: format!("reading stream {name}"),
                    source: e.into(),
                })?
                .state
                .last_sequence;
            let end = selection.to_seq.map_or(last, |t| t.min(last));
            let from = selection.from_seq.unwrap_or(1).max(1);
            if last == 0 || from > end {
                continue;
            }
            let start = match (selection.from_seq, selection.since_ms) {
                (None, Some(since)) => Start::StoredAt(since),
                _ => Start::Sequence(from),
            };
            let filter = match (&selection.case, StreamName::agency_of(name)) {
                (Some(case), Some(agency)) => Some(event_subject(&agency, case)),
                _ => None,
            };
            let read = ordered_read(js, name, start, filter.as_deref()).await?;
            if read.pending_at_start == 0 {
                continue;
            }
            total += read.pending_at_start.min(end - from + 1);
            sources.push(Source {
                name: name.clone(),
                messages: Box::pin(read.messages),
                end,
                head: None,
                done: false,
            });
        }
        let summary = Summary {
            streams: sources.len(),
            ..Default::default()
        };
        Ok(Self {
            sources,
            selection: selection.clone(),
            summary,
            total,
        })
    }

    /// The next selected event, with its envelope decoded (or why it would not decode); `None` at the end.
    pub async fn next(
        &mut self,
    ) -> Result<Option<(RawMessage, Result<pb::Envelope, prost::DecodeError>)>, ReplayError> {
        loop {
            for s in &mut self.sources {
                s.fill(self.selection.until_ms).await?;
            }
            let Some(next) = self
                .sources
                .iter_mut()
                .filter_map(|s| {
                    s.head
                        .as_ref()
                        .map(|m| (m.stored_at_ms, m.sequence))
                        .map(|k| (k, s))
                })
                .min_by(|(a, s), (b, t)| {
                    a.0.cmp(&b.0)
                        .then_with(|| s.name.cmp(&t.name))
                        .then(a.1.cmp(&b.1))
                })
                .map(|(_, s)| s)
            else {
                return Ok(None);
            };
            let m = next.head.take().expect("has a head");
            self.summary.read += 1;
            if self.selection.since_ms.is_some_and(|t| m.stored_at_ms < t) {
                continue;
            }
            let envelope = pb::Envelope::decode(m.payload.as_ref());
            if let Some(child) = &self.selection.child
                && !envelope.as_ref().is_ok_and(|e| child.matches(e))
            {
                continue;
            }
            self.summary.written += 1;
            return Ok(Some((m, envelope)));
        }
    }

    /// What the replay has read and yielded so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_is_an_nhs_number_or_a_child_id() {
        assert!(matches!(ChildMatch::parse("9434765919"), Ok(ChildMatch::Nhs(_))));
        let id = ChildId::from_nhs(&"9434765919".parse().unwrap()).to_string();
        assert!(matches!(ChildMatch::parse(&id), Ok(ChildMatch::Id(_))));
        let bad = ChildMatch::parse("9876544321").unwrap_err();
        assert!(bad.contains("neither a valid NHS number"), "{bad}");
    }

    #[test]
    fn an_nhs_number_and_its_child_id_select_the_same_envelopes() {
        let nhs: NhsNumber = "9434765919".parse().unwrap();
        let envelope = pb::Envelope {
            agency_id: "police-sy".into(),
            child: Some(pb::ChildIdentifiers {
                nhs_number: nhs.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(ChildMatch::Nhs(nhs.clone()).matches(&envelope));
        assert!(ChildMatch::Id(ChildId::from_nhs(&nhs)).matches(&envelope));
        let other: NhsNumber = "9434765870".parse().unwrap();
        assert!(!ChildMatch::Id(ChildId::from_nhs(&other)).matches(&envelope));
    }
}
