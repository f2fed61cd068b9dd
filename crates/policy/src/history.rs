//! Which policy was in force when. A case review asks what an agency could see at a past moment, and the
//! answer must use the rules of that moment, not today's. A history file lists the policy files with the
//! moment each came into force; the one in force at T is the entry with the latest `in_force_from` at or
//! before T. Entries are only ever added: an old file is never edited, a change is a new file with a new
//! `version`.
//!
//! ```toml
//! [[policy]]
//! file = "england.toml"          # relative to the history file
//! version = "england-2026.1"     # must equal the file's own `version`
//! in_force_from = "2026-01-01T00:00:00Z"
//! ```

use std::ops::Range;
use std::path::Path;

use halcyon_schema::convert::{format_timestamp, parse_timestamp, timestamp_from_millis, timestamp_millis};
use serde::Deserialize;
use toml::Spanned;

use crate::file::PolicyError;
use crate::policy::Policy;

/// One policy and when it came into force.
#[derive(Debug, Clone)]
pub struct PolicyInForce {
    pub policy: Policy,
    /// Unix ms from which it applies (until the next entry's).
    pub in_force_from_ms: i64,
}

impl PolicyInForce {
    /// `in_force_from` as RFC 3339, for display.
    pub fn in_force_from(&self) -> String {
        format_timestamp(&timestamp_from_millis(self.in_force_from_ms))
    }
}

/// The policies of a deployment, oldest first, each in force until the next.
#[derive(Debug, Clone)]
pub struct PolicyHistory {
    entries: Vec<PolicyInForce>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    #[serde(default)]
    policy: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    file: Spanned<String>,
    version: Spanned<String>,
    in_force_from: Spanned<String>,
}

impl PolicyHistory {
    /// A history of one policy, in force since the beginning of time (for `--policy FILE`).
    pub fn single(policy: Policy) -> Self {
        Self {
            entries: vec![PolicyInForce {
                policy,
                in_force_from_ms: i64::MIN,
            }],
        }
    }

