//! Corrections (`RecordCorrected`): what a child's facts say once the recording agencies' corrections are
//! applied. Every read model and every answer reads a child's facts through [`effective`]; the chronology
//! and `audit as-of` read the facts as recorded and see a correction only from when it was stored.
//!
//! The rules (docs/corrections.md):
//! - a correction counts only when the agency that published it recorded the corrected event, the corrected
//!   event is among the same child's facts and is not itself a correction, and a replacement is of the
//!   corrected event's kind (the projector quarantines any other correction with the reason, see
//!   [`refusal`]; the check here keeps a read model right even for a record that was never checked);
//! - of several corrections of one event, the latest the agency published (its stream's order) counts;
//! - entered in error: the event is left out; otherwise the event reads as its replacement, keeping its own
//!   id, times, category and position, and carries a [`Correction`] mark;
//! - corrections themselves are not case facts: they are left out of what is derived and shown.
//!
//! It depends only on the set of facts, like every read model, so a rebuild derives the same.

use std::borrow::Cow;
use std::collections::HashMap;

use halcyon_schema::pb;
use halcyon_schema::pb::event::Kind;

use crate::fact::Fact;

/// That a fact was corrected: by which event, when the bus stored that event, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub correction_event_id: String,
    /// When the bus stored the correction.
    pub corrected_at_ms: i64,
    /// When the correction says it was made (its occurred-at), for reconstructions by occurred time.
    pub occurred_ms: i64,
    pub entered_in_error: bool,
}

impl Correction {
    pub fn to_pb(&self) -> pb::CorrectionMark {
        pb::CorrectionMark {
            correction_event_id: self.correction_event_id.clone(),
            corrected_at: Some(halcyon_schema::convert::timestamp_from_millis(
                self.corrected_at_ms,
            )),
            entered_in_error: self.entered_in_error,
        }
    }
}

/// The correction of each corrected fact, by the corrected fact's event id: the latest one that counts.
pub fn corrections(facts: &[Fact]) -> HashMap<&str, (Correction, Option<&pb::Event>)> {
    let mut out: HashMap<&str, (Correction, Option<&pb::Event>, u64)> = HashMap::new();
    if !facts.iter().any(is_correction) {
        return HashMap::new();
    }
    let by_id: HashMap<&str, &Fact> = facts.iter().map(|f| (f.envelope.event_id.as_str(), f)).collect();
    for f in facts {
        let Some(Kind::RecordCorrected(c)) = f.kind() else {
            continue;
        };
        let Some(target) = by_id.get(c.corrected_event_id.as_str()) else {
            continue;
        };
        if refusal(target, f, c).is_some() {
            continue;
        }
        let later = out
            .get(c.corrected_event_id.as_str())
            .is_none_or(|(_, _, seq)| f.sequence > *seq);
        if later {
            out.insert(
                target.envelope.event_id.as_str(),
                (
                    Correction {
                        correction_event_id: f.envelope.event_id.clone(),
                        corrected_at_ms: f.stored_at_ms,
                        occurred_ms: f.occurred_ms(),
                        entered_in_error: c.entered_in_error,
                    },
                    c.replacement.as_deref().filter(|_| !c.entered_in_error),
                    f.sequence,
                ),
            );
        }
    }
    out.into_iter().map(|(k, (c, r, _))| (k, (c, r))).collect()
}

/// Why `correction` (a `RecordCorrected` fact, `c` its event) may not correct `target`, if it may not.
pub fn refusal(target: &Fact, correction: &Fact, c: &pb::RecordCorrected) -> Option<String> {
    if target.envelope.agency_id != correction.envelope.agency_id {
        return Some(format!(
            "corrects an event recorded by {}; only the agency that recorded an event may correct it",
            target.envelope.agency_id
        ));
    }
    if is_correction(target) {
        return Some("corrects a correction; correct the original event instead".into());
    }
    if target.stream != correction.stream || target.sequence >= correction.sequence {
        return Some("corrects an event published after it".into());
    }
    if let Some(replacement) = c.replacement.as_ref().and_then(|r| r.kind.as_ref())
        && !c.entered_in_error
    {
        let (was, is) = (target.kind().map(kind_name), kind_name(replacement));
        if was != Some(is) {
            return Some(format!(
                "the replacement is a {is}, the corrected event a {}",
                was.unwrap_or("event without a kind")
            ));
        }
    }
    None
}

fn kind_name(kind: &Kind) -> &'static str {
    use halcyon_schema::EventKindExt as _;
    kind.type_name()
}

pub fn is_correction(f: &Fact) -> bool {
    matches!(f.kind(), Some(Kind::RecordCorrected(_)))
}

/// A child's facts as its recording agencies corrected them (see the module docs), in the same order.
/// Borrowed, unchanged, when the child has no correction (almost every child).
pub fn effective(facts: &[Fact]) -> Cow<'_, [Fact]> {
    if !facts.iter().any(is_correction) {
        return Cow::Borrowed(facts);
    }
    let corrections = corrections(facts);
    let mut out = Vec::with_capacity(facts.len());
    for f in facts {
        if is_correction(f) {
            continue;
        }
        match corrections.get(f.envelope.event_id.as_str()) {
            None => out.push(f.clone()),
            Some((c, _)) if c.entered_in_error => {}
            Some((c, replacement)) => {
                let mut fact = f.clone();
                if let Some(replacement) = replacement {
                    fact.envelope.event = Some((*replacement).clone());
                }
                fact.corrected = Some(c.clone());
                out.push(fact);
            }
        }
    }
    Cow::Owned(out)
}

/// [`effective`] of the facts that had occurred by `until_ms` (corrections made later do not count yet).
pub fn effective_until(facts: &[Fact], until_ms: i64) -> Cow<'_, [Fact]> {
    if until_ms == i64::MAX || !facts.iter().any(is_correction) {
        return effective(facts);
    }
    let upto: Vec<Fact> = facts
        .iter()
        .filter(|f| f.occurred_ms() <= until_ms)
        .cloned()
        .collect();
    Cow::Owned(effective(&upto).into_owned())
}

/// The facts withdrawn by corrections (entered in error or replaced): by event id, the correction.
pub fn withdrawn(facts: &[Fact]) -> HashMap<String, Correction> {
    corrections(facts)
        .into_iter()
        .map(|(id, (c, _))| (id.to_owned(), c))
        .collect()
}
