//! The vocabulary rules are written in: what a fact indicates ([`Indicator`]), and one fact as the rules
//! see it ([`Observation`]). [`Observation::from_event`] is the one place that knows which event (and which
//! field of it) indicates what.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use halcyon_schema::pb;
use halcyon_schema::pb::event::Kind;

/// What a fact indicates, as a rule file names it (`missing`, `intoxication-attendance`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Indicator {
    /// `ConcernRecorded`: an agency's concern about the child.
    Concern,
    /// `PoliceIntelligenceRecorded`.
    PoliceIntelligence,
    /// `ExploitationIndicatorRecorded`, any indicator.
    ExploitationIndicator,
    /// `MissingEpisodeReported`.
    Missing,
    /// `AttendanceConcernRecorded`: school absence.
    Absence,
    /// `ExclusionRecorded`.
    Exclusion,
    /// `HealthAttendanceRecorded` with reason intoxication.
    IntoxicationAttendance,
    /// `HealthAttendanceRecorded` with reason sexual health.
    SexualHealthAttendance,
    /// `HealthAttendanceRecorded` with reason self-harm.
    SelfHarmAttendance,
    /// `ExploitationIndicatorRecorded` with indicator older associate.
    OlderAssociate,
    /// … picked up in cars.
    PickedUpInCars,
    /// … unexplained gifts.
    UnexplainedGifts,
    /// … repeat missing (an agency's own judgement that episodes repeat).
    RepeatMissing,
    /// … substance misuse.
    SubstanceMisuse,
    /// … gang association.
    GangAssociation,
}

impl Indicator {
    pub const ALL: [Indicator; 15] = [
        Indicator::Concern,
        Indicator::PoliceIntelligence,
        Indicator::ExploitationIndicator,
        Indicator::Missing,
        Indicator::Absence,
        Indicator::Exclusion,
        Indicator::IntoxicationAttendance,
        Indicator::SexualHealthAttendance,
        Indicator::SelfHarmAttendance,
        Indicator::OlderAssociate,
        Indicator::PickedUpInCars,
        Indicator::UnexplainedGifts,
        Indicator::RepeatMissing,
        Indicator::SubstanceMisuse,
        Indicator::GangAssociation,
    ];

    /// The name used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::Concern => "concern",
            Indicator::PoliceIntelligence => "police-intelligence",
            Indicator::ExploitationIndicator => "exploitation-indicator",
            Indicator::Missing => "missing",
            Indicator::Absence => "absence",
            Indicator::Exclusion => "exclusion",
            Indicator::IntoxicationAttendance => "intoxication-attendance",
            Indicator::SexualHealthAttendance => "sexual-health-attendance",
            Indicator::SelfHarmAttendance => "self-harm-attendance",
            Indicator::OlderAssociate => "older-associate",
            Indicator::PickedUpInCars => "picked-up-in-cars",
            Indicator::UnexplainedGifts => "unexplained-gifts",
            Indicator::RepeatMissing => "repeat-missing",
            Indicator::SubstanceMisuse => "substance-misuse",
            Indicator::GangAssociation => "gang-association",
        }
    }

    /// Every indicator a decoded event meets (none for most events).
    pub fn of_event(kind: &Kind) -> BTreeSet<Indicator> {
        let mut out = BTreeSet::new();
        match kind {
            Kind::ConcernRecorded(_) => {
                out.insert(Indicator::Concern);
            }
            Kind::PoliceIntelligenceRecorded(_) => {
                out.insert(Indicator::PoliceIntelligence);
            }
            Kind::MissingEpisodeReported(_) => {
                out.insert(Indicator::Missing);
            }
            Kind::AttendanceConcernRecorded(_) => {
                out.insert(Indicator::Absence);
            }
            Kind::ExclusionRecorded(_) => {
                out.insert(Indicator::Exclusion);
            }
            Kind::HealthAttendanceRecorded(e) => {
                let reason = match e.reason() {
                    pb::AttendanceReason::Intoxication => Some(Indicator::IntoxicationAttendance),
                    pb::AttendanceReason::SexualHealth => Some(Indicator::SexualHealthAttendance),
                    pb::AttendanceReason::SelfHarm => Some(Indicator::SelfHarmAttendance),
                    _ => None,
                };
                out.extend(reason);
            }
            Kind::ExploitationIndicatorRecorded(e) => {
                out.insert(Indicator::ExploitationIndicator);
                let specific = match e.indicator() {
                    pb::ExploitationIndicator::OlderAssociate => Some(Indicator::OlderAssociate),
                    pb::ExploitationIndicator::PickedUpInCars => Some(Indicator::PickedUpInCars),
                    pb::ExploitationIndicator::UnexplainedGifts => Some(Indicator::UnexplainedGifts),
                    pb::ExploitationIndicator::RepeatMissing => Some(Indicator::RepeatMissing),
                    pb::ExploitationIndicator::SubstanceMisuse => Some(Indicator::SubstanceMisuse),
                    pb::ExploitationIndicator::GangAssociation => Some(Indicator::GangAssociation),
                    pb::ExploitationIndicator::Unspecified => None,
                };
                out.extend(specific);
            }
            _ => {}
        }
        out
    }
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Indicator {
    type Err = String;
    fn from_str(s: &str) -> Result<Indicator, String> {
        Indicator::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown indicator {s:?} (expected one of: {})",
                    Indicator::ALL.map(Indicator::as_str).join(", ")
                )
            })
    }
}