    /// Reads a history file and every policy file it names (relative to it), checking that each file's
    /// version is the one the history names, versions are unique and dates strictly increase.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::whole_file(&name, format!("cannot read the policy history: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&src, &name, |file| Policy::load(&base.join(file)))
    }

    /// Parses a history, loading each named file with `load`.
    pub fn from_toml(
        src: &str,
        file_name: &str,
        mut load: impl FnMut(&str) -> Result<Policy, PolicyError>,
    ) -> Result<Self, PolicyError> {
        let at = |span: Range<usize>, reason: String| {
            let (line, column) = line_column(src, span.start);
            PolicyError {
                file: file_name.to_owned(),
                line,
                column,
                reason,
            }
        };
        let raw: RawHistory = toml::from_str(src).map_err(|e| match e.span() {
            Some(span) => at(span, e.message().to_owned()),
            None => PolicyError::whole_file(file_name, e.message().to_owned()),
        })?;
        if raw.policy.is_empty() {
            return Err(PolicyError::whole_file(
                file_name,
                "names no policy: add a [[policy]] with file, version and in_force_from",
            ));
        }
        let mut entries: Vec<PolicyInForce> = Vec::with_capacity(raw.policy.len());
        for entry in raw.policy {
            let entry = entry.into_inner();
            let from = parse_timestamp(entry.in_force_from.get_ref())
                .map_err(|e| at(entry.in_force_from.span(), format!("in_force_from: {e}")))?;
            let in_force_from_ms = timestamp_millis(&from);
            if let Some(previous) = entries.last()
                && previous.in_force_from_ms >= in_force_from_ms
            {
                return Err(at(
                    entry.in_force_from.span(),
                    format!(
                        "in_force_from must be later than the entry before it ({})",
                        previous.in_force_from()
                    ),
                ));
            }
            let policy = load(entry.file.get_ref())?;
            if policy.version() != entry.version.get_ref() {
                return Err(at(
                    entry.version.span(),
                    format!(
                        "version {:?} but {} says version {:?}",
                        entry.version.get_ref(),
                        entry.file.get_ref(),
                        policy.version()
                    ),
                ));
            }
            if entries.iter().any(|e| e.policy.version() == policy.version()) {
                return Err(at(
                    entry.version.span(),
                    format!("version {:?} is listed twice", policy.version()),
                ));
            }
            entries.push(PolicyInForce {
                policy,
                in_force_from_ms,
            });
        }
        Ok(Self { entries })
    }

    /// The policy in force at `at_ms`, or why none was.
    pub fn in_force_at(&self, at_ms: i64) -> Result<&PolicyInForce, String> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.in_force_from_ms <= at_ms)
            .ok_or_else(|| {
                format!(
                    "no policy was in force at {}: the first ({}) came into force at {}",
                    format_timestamp(&timestamp_from_millis(at_ms)),
                    self.entries[0].policy.version(),
                    self.entries[0].in_force_from()
                )
            })
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[PolicyInForce] {
        &self.entries
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ENGLAND_TOML;

    /// The shipped policy under another version.
    fn england(version: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(
            &ENGLAND_TOML.replacen(
                "version = \"england-2026.4\"",
                &format!("version = \"{version}\""),
                1,
            ),
            version,
        )
    }

    fn history(src: &str) -> Result<PolicyHistory, PolicyError> {
        PolicyHistory::from_toml(src, "history.toml", |file| {
            england(file.trim_end_matches(".toml"))
        })
    }

    const TWO: &str = r#"
[[policy]]
file = "v1.toml"
version = "v1"
in_force_from = "2026-01-01"

[[policy]]
file = "v2.toml"
version = "v2"
in_force_from = "2026-06-01T12:00:00Z"
"#;

    fn ms(t: &str) -> i64 {
        timestamp_millis(&parse_timestamp(t).unwrap())
    }

    #[test]
    fn the_policy_in_force_is_the_latest_that_had_started() {
        let h = history(TWO).unwrap();
        assert_eq!(h.entries().len(), 2);
        let at = |t: &str| h.in_force_at(ms(t)).map(|e| e.policy.version().to_owned());
        assert_eq!(at("2026-03-01T09:00:00Z").unwrap(), "v1");
        assert_eq!(at("2026-06-01T11:59:59.999Z").unwrap(), "v1");
        assert_eq!(at("2026-06-01T12:00:00Z").unwrap(), "v2");
        assert_eq!(at("2027-01-01").unwrap(), "v2");
        let before = at("2025-12-31T23:59:59Z").unwrap_err();
        assert!(
            before.contains("no policy was in force at 2025-12-31T23:59:59Z")
                && before.contains("v1")
                && before.contains("2026-01-01T00:00:00Z"),
            "{before}"
        );
    }

    #[test]
    fn a_single_policy_is_in_force_always() {
        let h = PolicyHistory::single(england("v1").unwrap());
        assert_eq!(h.in_force_at(0).unwrap().policy.version(), "v1");
    }

    #[test]
    fn broken_histories_are_refused_with_line_and_reason() {
        let cases = [
            (
                TWO.replacen("version = \"v2\"", "version = \"v3\"", 1),
                9,
                "but v2.toml says version \"v2\"",
            ),
            (
                TWO.replacen("2026-06-01T12:00:00Z", "2026-01-01", 1),
                10,
                "must be later",
            ),
            (
                TWO.replacen("2026-06-01T12:00:00Z", "June", 1),
                10,
                "is not a time",
            ),
            (
                TWO.replacen("v2.toml", "v1.toml", 1)
                    .replacen("\"v2\"", "\"v1\"", 1),
                9,
                "listed twice",
            ),
            (
                TWO.replacen("in_force_from = \"2026-01-01\"", "from = \"2026-01-01\"", 1),
                5,
                "unknown field",
            ),
        ];
        for (i, (src, line, reason)) in cases.iter().enumerate() {
            let e = history(src).unwrap_err();
            assert_eq!(e.file, "history.toml", "case {i}");
            assert_eq!(e.line, *line, "case {i}: {e}");
            assert!(e.reason.contains(reason), "case {i}: {e}");
        }
        let empty = history("").unwrap_err();
        assert!(empty.reason.contains("names no policy"), "{empty}");
    }

    #[test]
    fn the_shipped_history_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policy/history.toml");
        let h = PolicyHistory::load(&path).unwrap();
        assert_eq!(h.entries()[0].policy.version(), "england-2026.1");
        assert_eq!(h.entries()[1].policy.version(), "england-2026.2");
        assert_eq!(h.entries()[2].policy.version(), "england-2026.3");
        assert_eq!(h.entries()[3].policy.version(), "england-2026.4");
    }
}
