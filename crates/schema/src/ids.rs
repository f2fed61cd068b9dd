//! Identifiers that are valid by construction: agencies, cases, children and events.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::nhs::NhsNumber;
use crate::upn::Upn;

pub use crate::id_error::IdError;

/// Checks a NATS-subject-safe token: 1..=max of `[a-z0-9-]` (or `[A-Za-z0-9_-]` when `wide`), not
/// starting or ending with `-`.
fn check_token(what: &'static str, s: &str, max: usize, wide: bool) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::new(what, format!("must be 1 to {max} characters")));
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let ok_wide = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !s.chars().all(|c| if wide { ok_wide(c) } else { ok(c) }) {
        let allowed = if wide {
            "letters, digits, '-' and '_'"
        } else {
            "lower-case letters, digits and '-'"
        };
        return Err(IdError::new(what, format!("may contain only {allowed}")));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(IdError::new(what, "must not start or end with '-'"));
    }
    Ok(())
}

/// An agency's identifier, e.g. `csc-rotherham` or `police-sy`. Safe as a NATS subject token; it maps
/// one-to-one to the stream name `EVENTS_CSC_ROTHERHAM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgencyId(String);

impl AgencyId {
    pub const MAX_LEN: usize = 32;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AgencyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        check_token("agency id", s, Self::MAX_LEN, false)?;
        Ok(Self(s.to_owned()))
    }
}

/// An agency's case identifier: the aggregate an event belongs to; one NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaseId(String);

impl CaseId {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CaseId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        check_token("case id", s, Self::MAX_LEN, true)?;
        Ok(Self(s.to_owned()))
    }
}

/// An event's identifier: a UUIDv7, so ids sort by creation time and double as `Nats-Msg-Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(Uuid);

impl EventId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for EventId {
    /// Wraps a UUID the caller knows to be v7 (e.g. one generated deterministically by a test scenario).
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let u = Uuid::parse_str(s).map_err(|e| IdError::new("event id", e.to_string()))?;
        if u.get_version_num() != 7 {
            return Err(IdError::new(
                "event id",
                format!("must be a UUIDv7, got version {}", u.get_version_num()),
            ));
        }
        Ok(Self(u))
    }
}

/// Halcyon's identifier for a child, derived deterministically from the first identifier an agency used
/// for them (so every node, and every rebuild, derives the same id). Other identifiers reach the same
/// child only through explicit `IdentifierLinked` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChildId(Uuid);

/// Namespace for deriving child ids (UUIDv5).
const CHILD_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_7f0e_2b8d_4c3e_9f51_0d2a_b7c4_e813);

impl ChildId {
    pub fn from_nhs(nhs: &NhsNumber) -> Self {
        Self(Uuid::new_v5(&CHILD_NAMESPACE, format!("nhs:{nhs}").as_bytes()))
    }

    pub fn from_upn(upn: &Upn) -> Self {
        Self(Uuid::new_v5(&CHILD_NAMESPACE, format!("upn:{upn}").as_bytes()))
    }

    pub fn from_local(agency: &AgencyId, local_id: &str) -> Self {
        Self(Uuid::new_v5(
            &CHILD_NAMESPACE,
            format!("local:{agency}:{local_id}").as_bytes(),
        ))
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(b))
    }
}

impl FromStr for ChildId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| IdError::new("child id", e.to_string()))
    }
}

macro_rules! string_conversions {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    )*};
}
string_conversions!(AgencyId, CaseId, EventId, ChildId);

impl fmt::Display for AgencyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agency_ids_are_subject_tokens() {
        assert!("police-sy".parse::<AgencyId>().is_ok());
        for bad in [
            "",
            "Police",
            "a.b",
            "a*",
            "a>",
            "-x",
            "x-",
            "a b",
            &"x".repeat(33),
        ] {
            assert!(bad.parse::<AgencyId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn event_ids_must_be_v7() {
        assert!(EventId::new().to_string().parse::<EventId>().is_ok());
        let v4 = "9b2a4f6e-1c3d-4e5f-8a7b-6c5d4e3f2a1b";
        assert!(v4.parse::<EventId>().unwrap_err().to_string().contains("UUIDv7"));
    }

    #[test]
    fn child_ids_are_deterministic_and_distinct_per_identifier_kind() {
        let nhs: NhsNumber = "9434765919".parse().unwrap();
        assert_eq!(ChildId::from_nhs(&nhs), ChildId::from_nhs(&nhs));
        let agency: AgencyId = "police-sy".parse().unwrap();
        assert_ne!(
            ChildId::from_nhs(&nhs),
            ChildId::from_local(&agency, "9434765919")
        );
    }
}