/// One of a child's facts, as the signal rules see it: where it is (a reference, never its content), when
/// it occurred, and what it indicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The envelope's event id.
    pub event_id: String,
    /// When it happened (the envelope's `occurred_at`), Unix milliseconds UTC.
    pub at_ms: i64,
    /// The publishing agency, its stream and the sequence there: where a reader finds the fact.
    pub agency_id: String,
    pub stream: String,
    pub sequence: u64,
    /// What it indicates (empty: nothing any rule reads).
    pub indicators: BTreeSet<Indicator>,
    /// When it reached Halcyon (the bus's stored time), Unix milliseconds: only what a signal is called
    /// depends on it ([`crate::identify`]), never whether or when a signal fires. [`Observation::new`] takes
    /// it to be when it happened.
    pub arrived_ms: i64,
}

impl Observation {
    pub fn new(event_id: &str, at_ms: i64, agency_id: &str, stream: &str, sequence: u64) -> Observation {
        Observation {
            event_id: event_id.to_owned(),
            at_ms,
            agency_id: agency_id.to_owned(),
            stream: stream.to_owned(),
            sequence,
            indicators: BTreeSet::new(),
            arrived_ms: at_ms,
        }
    }

    /// The same observation, arrived at `arrived_ms`.
    pub fn arrived(mut self, arrived_ms: i64) -> Observation {
        self.arrived_ms = arrived_ms;
        self
    }

    /// The order facts arrived in: (stored at, stream, sequence).
    pub(crate) fn arrival_key(&self) -> (i64, &str, u64) {
        (self.arrived_ms, &self.stream, self.sequence)
    }

    /// The same observation, also indicating `indicator`.
    pub fn with(mut self, indicator: Indicator) -> Observation {
        self.indicators.insert(indicator);
        self
    }

    /// Builds an observation from a decoded event and where it is stored.
    pub fn from_event(
        event_id: &str,
        at_ms: i64,
        agency_id: &str,
        stream: &str,
        sequence: u64,
        kind: &Kind,
    ) -> Observation {
        Observation {
            indicators: Indicator::of_event(kind),
            ..Observation::new(event_id, at_ms, agency_id, stream, sequence)
        }
    }

    /// The order facts are considered in: (occurred at, agency, stream, sequence, event id). Never the order
    /// they arrived in.
    pub(crate) fn order_key(&self) -> (i64, &str, &str, u64, &str) {
        (
            self.at_ms,
            &self.agency_id,
            &self.stream,
            self.sequence,
            &self.event_id,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_vocabulary() {
        for i in Indicator::ALL {
            assert_eq!(i.as_str().parse::<Indicator>(), Ok(i));
        }
        let e = "drunk".parse::<Indicator>().unwrap_err();
        assert!(e.contains("intoxication-attendance"), "{e}");
    }

    #[test]
    fn each_indicator_is_read_from_the_event_and_field_it_names() {
        let health = |reason: pb::AttendanceReason| {
            Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
                reason: reason as i32,
                ..Default::default()
            })
        };
        let exploitation = |i: pb::ExploitationIndicator| {
            Kind::ExploitationIndicatorRecorded(pb::ExploitationIndicatorRecorded {
                indicator: i as i32,
                ..Default::default()
            })
        };
        let cases: Vec<(Kind, Vec<Indicator>)> = vec![
            (
                Kind::ConcernRecorded(Default::default()),
                vec![Indicator::Concern],
            ),
            (
                Kind::MissingEpisodeReported(Default::default()),
                vec![Indicator::Missing],
            ),
            (
                Kind::AttendanceConcernRecorded(Default::default()),
                vec![Indicator::Absence],
            ),
            (
                Kind::ExclusionRecorded(Default::default()),
                vec![Indicator::Exclusion],
            ),
            (
                health(pb::AttendanceReason::Intoxication),
                vec![Indicator::IntoxicationAttendance],
            ),
            (
                health(pb::AttendanceReason::SexualHealth),
                vec![Indicator::SexualHealthAttendance],
            ),
            (health(pb::AttendanceReason::Injury), vec![]),
            (
                exploitation(pb::ExploitationIndicator::OlderAssociate),
                vec![Indicator::ExploitationIndicator, Indicator::OlderAssociate],
            ),
            (
                exploitation(pb::ExploitationIndicator::Unspecified),
                vec![Indicator::ExploitationIndicator],
            ),
            (Kind::MissingEpisodeClosed(Default::default()), vec![]),
        ];
        for (kind, want) in cases {
            let got: Vec<Indicator> = Indicator::of_event(&kind).into_iter().collect();
            assert_eq!(got, want, "{kind:?}");
        }
    }
}
