//! The policy's vocabulary: purposes, roles, access modes, projections, involvements, lawful bases and
//! the case-stage and relationship terms a policy file may use. Every term has one spelling in files and
//! on the command line, shown by `Display` and accepted by `FromStr`.

use std::fmt;
use std::str::FromStr;

use halcyon_schema::pb;

/// Declares a closed vocabulary: an enum, its spellings, `Display`, `FromStr`, serde as a string, and a
/// compact set type for the hot path.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal $(| $alias:literal)*),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// Every term, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The term as written in policy files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }

            /// Bit for compact sets (at most 16 terms per vocabulary, checked when it builds).
            #[allow(dead_code, reason = "not every vocabulary is kept in a set")]
            pub(crate) fn bit(self) -> u16 {
                const { assert!($name::ALL.len() <= 16, "a vocabulary kept in a Bits set has at most 16 terms") };
                1u16 << (self as u16)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text $(| $alias)* => Ok($name::$variant),)*
                    _ => {
                        let known: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
                        Err(format!("unknown {} {s:?} (known: {})", $what, known.join(", ")))
                    }
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// Why the caller is asking (ARCHITECTURE.md). Every request states one; the policy lists the purposes
    /// allowed for each category.
    Purpose, "purpose" {
        Safeguarding => "safeguarding",
        DirectCare => "direct_care" | "direct-care",
        LawEnforcement => "law_enforcement" | "law-enforcement",
        StatutoryReview => "statutory_review" | "statutory-review",
        Audit => "audit",
    }
}

impl Purpose {
    /// The domain purpose of a wire purpose; `None` for `PURPOSE_UNSPECIFIED` (a call without a purpose is
    /// refused).
    pub fn from_pb(p: pb::Purpose) -> Option<Purpose> {
        match p {
            pb::Purpose::Unspecified => None,
            pb::Purpose::Safeguarding => Some(Purpose::Safeguarding),
            pb::Purpose::DirectCare => Some(Purpose::DirectCare),
            pb::Purpose::LawEnforcement => Some(Purpose::LawEnforcement),
            pb::Purpose::StatutoryReview => Some(Purpose::StatutoryReview),
            pb::Purpose::Audit => Some(Purpose::Audit),
        }
    }

    pub fn to_pb(self) -> pb::Purpose {
        match self {
            Purpose::Safeguarding => pb::Purpose::Safeguarding,
            Purpose::DirectCare => pb::Purpose::DirectCare,
            Purpose::LawEnforcement => pb::Purpose::LawEnforcement,
            Purpose::StatutoryReview => pb::Purpose::StatutoryReview,
            Purpose::Audit => pb::Purpose::Audit,
        }
    }
}

vocabulary! {
    /// The principal's role within its agency. Cells name the roles they serve; a cell that names none
    /// serves the file's default roles.
    Role, "role" {
        Practitioner => "practitioner",
        MashMember => "mash-member" | "mash_member",
        PrivacyOfficer => "privacy-officer" | "privacy_officer",
        Operator => "operator",
    }
}

vocabulary! {
    /// An access mode of docs/sharing.md. The table's "owner" and "own" cells are not modes: an agency always
    /// sees its own records in full (rule `own`); for other agencies' records those cells are `query`
    /// ("owner", another local authority) or `never` ("own").
    Mode, "mode" {
        /// P: delivered to the recipient without asking, given the cell's relationship.
        Pushed => "pushed",
        /// Q: on query, with a legitimate relationship.
        Query => "query",
        /// F: a flag only (CP-IS style), usually as a standing entitlement.
        Flag => "flag",
        /// N: only with the originating agency's approval.
        OriginatorApproval => "originator-approval",
        /// –: never by default.
        Never => "never",
    }
}

