//! Envelope validation: every problem found, by field name, so a publisher fixes them all at once and the
//! projector can quarantine with a complete reason.

use crate::convert::{Category, timestamp_millis};
use crate::ids::{AgencyId, CaseId, EventId};
use crate::nhs::NhsNumber;
use crate::pb;
use crate::pb::event::Kind;
use crate::upn::Upn;

pub use crate::upcast::{SCHEMA_VERSION, SCHEMA_VERSION_OLDEST};

/// One thing wrong with an event. `Display` names the field first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    #[error("{field}: missing")]
    Missing { field: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("schema_version: unknown version {version} (this node accepts {oldest} to {known})")]
    UnknownSchemaVersion {
        version: u32,
        /// The newest version accepted.
        known: u32,
        /// The oldest version accepted (absent from records written when only one version was accepted).
        #[serde(default = "oldest_default")]
        oldest: u32,
    },
    #[error(
        "agency_id: envelope claims {claimed:?} but was published on agency {subject_agency:?}'s subject"
    )]
    AgencyMismatch { claimed: String, subject_agency: String },
    #[error("payload: cannot decode as a halcyon.v1.Envelope: {reason}")]
    Undecodable { reason: String },
    #[error("subject: {reason}")]
    BadSubject { reason: String },
}

fn oldest_default() -> u32 {
    1
}

impl Problem {
    /// Every [`Problem::kind`].
    pub const KINDS: [&'static str; 6] = [
        "missing",
        "invalid",
        "unknown_schema_version",
        "agency_mismatch",
        "undecodable",
        "bad_subject",
    ];

    /// The kind of problem, as one word (a metric label: no field values, no personal data).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing",
            Self::Invalid { .. } => "invalid",
            Self::UnknownSchemaVersion { .. } => "unknown_schema_version",
            Self::AgencyMismatch { .. } => "agency_mismatch",
            Self::Undecodable { .. } => "undecodable",
            Self::BadSubject { .. } => "bad_subject",
        }
    }

    fn missing(field: &str) -> Self {
        Self::Missing {
            field: field.to_owned(),
        }
    }

    /// The same problem, of a field inside `outer` (a correction's replacement event).
    fn within(self, outer: &str) -> Self {
        let nest = |field: String| format!("{outer}.{}", field.strip_prefix("event.").unwrap_or(&field));
        match self {
            Self::Missing { field } => Self::Missing { field: nest(field) },
            Self::Invalid { field, reason } => Self::Invalid {
                field: nest(field),
                reason,
            },
            other => other,
        }
    }

    fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// The largest envelope accepted, encoded (bytes). An envelope is stored exactly as published and read
/// back with the same decoder, so whatever passes is readable; this bound keeps every fact well inside a
/// gRPC answer (16 MiB) and the bus's message limit (1 MiB), with room for narratives of several pages.
pub const ENVELOPE_BYTES_MAX: usize = 64 * 1024;

/// The default for how far an event's `recorded_at` (or `occurred_at`) may lie ahead of the clock it is
/// checked against: the bus's stored time when the projector checks it, the publisher's clock when the
/// client library does. Five minutes covers ordinary clock drift between an agency's system and the bus. A
/// deployment states its own with `--future-tolerance-secs`, the same on every node and rebuild.
pub const CLOCK_TOLERANCE_MS: i64 = 5 * 60_000;

/// Checks an event's times against each other and a reference clock: it cannot have occurred after it was
/// recorded, and neither time may lie more than `tolerance_ms` (by default [`CLOCK_TOLERANCE_MS`]) after
/// `reference_ms`. The projector
/// passes the time the bus stored the message, which every rebuild reads again, so its verdict never
/// changes; a future-dated event is quarantined, never projected as a fact.
pub fn check_times(
    occurred_at_ms: i64,
    recorded_at_ms: i64,
    reference_ms: i64,
    tolerance_ms: i64,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if occurred_at_ms > recorded_at_ms {
        problems.push(Problem::invalid(
            "occurred_at",
            "is after recorded_at: an event is recorded after it happens",
        ));
    }
    let limit = reference_ms.saturating_add(tolerance_ms);
    for (field, at) in [("occurred_at", occurred_at_ms), ("recorded_at", recorded_at_ms)] {
        if at > limit {
            problems.push(Problem::invalid(
                field,
                format!(
                    "is in the future: more than {} s after the time it was checked against (the bus's stored time, or the publisher's clock)",
                    tolerance_ms / 1000
                ),
            ));
        }
    }
    problems
}

