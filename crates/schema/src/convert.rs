//! Conversions between generated and domain types: data categories, event kinds, timestamps.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::pb;
pub use pbjson_types::Timestamp;

/// A data category of docs/sharing.md, `D0`..`D14`. The unit the sharing policy decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Category(u8);

impl Category {
    pub const COUNT: u8 = 15;
    pub const IDENTITY: Self = Self(0);
    pub const STATUS_FLAG: Self = Self(1);
    pub const CONTACT_REFERRAL: Self = Self(2);
    pub const ASSESSMENT: Self = Self(3);
    pub const STRATEGY_S47: Self = Self(4);
    pub const CONFERENCE_PLAN: Self = Self(5);
    pub const HEALTH_CLINICAL: Self = Self(6);
    pub const SEXUAL_HEALTH: Self = Self(7);
    pub const POLICE_INTELLIGENCE: Self = Self(8);
    pub const ATTENDANCE: Self = Self(9);
    pub const MISSING: Self = Self(10);
    pub const EXPLOITATION: Self = Self(11);
    pub const REFERRER_IDENTITY: Self = Self(12);
    pub const ACCESS_LOG: Self = Self(13);
    /// A multi-agency signal itself: its rule, when it fired, references to the facts it cites.
    pub const SIGNAL: Self = Self(14);

    pub fn new(n: u8) -> Option<Self> {
        (n < Self::COUNT).then_some(Self(n))
    }

    pub fn index(self) -> u8 {
        self.0
    }

    /// The category this one was split out of, which a policy that does not know this one decides it as:
    /// signals (D14) were exploitation records (D11) until policy england-2026.3 gave them their own
    /// category, so a review under an earlier policy decides them as that policy did.
    pub fn split_from(self) -> Option<Self> {
        (self == Self::SIGNAL).then_some(Self::EXPLOITATION)
    }

    pub fn all() -> impl Iterator<Item = Self> {
        (0..Self::COUNT).map(Self)
    }

    pub fn name(self) -> &'static str {
        [
            "identity and identifiers",
            "status flag",
            "contact / referral summary",
            "assessment outcome and factors",
            "strategy discussion and s47",
            "conference minutes and CP plan",
            "health clinical detail",
            "sexual health / termination / SARC",
            "police intelligence",
            "attendance / exclusion",
            "missing episodes, return interviews",
            "exploitation indicators and risk",
            "referrer / third-party identity",
            "access log about a child",
            "multi-agency signal",
        ][usize::from(self.0)]
    }

    pub fn to_pb(self) -> pb::DataCategory {
        pb::DataCategory::try_from(i32::from(self.0) + 1).expect("every category has a wire value")
    }

    pub fn from_pb(c: pb::DataCategory) -> Option<Self> {
        match c {
            pb::DataCategory::Unspecified => None,
            other => Self::new((other as i32 - 1) as u8),
        }
    }

    pub fn from_wire(value: i32) -> Option<Self> {
        pb::DataCategory::try_from(value).ok().and_then(Self::from_pb)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "D{}", self.0)
    }
}

impl FromStr for Category {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.strip_prefix('D')
            .and_then(|n| n.parse::<u8>().ok())
            .and_then(Self::new)
            .ok_or_else(|| format!("unknown data category {s:?} (expected D0 to D14)"))
    }
}

impl TryFrom<String> for Category {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Category> for String {
    fn from(c: Category) -> String {
        c.to_string()
    }
}

pub use crate::catalogue::{EVENT_TYPE_NAMES, EventKindExt};

/// Milliseconds since the Unix epoch, for sort keys. Saturates rather than overflowing.
pub fn timestamp_millis(ts: &Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos / 1_000_000))
}

pub fn timestamp_from_millis(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn timestamp_from_datetime(dt: OffsetDateTime) -> Timestamp {
    let nanos = dt.unix_timestamp_nanos();
    Timestamp {
        seconds: (nanos.div_euclid(1_000_000_000)) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

pub fn datetime_from_timestamp(ts: &Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos))
        .ok()
}

/// RFC 3339 in UTC, for display.
pub fn format_timestamp(ts: &Timestamp) -> String {
    datetime_from_timestamp(ts)
        .and_then(|dt| dt.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{}s", ts.seconds))
}

/// Parses RFC 3339 (`2026-03-01T09:00:00Z`) or a bare date (`2026-03-01`, midnight UTC).
pub fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(timestamp_from_datetime(dt));
    }
    let date =
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| {
            format!("{s:?} is not a time: use RFC 3339 (2026-03-01T09:00:00Z) or a date (2026-03-01)")
        })?;
    Ok(timestamp_from_datetime(date.midnight().assume_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_round_trip() {
        for c in Category::all() {
            assert_eq!(Category::from_pb(c.to_pb()), Some(c));
            assert_eq!(c.to_string().parse::<Category>(), Ok(c));
        }
        assert!("D15".parse::<Category>().is_err());
        assert_eq!(Category::from_pb(pb::DataCategory::Unspecified), None);
    }

    #[test]
    fn timestamps_round_trip() {
        let ts = parse_timestamp("2026-03-01T09:30:00.250Z").unwrap();
        assert_eq!(timestamp_from_millis(timestamp_millis(&ts)), ts);
        assert_eq!(
            format_timestamp(&parse_timestamp("2026-03-01").unwrap()),
            "2026-03-01T00:00:00Z"
        );
        assert!(parse_timestamp("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
