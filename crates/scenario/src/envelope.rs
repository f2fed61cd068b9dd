//! Hand-made envelopes for tests that need exact moments and kinds (the scenario generator picks its own).

use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::pb::{self, event::Kind};
use halcyon_schema::{EventId, EventKindExt, SCHEMA_VERSION};

/// A valid envelope of `kind` from `agency` about the child with NHS number `nhs`, in case `CASE-8`, occurred
/// and recorded at `at_ms`, with a fresh event id, the kind's default category and the agency's lawful basis
/// (law enforcement for police, public task otherwise).
pub fn envelope(agency: &str, practitioner: &str, nhs: &str, at_ms: i64, kind: Kind) -> pb::Envelope {
    let category = kind.default_category();
    pb::Envelope {
        event_id: EventId::new().to_string(),
        case_id: "CASE-8".into(),
        agency_id: agency.into(),
        occurred_at: Some(timestamp_from_millis(at_ms)),
        recorded_at: Some(timestamp_from_millis(at_ms)),
        actor: Some(pb::Actor {
            practitioner_id: practitioner.into(),
            ..Default::default()
        }),
        child: Some(pb::ChildIdentifiers {
            nhs_number: nhs.into(),
            ..Default::default()
        }),
        category: category.to_pb() as i32,
        schema_version: SCHEMA_VERSION,
        lawful_basis: if agency.starts_with("police") {
            pb::LawfulBasis::LawEnforcement
        } else {
            pb::LawfulBasis::PublicTask
        } as i32,
        event: Some(pb::Event { kind: Some(kind) }),
    }
}