/// An envelope that passed validation, with its identifiers parsed.
#[derive(Debug, Clone)]
pub struct ValidEnvelope {
    pub event_id: EventId,
    pub agency: AgencyId,
    pub case: CaseId,
    pub nhs: Option<NhsNumber>,
    pub upn: Option<Upn>,
    pub local_id: Option<String>,
    pub category: Category,
    pub occurred_at_ms: i64,
    pub recorded_at_ms: i64,
    /// The schema version it was published with (`envelope` is read as the current one).
    pub published_version: u32,
    /// The envelope, in the current shape.
    pub envelope: pb::Envelope,
}

impl ValidEnvelope {
    pub fn kind(&self) -> &Kind {
        self.envelope
            .event
            .as_ref()
            .and_then(|e| e.kind.as_ref())
            .expect("validated envelopes have an event")
    }
}

/// Maximum length of an agency-local child identifier.
pub const LOCAL_ID_MAX_LEN: usize = 64;

/// Checks an envelope and returns it with parsed identifiers, read as the current shape (an older accepted
/// version upcast: `upcast.rs`), or every problem found.
pub fn validate_envelope(envelope: pb::Envelope) -> Result<ValidEnvelope, Vec<Problem>> {
    let c = check_envelope(&envelope)?;
    let published_version = envelope.schema_version;
    let envelope = crate::upcast::upcast(envelope);
    Ok(ValidEnvelope {
        published_version,
        event_id: c.event_id,
        agency: c.agency,
        case: c.case,
        nhs: c.nhs,
        upn: c.upn,
        local_id: c.local_id,
        // The upcast may fix the category (`upcast::fixed_category`).
        category: crate::Category::from_wire(envelope.category).unwrap_or(c.category),
        occurred_at_ms: c.occurred_at_ms,
        recorded_at_ms: c.recorded_at_ms,
        envelope,
    })
}

/// What checking an envelope found: its identifiers, parsed.
#[derive(Debug, Clone)]
pub struct Checked {
    pub event_id: EventId,
    pub agency: AgencyId,
    pub case: CaseId,
    pub nhs: Option<NhsNumber>,
    pub upn: Option<Upn>,
    pub local_id: Option<String>,
    pub category: Category,
    pub occurred_at_ms: i64,
    pub recorded_at_ms: i64,
}