vocabulary! {
    /// How much of a fact survives field minimisation. Ordered: `Flag < Summary < Full`.
    Projection, "projection" {
        /// That the fact exists, its kind and the status-flag fields (plan category, unborn, the owning
        /// authority's phone numbers); no content.
        Flag => "flag",
        /// The fact without free-text narratives or referrer details.
        Summary => "summary",
        /// Everything recorded, except referrer identity unless separately granted.
        Full => "full",
    }
}

impl Projection {
    pub fn to_pb(self) -> pb::Projection {
        match self {
            Projection::Flag => pb::Projection::Flag,
            Projection::Summary => pb::Projection::Summary,
            Projection::Full => pb::Projection::Full,
        }
    }
}

vocabulary! {
    /// A relationship between the principal's agency and the child, recorded by `InvolvementStarted` and
    /// ended by `InvolvementEnded`.
    Involvement, "involvement" {
        OwnCase => "own-case",
        StrategyParticipant => "strategy-participant",
        CoreGroup => "core-group",
        EnrolledPupil => "enrolled-pupil",
        TreatingClinician => "treating-clinician",
    }
}

impl Involvement {
    /// The domain involvement of a wire involvement kind; `None` for `INVOLVEMENT_KIND_UNSPECIFIED`.
    pub fn from_pb(k: pb::InvolvementKind) -> Option<Involvement> {
        match k {
            pb::InvolvementKind::Unspecified => None,
            pb::InvolvementKind::OwnCase => Some(Involvement::OwnCase),
            pb::InvolvementKind::StrategyParticipant => Some(Involvement::StrategyParticipant),
            pb::InvolvementKind::CoreGroup => Some(Involvement::CoreGroup),
            pb::InvolvementKind::EnrolledPupil => Some(Involvement::EnrolledPupil),
            pb::InvolvementKind::TreatingClinician => Some(Involvement::TreatingClinician),
        }
    }

    pub fn to_pb(self) -> pb::InvolvementKind {
        match self {
            Involvement::OwnCase => pb::InvolvementKind::OwnCase,
            Involvement::StrategyParticipant => pb::InvolvementKind::StrategyParticipant,
            Involvement::CoreGroup => pb::InvolvementKind::CoreGroup,
            Involvement::EnrolledPupil => pb::InvolvementKind::EnrolledPupil,
            Involvement::TreatingClinician => pb::InvolvementKind::TreatingClinician,
        }
    }
}

vocabulary! {
    /// What a cell may rely on as the legitimate relationship for `query` and `pushed` access: one of the
    /// principal's involvements, (for a MASH) that the child's contact is being handled by the MASH, an
    /// access record of its own call, the child being in its area (signals only), or its being the child's
    /// lead authority.
    Relationship, "relationship" {
        OwnCase => "own-case",
        StrategyParticipant => "strategy-participant",
        CoreGroup => "core-group",
        EnrolledPupil => "enrolled-pupil",
        TreatingClinician => "treating-clinician",
        /// The child's contact or referral came through the MASH (`Stage::mash_referral`).
        MashReferral => "mash-referral",
        /// The record was made by the principal's own agency: for the access log (D13), the record of one of
        /// its own calls. Access records are decided by the D13 cells, not the `own` rule
        /// (`decide_access_record`), so a "–" box shuts an agency out of even its own calls' records.
        OwnRecord => "own-record",
        /// The child is in the recipient's local-authority area: an agency of an area the recipient serves
        /// has recorded a fact about it (the agency registry's `areas`). For the signal category (D14) only:
        /// it is what lets a MASH receive a signal about a child nobody has referred, and it widens nothing
        /// else.
        Area => "area",
        /// The recipient is the child's lead authority: the children's social care agency holding its case
        /// (the latest child protection plan start's recorder, else the first contact or referral's), not any
        /// agency that recorded something about it. Children's social care cells only.
        LeadAuthority => "lead-authority",
    }
}

