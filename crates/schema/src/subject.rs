//! NATS subjects and stream names: the agency is the subject, and the subject is the identity.

use std::fmt;

use crate::ids::{AgencyId, CaseId, IdError};

/// Prefix of every agency event subject: `halcyon.events.<agency_id>.<case_id>`.
pub const EVENTS_PREFIX: &str = "halcyon.events";
/// Prefix of access-record subjects: `halcyon.audit.<agency_id>`.
pub const AUDIT_PREFIX: &str = "halcyon.audit";
/// The stream that holds access records.
pub const AUDIT_STREAM: &str = "AUDIT";
/// Prefix of the per-agency event streams.
pub const EVENTS_STREAM_PREFIX: &str = "EVENTS_";

pub fn event_subject(agency: &AgencyId, case: &CaseId) -> String {
    format!("{EVENTS_PREFIX}.{agency}.{case}")
}

/// The subject filter covering all of one agency's events.
pub fn agency_events_filter(agency: &AgencyId) -> String {
    format!("{EVENTS_PREFIX}.{agency}.>")
}

pub fn audit_subject(agency: &AgencyId) -> String {
    format!("{AUDIT_PREFIX}.{agency}")
}

/// Splits an event subject into the agency that published it and the case, or says what is wrong.
pub fn parse_event_subject(subject: &str) -> Result<(AgencyId, CaseId), IdError> {
    let rest = subject
        .strip_prefix(EVENTS_PREFIX)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| IdError::new("event subject", format!("must start with {EVENTS_PREFIX}.")))?;
    let mut parts = rest.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(agency), Some(case), None) => Ok((agency.parse()?, case.parse()?)),
        _ => Err(IdError::new(
            "event subject",
            "must be halcyon.events.<agency_id>.<case_id>",
        )),
    }
}

/// The name of an agency's event stream, `EVENTS_<AGENCY>`: upper case, `-` as `_`. Reversible because
/// agency ids never contain `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

impl StreamName {
    pub fn for_agency(agency: &AgencyId) -> Self {
        Self(format!(
            "{EVENTS_STREAM_PREFIX}{}",
            agency.as_str().to_ascii_uppercase().replace('-', "_")
        ))
    }

    /// The agency whose stream this is, if the name is an agency event stream.
    pub fn agency(&self) -> Option<AgencyId> {
        Self::agency_of(&self.0)
    }

    pub fn agency_of(name: &str) -> Option<AgencyId> {
        name.strip_prefix(EVENTS_STREAM_PREFIX)?
            .to_ascii_lowercase()
            .replace('_', "-")
            .parse()
            .ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let agency: AgencyId = "police-sy".parse().unwrap();
        let case: CaseId = "CR-2026-0042".parse().unwrap();
        let subject = event_subject(&agency, &case);
        assert_eq!(subject, "halcyon.events.police-sy.CR-2026-0042");
        assert_eq!(parse_event_subject(&subject).unwrap(), (agency.clone(), case));
        let stream = StreamName::for_agency(&agency);
        assert_eq!(stream.as_str(), "EVENTS_POLICE_SY");
        assert_eq!(stream.agency(), Some(agency));
        assert!(parse_event_subject("halcyon.events.police-sy").is_err());
        assert!(parse_event_subject("halcyon.events.police-sy.a.b").is_err());
        assert!(StreamName::agency_of("AUDIT").is_none());
    }
}