/// Checks an envelope without taking it (publishers check, then encode the same value).
pub fn check_envelope(envelope: &pb::Envelope) -> Result<Checked, Vec<Problem>> {
    let mut problems = Vec::new();
    let size = prost::Message::encoded_len(envelope);
    if size > ENVELOPE_BYTES_MAX {
        problems.push(Problem::invalid(
            "payload",
            format!("{size} bytes, over the limit of {ENVELOPE_BYTES_MAX}"),
        ));
    }
    let mut parse = |field: &str, value: &str| -> Option<()> {
        if value.is_empty() {
            problems.push(Problem::missing(field));
            None
        } else {
            Some(())
        }
    };
    let event_id = parse("event_id", &envelope.event_id).map(|_| envelope.event_id.parse::<EventId>());
    let case = parse("case_id", &envelope.case_id).map(|_| envelope.case_id.parse::<CaseId>());
    let agency = parse("agency_id", &envelope.agency_id).map(|_| envelope.agency_id.parse::<AgencyId>());
    let event_id = keep(&mut problems, "event_id", event_id);
    let case = keep(&mut problems, "case_id", case);
    let agency = keep(&mut problems, "agency_id", agency);

    let occurred_at_ms = envelope.occurred_at.as_ref().map(timestamp_millis);
    let recorded_at_ms = envelope.recorded_at.as_ref().map(timestamp_millis);
    if occurred_at_ms.is_none() {
        problems.push(Problem::missing("occurred_at"));
    }
    if recorded_at_ms.is_none() {
        problems.push(Problem::missing("recorded_at"));
    }
    for (field, ts) in [
        ("occurred_at", &envelope.occurred_at),
        ("recorded_at", &envelope.recorded_at),
    ] {
        if let Some(ts) = ts
            && !(0..1_000_000_000).contains(&ts.nanos)
        {
            problems.push(Problem::invalid(field, "nanos must be within 0..1e9"));
        }
    }
    match &envelope.actor {
        None => problems.push(Problem::missing("actor")),
        Some(actor) if actor.practitioner_id.is_empty() && actor.system.is_empty() => {
            problems.push(Problem::missing("actor.practitioner_id"))
        }
        Some(_) => {}
    }

    let (mut nhs, mut upn, mut local_id) = (None, None, None);
    match &envelope.child {
        None => problems.push(Problem::missing("child")),
        Some(child) => {
            if child.nhs_number.is_empty() && child.upn.is_empty() && child.local_id.is_empty() {
                problems.push(Problem::missing(
                    "child.nhs_number (or child.upn or child.local_id)",
                ));
            }
            if !child.nhs_number.is_empty() {
                nhs = keep(&mut problems, "child.nhs_number", Some(child.nhs_number.parse()));
            }
            if !child.upn.is_empty() {
                upn = keep(&mut problems, "child.upn", Some(child.upn.parse()));
            }
            if !child.local_id.is_empty() {
                if child.local_id.len() > LOCAL_ID_MAX_LEN || child.local_id.chars().any(char::is_control) {
                    problems.push(Problem::invalid(
                        "child.local_id",
                        format!("must be at most {LOCAL_ID_MAX_LEN} printable characters"),
                    ));
                } else {
                    local_id = Some(child.local_id.clone());
                }
            }
            if !child.date_of_birth.is_empty() && !is_date(&child.date_of_birth) {
                problems.push(Problem::invalid(
                    "child.date_of_birth",
                    "must be a date, YYYY-MM-DD",
                ));
            }
        }
    }

    let category = match pb::DataCategory::try_from(envelope.category) {
        Ok(pb::DataCategory::Unspecified) => {
            problems.push(Problem::missing("category"));
            None
        }
        Ok(c) => Category::from_pb(c),
        Err(_) => {
            problems.push(Problem::invalid(
                "category",
                format!("unknown value {}", envelope.category),
            ));
            None
        }
    };
    if !crate::upcast::accepted(envelope.schema_version) {
        problems.push(Problem::UnknownSchemaVersion {
            version: envelope.schema_version,
            known: SCHEMA_VERSION,
            oldest: SCHEMA_VERSION_OLDEST,
        });
    } else if let Some(event) = &envelope.event {
        crate::upcast::check_shape(envelope.schema_version, event, "event", &mut problems);
    }
    match pb::LawfulBasis::try_from(envelope.lawful_basis) {
        Ok(pb::LawfulBasis::Unspecified) => problems.push(Problem::missing("lawful_basis")),
        Ok(_) => {}
        Err(_) => problems.push(Problem::invalid(
            "lawful_basis",
            format!("unknown value {}", envelope.lawful_basis),
        )),
    }
    match envelope.event.as_ref().and_then(|e| e.kind.as_ref()) {
        None => problems.push(Problem::missing("event")),
        Some(kind) => {
            check_event(kind, nhs.is_some(), &mut problems);
            // D14 is a signal's own category, which reaches the MASH of the child's area with no other
            // relationship: a fact of any other kind stating it would reach that MASH too.
            if category == Some(Category::SIGNAL)
                && crate::upcast::fixed_category(kind) != Some(Category::SIGNAL)
            {
                problems.push(Problem::invalid(
                    "category",
                    format!(
                        "D14 (multi-agency signal) is the category of a signal and its outcome only, not of {}",
                        crate::catalogue::EventKindExt::type_name(kind)
                    ),
                ));
            }
        }
    }

    match (event_id, agency, case, category, occurred_at_ms, recorded_at_ms) {
        (
            Some(event_id),
            Some(agency),
            Some(case),
            Some(category),
            Some(occurred_at_ms),
            Some(recorded_at_ms),
        ) if problems.is_empty() => Ok(Checked {
            event_id,
            agency,
            case,
            nhs,
            upn,
            local_id,
            category,
            occurred_at_ms,
            recorded_at_ms,
        }),
        _ => Err(problems),
    }
}