impl Relationship {
    /// One of the principal's involvements with the child (what `any-involvement` stands for).
    pub fn is_involvement(self) -> bool {
        match self {
            Relationship::OwnCase
            | Relationship::StrategyParticipant
            | Relationship::CoreGroup
            | Relationship::EnrolledPupil
            | Relationship::TreatingClinician => true,
            Relationship::MashReferral
            | Relationship::OwnRecord
            | Relationship::Area
            | Relationship::LeadAuthority => false,
        }
    }
}

impl From<Involvement> for Relationship {
    fn from(i: Involvement) -> Relationship {
        match i {
            Involvement::OwnCase => Relationship::OwnCase,
            Involvement::StrategyParticipant => Relationship::StrategyParticipant,
            Involvement::CoreGroup => Relationship::CoreGroup,
            Involvement::EnrolledPupil => Relationship::EnrolledPupil,
            Involvement::TreatingClinician => Relationship::TreatingClinician,
        }
    }
}

vocabulary! {
    /// What a status flag (projection `flag`) may carry beyond its fixed content, by the policy file's
    /// `[flag] extra_fields`. The fixed content is what CP-IS shares: that a plan, an unborn plan or a
    /// looked-after period exists, its start and end dates, and the owning authority with its contact
    /// numbers.
    FlagField, "flag field" {
        /// `ChildProtectionPlanStarted.category` and `CategoryChanged.category` (the category of abuse).
        PlanCategory => "plan-category",
        /// `LookedAfterPeriodStarted.legal_status` (s20, s31, s38).
        LegalStatus => "legal-status",
    }
}

/// The optional flag fields a policy grants (`[flag] extra_fields`); none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FlagContent {
    pub plan_category: bool,
    pub legal_status: bool,
}

vocabulary! {
    /// A point the child's case has reached (`Stage`), as used by stage gates and cell conditions.
    StageTerm, "stage" {
        Referral => "referral",
        S47Started => "s47-started",
        PlanActive => "plan-active",
        PlanEnded => "plan-ended",
        LookedAfter => "looked-after",
        MashReferral => "mash-referral",
    }
}

impl StageTerm {
    /// Whether the case has reached this point.
    pub fn holds(self, stage: &crate::Stage) -> bool {
        match self {
            StageTerm::Referral => stage.referral,
            StageTerm::S47Started => stage.s47_started,
            StageTerm::PlanActive => stage.plan_active,
            StageTerm::PlanEnded => stage.plan_ended,
            StageTerm::LookedAfter => stage.looked_after,
            StageTerm::MashReferral => stage.mash_referral,
        }
    }
}

vocabulary! {
    /// The lawful basis a permit relies on (UK GDPR Art 6, or DPA 2018 Part 3 for law enforcement).
    LawfulBasis, "lawful basis" {
        /// UK GDPR Art 6(1)(e): a task in the public interest (the safeguarding duties).
        PublicTask => "public-task",
        /// UK GDPR Art 6(1)(c): a legal obligation (the duty to assist a section 47 enquiry).
        LegalObligation => "legal-obligation",
        /// UK GDPR Art 6(1)(d): vital interests (break-glass).
        VitalInterests => "vital-interests",
        /// UK GDPR Art 6(1)(a): consent.
        Consent => "consent",
        /// DPA 2018 Part 3 and Schedule 8: law enforcement processing by the police.
        LawEnforcement => "law-enforcement",
    }
}

impl LawfulBasis {
    pub fn to_pb(self) -> pb::LawfulBasis {
        match self {
            LawfulBasis::PublicTask => pb::LawfulBasis::PublicTask,
            LawfulBasis::LegalObligation => pb::LawfulBasis::LegalObligation,
            LawfulBasis::VitalInterests => pb::LawfulBasis::VitalInterests,
            LawfulBasis::Consent => pb::LawfulBasis::Consent,
            LawfulBasis::LawEnforcement => pb::LawfulBasis::LawEnforcement,
        }
    }