/// Whether `s` is a date as `time` parses `[year]-[month]-[day]`. The usual shape, ten characters
/// `dddd-dd-dd`, is checked directly (`time` accepts it exactly when it names a calendar date); anything
/// else goes to `time`'s parser.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9].iter().all(|&i| b[i].is_ascii_digit())
    {
        let number = |digits: &[u8]| digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        let (year, month, day) = (number(&b[..4]), number(&b[5..7]), number(&b[8..]));
        if let Ok(month) = time::Month::try_from(month as u8)
            && time::Date::from_calendar_date(i32::from(year), month, day as u8).is_ok()
        {
            return true;
        }
    }
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

fn keep<T, E: std::fmt::Display>(
    problems: &mut Vec<Problem>,
    field: &str,
    r: Option<Result<T, E>>,
) -> Option<T> {
    match r? {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(Problem::invalid(field, e));
            None
        }
    }
}

/// The fields a link or an unlink needs: the child's NHS number (what it links to or from), a UPN or an
/// agency-local id, each well formed.
fn identifier_link(
    problems: &mut Vec<Problem>,
    kind: &str,
    why_nhs: &str,
    has_nhs: bool,
    (upn, local_agency_id, local_id): (&str, &str, &str),
) {
    if !has_nhs {
        problems.push(Problem::missing(&format!("child.nhs_number ({why_nhs})")));
    }
    if upn.is_empty() && local_id.is_empty() {
        problems.push(Problem::missing(&format!("event.{kind}.upn (or local_id)")));
    }
    if !upn.is_empty()
        && let Err(err) = upn.parse::<Upn>()
    {
        problems.push(Problem::invalid(&format!("event.{kind}.upn"), err));
    }
    if !local_id.is_empty() {
        let field = format!("event.{kind}.local_agency_id");
        if local_agency_id.is_empty() {
            problems.push(Problem::missing(&field));
        } else if let Err(e) = local_agency_id.parse::<AgencyId>() {
            problems.push(Problem::invalid(&field, e));
        }
    }
}

/// Checks the fields an event kind cannot do without.
fn check_event(kind: &Kind, has_nhs: bool, problems: &mut Vec<Problem>) {
    let agency = |problems: &mut Vec<Problem>, field: &str, value: &str| {
        if value.is_empty() {
            problems.push(Problem::missing(field));
        } else if let Err(e) = value.parse::<AgencyId>() {
            problems.push(Problem::invalid(field, e));
        }
    };
    let categories = |problems: &mut Vec<Problem>, field: &str, values: &[i32]| {
        if values.is_empty() {
            problems.push(Problem::missing(field));
        }
        for v in values {
            if Category::from_wire(*v).is_none() {
                problems.push(Problem::invalid(field, format!("unknown category value {v}")));
            }
        }
    };
    match kind {
        Kind::StrategyDiscussionHeld(e) => {
            for a in &e.participant_agency_ids {
                agency(
                    problems,
                    "event.strategy_discussion_held.participant_agency_ids",
                    a,
                );
            }
        }
        Kind::InitialConferenceHeld(e) => {
            for a in &e.core_group_agency_ids {
                agency(problems, "event.initial_conference_held.core_group_agency_ids", a);
            }
        }
        Kind::InvolvementStarted(pb::InvolvementStarted {
            involved_agency_id,
            kind,
        })
        | Kind::InvolvementEnded(pb::InvolvementEnded {
            involved_agency_id,
            kind,
        }) => {
            agency(
                problems,
                "event.involvement.involved_agency_id",
                involved_agency_id,
            );
            if !matches!(pb::InvolvementKind::try_from(*kind), Ok(k) if k != pb::InvolvementKind::Unspecified)
            {
                problems.push(Problem::missing("event.involvement.kind"));
            }
        }
        Kind::ConsentRecorded(e) => categories(problems, "event.consent_recorded.categories", &e.categories),
        Kind::ConsentWithdrawn(e) => {
            categories(problems, "event.consent_withdrawn.categories", &e.categories)
        }
        Kind::ConsentExemptionRecorded(e) => {
            categories(
                problems,
                "event.consent_exemption_recorded.categories",
                &e.categories,
            );
            if !matches!(pb::ExemptionReason::try_from(e.reason), Ok(r) if r != pb::ExemptionReason::Unspecified)
            {
                problems.push(Problem::missing("event.consent_exemption_recorded.reason"));
            }
        }
        Kind::OriginatorApprovalGranted(e) => {
            if let Err(err) = e.approved_event_id.parse::<EventId>() {
                problems.push(Problem::invalid(
                    "event.originator_approval_granted.approved_event_id",
                    err,
                ));
            }
            agency(
                problems,
                "event.originator_approval_granted.recipient_agency_id",
                &e.recipient_agency_id,
            );
        }
        Kind::ShareDecisionRecorded(e) => {
            agency(
                problems,
                "event.share_decision_recorded.recipient_agency_id",
                &e.recipient_agency_id,
            );
            if e.reason.is_empty() {
                problems.push(Problem::missing("event.share_decision_recorded.reason"));
            }
        }
        Kind::IdentifierLinked(e) => identifier_link(
            problems,
            "identifier_linked",
            "an IdentifierLinked event links to it",
            has_nhs,
            (&e.upn, &e.local_agency_id, &e.local_id),
        ),
        Kind::IdentifierUnlinked(e) => {
            identifier_link(
                problems,
                "identifier_unlinked",
                "the child the identifier was wrongly linked to",
                has_nhs,
                (&e.upn, &e.local_agency_id, &e.local_id),
            );
            if e.reason.trim().is_empty() {
                problems.push(Problem::missing("event.identifier_unlinked.reason"));
            }
        }
        Kind::NhsNumberSuperseded(e) => {
            if !has_nhs {
                problems.push(Problem::missing(
                    "child.nhs_number (the number that supersedes the old one)",
                ));
            }
            if let Err(err) = e.superseded_nhs_number.parse::<NhsNumber>() {
                problems.push(Problem::invalid(
                    "event.nhs_number_superseded.superseded_nhs_number",
                    err,
                ));
            }
            if e.reason.trim().is_empty() {
                problems.push(Problem::missing("event.nhs_number_superseded.reason"));
            }
        }
        Kind::RecordCorrected(e) => {
            if let Err(err) = e.corrected_event_id.parse::<EventId>() {
                problems.push(Problem::invalid("event.record_corrected.corrected_event_id", err));
            }
            if e.reason.trim().is_empty() {
                problems.push(Problem::missing("event.record_corrected.reason"));
            }
            match (
                e.replacement.as_ref().and_then(|r| r.kind.as_ref()),
                e.entered_in_error,
            ) {
                (None, false) => problems.push(Problem::missing(
                    "event.record_corrected.replacement (or entered_in_error)",
                )),
                (Some(_), true) => problems.push(Problem::invalid(
                    "event.record_corrected.replacement",
                    "a correction either replaces the event or withdraws it as entered in error, not both",
                )),
                (Some(Kind::RecordCorrected(_)), false) => problems.push(Problem::invalid(
                    "event.record_corrected.replacement",
                    "a correction cannot be the replacement; correct the original event again",
                )),
                (Some(replacement), false) => {
                    let mut inner = Vec::new();
                    check_event(replacement, has_nhs, &mut inner);
                    problems.extend(
                        inner
                            .into_iter()
                            .map(|p| p.within("event.record_corrected.replacement")),
                    );
                }
                (None, true) => {}
            }
        }
        Kind::BreakGlassReviewed(e) => crate::review::check_break_glass_reviewed(e, problems),
        Kind::SignalOutcomeRecorded(e) => crate::review::check_signal_outcome_recorded(e, problems),
        Kind::ContactReceived(_)
        | Kind::ReferralReceived(_)
        | Kind::ReferralDecisionRecorded(_)
        | Kind::ReferralAcknowledged(_)
        | Kind::AgencyCheckRequested(_)
        | Kind::AgencyCheckResponded(_)
        | Kind::AssessmentStarted(_)
        | Kind::AssessmentCompleted(_)
        | Kind::Section47EnquiryStarted(_)
        | Kind::Section47EnquiryConcluded(_)
        | Kind::ChildProtectionPlanStarted(_)
        | Kind::CategoryChanged(_)
        | Kind::ChildProtectionPlanEnded(_)
        | Kind::CoreGroupMeetingHeld(_)
        | Kind::ReviewConferenceHeld(_)
        | Kind::LookedAfterPeriodStarted(_)
        | Kind::LookedAfterPeriodEnded(_)
        | Kind::LookedAfterReviewHeld(_)
        | Kind::PoliceProtectionStarted(_)
        | Kind::PoliceProtectionEnded(_)
        | Kind::EmergencyProtectionOrderMade(_)
        | Kind::MissingEpisodeReported(_)
        | Kind::MissingEpisodeClosed(_)
        | Kind::ReturnHomeInterviewCompleted(_)
        | Kind::AttendanceConcernRecorded(_)
        | Kind::ExclusionRecorded(_)
        | Kind::HealthAttendanceRecorded(_)
        | Kind::PoliceIntelligenceRecorded(_)
        | Kind::ExploitationIndicatorRecorded(_)
        | Kind::ConcernRecorded(_)
        | Kind::SeriousIncidentNotified(_)
        | Kind::RapidReviewCompleted(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::parse_timestamp;

    fn valid() -> pb::Envelope {
        pb::Envelope {
            event_id: EventId::new().to_string(),
            case_id: "C-1".into(),
            agency_id: "csc-rotherham".into(),
            occurred_at: Some(parse_timestamp("2026-03-02T09:00:00Z").unwrap()),
            recorded_at: Some(parse_timestamp("2026-03-02T09:05:00Z").unwrap()),
            actor: Some(pb::Actor {
                practitioner_id: "sw-17".into(),
                role: "social worker".into(),
                system: "mosaic".into(),
            }),
            child: Some(pb::ChildIdentifiers {
                nhs_number: "9434765919".into(),
                ..Default::default()
            }),
            category: pb::DataCategory::D2ContactReferral as i32,
            schema_version: SCHEMA_VERSION,
            lawful_basis: pb::LawfulBasis::PublicTask as i32,
            event: Some(pb::Event {
                kind: Some(Kind::ReferralReceived(pb::ReferralReceived {
                    referrer: Some(pb::ReferrerDetails {
                        source_code: "2A".into(),
                        ..Default::default()
                    }),
                    summary: "school reports bruising".into(),
                })),
            }),
        }
    }

    fn problems(e: pb::Envelope) -> Vec<String> {
        validate_envelope(e)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_envelope_passes_with_parsed_ids() {
        let v = validate_envelope(valid()).unwrap();
        assert_eq!(v.agency.as_str(), "csc-rotherham");
        assert_eq!(v.category, Category::CONTACT_REFERRAL);
        assert_eq!(v.nhs.unwrap().as_str(), "9434765919");
    }

    #[test]
    fn every_problem_is_reported_by_name() {
        let mut e = valid();
        e.event_id.clear();
        e.child = Some(pb::ChildIdentifiers {
            nhs_number: "9876544321".into(),
            ..Default::default()
        });
        e.schema_version = 7;
        e.occurred_at = None;
        e.lawful_basis = 0;
        let p = problems(e);
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p.contains(&"event_id: missing".to_string()), "{p:?}");
        assert!(
            p.iter()
                .any(|s| s.starts_with("child.nhs_number: invalid NHS number")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|s| s.starts_with("schema_version: unknown version 7")),
            "{p:?}"
        );
        assert!(p.contains(&"occurred_at: missing".to_string()), "{p:?}");
        assert!(p.contains(&"lawful_basis: missing".to_string()), "{p:?}");
    }

    #[test]
    fn a_correction_replaces_or_withdraws_and_its_replacement_is_checked_as_an_event() {
        let corrected = |c: pb::RecordCorrected| {
            let mut e = valid();
            e.event = Some(pb::Event {
                kind: Some(Kind::RecordCorrected(Box::new(c))),
            });
            e.category = Category::IDENTITY.to_pb() as i32;
            match validate_envelope(e) {
                Ok(_) => Vec::new(),
                Err(p) => p.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }
        };
        let base = pb::RecordCorrected {
            corrected_event_id: "0190a000-0000-7000-8000-000000000001".into(),
            reason: "misrecorded".into(),
            replacement: None,
            entered_in_error: true,
        };
        assert_eq!(corrected(base.clone()), Vec::<String>::new());
        let neither = corrected(pb::RecordCorrected {
            entered_in_error: false,
            ..base.clone()
        });
        assert_eq!(
            neither,
            vec!["event.record_corrected.replacement (or entered_in_error): missing".to_string()]
        );
        let strategy = |participants: Vec<String>| pb::Event {
            kind: Some(Kind::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
                participant_agency_ids: participants,
                ..Default::default()
            })),
        };
        let both = corrected(pb::RecordCorrected {
            replacement: Some(Box::new(strategy(vec!["police-sy".into()]))),
            ..base.clone()
        });
        assert!(both[0].contains("not both"), "{both:?}");
        let bad_inner = corrected(pb::RecordCorrected {
            replacement: Some(Box::new(strategy(vec!["Not An Agency".into()]))),
            entered_in_error: false,
            ..base.clone()
        });
        assert!(
            bad_inner
                .iter()
                .any(|p| p.starts_with("event.record_corrected.replacement.strategy_discussion_held")),
            "{bad_inner:?}"
        );
        let nested = corrected(pb::RecordCorrected {
            replacement: Some(Box::new(pb::Event {
                kind: Some(Kind::RecordCorrected(Box::new(base.clone()))),
            })),
            entered_in_error: false,
            ..base.clone()
        });
        assert!(
            nested[0].contains("correct the original event again"),
            "{nested:?}"
        );
        let no_reason = corrected(pb::RecordCorrected {
            reason: " ".into(),
            ..base
        });
        assert_eq!(
            no_reason,
            vec!["event.record_corrected.reason: missing".to_string()]
        );
    }

    #[test]
    fn only_a_signal_outcome_may_state_the_signal_category() {
        let mut e = valid();
        e.category = pb::DataCategory::D14Signal as i32;
        let p: Vec<String> = validate_envelope(e)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            p.iter()
                .any(|p| p.starts_with("category: D14") && p.contains("not of ReferralReceived")),
            "{p:?}"
        );
    }

    #[test]
    fn missing_child_event_and_category_are_named() {
        let mut e = valid();
        e.child = Some(pb::ChildIdentifiers::default());
        e.event = None;
        e.category = 0;
        e.actor = None;
        let p = problems(e);
        assert!(
            p.iter()
                .any(|s| s.starts_with("child.nhs_number (or child.upn or child.local_id): missing")),
            "{p:?}"
        );
        assert!(p.contains(&"event: missing".to_string()), "{p:?}");
        assert!(p.contains(&"category: missing".to_string()), "{p:?}");
        assert!(p.contains(&"actor: missing".to_string()), "{p:?}");
    }

    #[test]
    fn bad_identifiers_are_named() {
        let mut e = valid();
        e.event_id = "9b2a4f6e-1c3d-4e5f-8a7b-6c5d4e3f2a1b".into();
        e.agency_id = "Police SY".into();
        e.child = Some(pb::ChildIdentifiers {
            upn: "Q207000016049".into(),
            ..Default::default()
        });
        let p = problems(e);
        assert!(
            p.iter()
                .any(|s| s.starts_with("event_id: invalid event id: must be a UUIDv7")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|s| s.starts_with("agency_id: invalid agency id")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|s| s.starts_with("child.upn: invalid UPN: check letter")),
            "{p:?}"
        );
    }

    #[test]
    fn dates_are_judged_as_time_parses_them() {
        let by_time =
            |s: &str| time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok();
        let mut cases: Vec<String> = [
            "2015-06-01",
            "0000-01-01",
            "9999-12-31",
            "2024-02-29",
            "2023-02-29",
            "2100-02-29",
            "2000-02-29",
            "2015-00-10",
            "2015-13-10",
            "2015-06-00",
            "2015-06-31",
            "2015-04-30",
            "2015-6-01",
            "2015-06-1",
            "15-06-01",
            "+2015-06-01",
            "-2015-06-01",
            "2015/06/01",
            "2015-06-01 ",
            " 2015-06-01",
            "2015-06-01T00:00",
            "20150601",
            "２015-06-01",
            "201a-06-01",
            "2015-0a-01",
            "2015-06-0a",
            "",
            "-",
            "2015--6-01",
            "2015-06--1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for year in [0, 1, 4, 100, 400, 1900, 1999, 2000, 2001, 2004, 2024, 9999] {
            for month in 0..=13 {
                for day in 0..=32 {
                    cases.push(format!("{year:04}-{month:02}-{day:02}"));
                }
            }
        }
        for s in &cases {
            assert_eq!(is_date(s), by_time(s), "{s:?}");
        }
    }

    #[test]
    fn event_content_is_checked() {
        let mut e = valid();
        e.event = Some(pb::Event {
            kind: Some(Kind::ConsentWithdrawn(pb::ConsentWithdrawn {
                categories: vec![],
            })),
        });
        assert_eq!(problems(e), vec!["event.consent_withdrawn.categories: missing"]);
    }
}