    /// The legal citation, for people reading an explanation or an audit report.
    pub fn citation(self) -> &'static str {
        match self {
            LawfulBasis::PublicTask => "public task, UK GDPR Art 6(1)(e)",
            LawfulBasis::LegalObligation => {
                "legal obligation, UK GDPR Art 6(1)(c) (Children Act 1989 s47(9))"
            }
            LawfulBasis::VitalInterests => "vital interests, UK GDPR Art 6(1)(d)",
            LawfulBasis::Consent => "consent, UK GDPR Art 6(1)(a)",
            LawfulBasis::LawEnforcement => "law enforcement, DPA 2018 Part 3 and Schedule 8",
        }
    }
}

vocabulary! {
    /// The additional condition a category of special-category data relies on.
    Condition, "special-category condition" {
        /// DPA 2018 Schedule 1 paragraph 18: safeguarding of children and individuals at risk.
        SafeguardingChildren => "dpa-2018-sch1-para18",
    }
}

impl Condition {
    pub fn citation(self) -> &'static str {
        match self {
            Condition::SafeguardingChildren => {
                "DPA 2018 Schedule 1 paragraph 18 (safeguarding of children and individuals at risk)"
            }
        }
    }
}

/// A small set of vocabulary terms, as a bit mask: lookups in `decide` are one AND.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Bits(pub(crate) u16);

impl Bits {
    pub(crate) fn contains(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn insert(&mut self, bit: u16) {
        self.0 |= bit;
    }

    pub(crate) fn intersects(self, other: Bits) -> bool {
        self.0 & other.0 != 0
    }
}

impl fmt::Debug for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018b}", self.0)
    }
}

/// The terms of a vocabulary present in a set, in declaration order.
pub(crate) fn members<T: Copy>(all: &'static [T], bit: impl Fn(T) -> u16, set: Bits) -> Vec<T> {
    all.iter().copied().filter(|t| set.contains(bit(*t))).collect()
}

/// Joins terms for people: `a, b, c`.
pub(crate) fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = items.into_iter().map(|t| t.to_string()).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_round_trip_and_reject_unknown_words() {
        for p in Purpose::ALL {
            assert_eq!(p.to_string().parse::<Purpose>(), Ok(*p));
            assert_eq!(Purpose::from_pb(p.to_pb()), Some(*p));
        }
        assert_eq!("law_enforcement".parse::<Purpose>(), Ok(Purpose::LawEnforcement));
        assert_eq!(Purpose::from_pb(pb::Purpose::Unspecified), None);
        assert_eq!("mash-member".parse::<Role>(), Ok(Role::MashMember));
        assert_eq!("privacy_officer".parse::<Role>(), Ok(Role::PrivacyOfficer));
        assert_eq!(Role::PrivacyOfficer.to_string(), "privacy-officer");
        for i in Involvement::ALL {
            assert_eq!(Involvement::from_pb(i.to_pb()), Some(*i));
        }
        let err = "sometimes".parse::<Mode>().unwrap_err();
        assert!(
            err.contains("unknown mode \"sometimes\"") && err.contains("originator-approval"),
            "{err}"
        );
        assert!("marketing".parse::<Purpose>().is_err());
    }

    #[test]
    fn projections_are_ordered_from_least_to_most() {
        assert!(Projection::Flag < Projection::Summary && Projection::Summary < Projection::Full);
        assert_eq!(Projection::Full.to_pb(), pb::Projection::Full);
    }

    #[test]
    fn serde_uses_the_file_spelling() {
        #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
        struct T {
            role: Role,
            purpose: Purpose,
        }
        let t: T = toml::from_str("role = \"mash-member\"\npurpose = \"direct_care\"").unwrap();
        assert_eq!(
            t,
            T {
                role: Role::MashMember,
                purpose: Purpose::DirectCare
            }
        );
        assert_eq!(
            toml::to_string(&t).unwrap(),
            "role = \"mash-member\"\npurpose = \"direct_care\"\n"
        );
    }
}
