//! The event catalogue: every event kind, once, with what the rest of Halcyon must know of it — its name,
//! the category it normally falls in, its narrative fields (free text and details that the summary cut
//! removes) and its third-party fields (who referred, and how to reach them: removed from the full cut unless
//! the policy grants referrer identity). The table is one macro invocation, expanded into exhaustive
//! matches: a kind added to `proto/` without an entry here fails to build, and `tests::the_catalogue_lists_
//! every_kind_of_the_contract` checks the table against the compiled contract's descriptor.
//!
//! The cuts in `halcyon_policy::minimise` are matched exhaustively over the kinds too; its tests check them
//! against this table field by field.

use crate::convert::Category;
use crate::pb;
use crate::pb::event::Kind;

/// What the catalogue says of one event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindEntry {
    /// The event's name, e.g. `ReferralReceived`.
    pub name: &'static str,
    /// The category an event of this kind normally falls in (the envelope states its own).
    pub category: Category,
    /// Fields (proto names) the summary cut removes: free text, and detail beyond the fact itself.
    pub narrative: &'static [&'static str],
    /// Fields (`message.field` paths) that identify a third party, removed from the full cut unless the
    /// policy grants referrer identity.
    pub third_party: &'static [&'static str],
}

macro_rules! catalogue {
    ($($variant:ident => $category:ident, narrative [$($n:literal),*], third_party [$($t:literal),*];)*) => {
        /// Facts about each event kind, from the catalogue.
        pub trait EventKindExt {
            /// The event's name, e.g. `ReferralReceived`.
            fn type_name(&self) -> &'static str;
            /// The category an event of this kind normally falls in.
            fn default_category(&self) -> Category;
            /// The kind's whole catalogue entry.
            fn entry(&self) -> KindEntry;
        }

        impl EventKindExt for Kind {
            fn type_name(&self) -> &'static str {
                self.entry().name
            }
            fn default_category(&self) -> Category {
                self.entry().category
            }
            fn entry(&self) -> KindEntry {
                match self {
                    $(Kind::$variant(_) => KindEntry {
                        name: stringify!($variant),
                        category: Category::$category,
                        narrative: &[$($n),*],
                        third_party: &[$($t),*],
                    },)*
                }
            }
        }

        /// Every event kind's name, in wire order.
        pub const EVENT_TYPE_NAMES: &[&str] = &[$(stringify!($variant)),*];
    };
}

catalogue! {
    ContactReceived => CONTACT_REFERRAL, narrative ["summary", "referrer"], third_party ["referrer.referrer_name", "referrer.referrer_contact"];
    ReferralReceived => CONTACT_REFERRAL, narrative ["summary", "referrer"], third_party ["referrer.referrer_name", "referrer.referrer_contact"];
    ReferralDecisionRecorded => CONTACT_REFERRAL, narrative ["rationale"], third_party [];
    ReferralAcknowledged => CONTACT_REFERRAL, narrative [], third_party [];
    AgencyCheckRequested => CONTACT_REFERRAL, narrative [], third_party [];
    AgencyCheckResponded => CONTACT_REFERRAL, narrative ["summary"], third_party [];
    AssessmentStarted => ASSESSMENT, narrative [], third_party [];
    AssessmentCompleted => ASSESSMENT, narrative ["late_reason"], third_party [];
    StrategyDiscussionHeld => STRATEGY_S47, narrative ["summary"], third_party [];
    Section47EnquiryStarted => STRATEGY_S47, narrative ["summary"], third_party [];
    Section47EnquiryConcluded => STRATEGY_S47, narrative [], third_party [];
    InitialConferenceHeld => CONFERENCE_PLAN, narrative ["minutes_summary"], third_party [];
    ChildProtectionPlanStarted => STATUS_FLAG, narrative [], third_party [];
    CategoryChanged => CONFERENCE_PLAN, narrative [], third_party [];
    ChildProtectionPlanEnded => STATUS_FLAG, narrative ["reason"], third_party [];
    CoreGroupMeetingHeld => CONFERENCE_PLAN, narrative ["summary"], third_party [];
    ReviewConferenceHeld => CONFERENCE_PLAN, narrative ["summary"], third_party [];
    LookedAfterPeriodStarted => STATUS_FLAG, narrative [], third_party [];
    LookedAfterPeriodEnded => STATUS_FLAG, narrative ["reason"], third_party [];
    LookedAfterReviewHeld => CONFERENCE_PLAN, narrative ["summary"], third_party [];
    PoliceProtectionStarted => STRATEGY_S47, narrative ["reason"], third_party [];
    PoliceProtectionEnded => STRATEGY_S47, narrative [], third_party [];
    EmergencyProtectionOrderMade => STRATEGY_S47, narrative [], third_party [];
    MissingEpisodeReported => MISSING, narrative ["circumstances"], third_party [];
    MissingEpisodeClosed => MISSING, narrative ["found_location"], third_party [];
    ReturnHomeInterviewCompleted => MISSING, narrative ["summary"], third_party [];
    AttendanceConcernRecorded => ATTENDANCE, narrative [], third_party [];
    ExclusionRecorded => ATTENDANCE, narrative ["reason"], third_party [];
    HealthAttendanceRecorded => HEALTH_CLINICAL, narrative ["clinical_summary"], third_party [];
    PoliceIntelligenceRecorded => POLICE_INTELLIGENCE, narrative ["summary"], third_party [];
    ExploitationIndicatorRecorded => EXPLOITATION, narrative ["detail"], third_party [];
    ConcernRecorded => CONTACT_REFERRAL, narrative ["summary"], third_party [];
    InvolvementStarted => IDENTITY, narrative [], third_party [];
    InvolvementEnded => IDENTITY, narrative [], third_party [];
    ConsentRecorded => IDENTITY, narrative [], third_party [];
    ConsentWithdrawn => IDENTITY, narrative [], third_party [];
    ConsentExemptionRecorded => IDENTITY, narrative ["justification"], third_party [];
    ShareDecisionRecorded => ACCESS_LOG, narrative ["reason"], third_party [];
    OriginatorApprovalGranted => ACCESS_LOG, narrative ["reason"], third_party [];
    IdentifierLinked => IDENTITY, narrative ["reason"], third_party [];
    RecordCorrected => IDENTITY, narrative ["reason"], third_party [];
    SeriousIncidentNotified => CONTACT_REFERRAL, narrative ["summary"], third_party [];
    RapidReviewCompleted => CONTACT_REFERRAL, narrative ["summary"], third_party [];
    BreakGlassReviewed => ACCESS_LOG, narrative ["reason"], third_party [];
    SignalOutcomeRecorded => SIGNAL, narrative ["reason"], third_party [];
    IdentifierUnlinked => IDENTITY, narrative ["reason"], third_party [];
    NhsNumberSuperseded => IDENTITY, narrative ["reason"], third_party [];
}

/// The referrer's details a kind carries, if it carries any (the third-party fields of the catalogue).
pub fn referrer_mut(kind: &mut Kind) -> Option<&mut pb::ReferrerDetails> {
    match kind {
        Kind::ContactReceived(e) => e.referrer.as_mut(),
        Kind::ReferralReceived(e) => e.referrer.as_mut(),
        Kind::ReferralDecisionRecorded(_)
        | Kind::ReferralAcknowledged(_)
        | Kind::AgencyCheckRequested(_)
        | Kind::AgencyCheckResponded(_)
        | Kind::AssessmentStarted(_)
        | Kind::AssessmentCompleted(_)
        | Kind::StrategyDiscussionHeld(_)
        | Kind::Section47EnquiryStarted(_)
        | Kind::Section47EnquiryConcluded(_)
        | Kind::InitialConferenceHeld(_)
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
        | Kind::InvolvementStarted(_)
        | Kind::InvolvementEnded(_)
        | Kind::ConsentRecorded(_)
        | Kind::ConsentWithdrawn(_)
        | Kind::ConsentExemptionRecorded(_)
        | Kind::ShareDecisionRecorded(_)
        | Kind::OriginatorApprovalGranted(_)
        | Kind::IdentifierLinked(_)
        | Kind::RecordCorrected(_)
        | Kind::SeriousIncidentNotified(_)
        | Kind::RapidReviewCompleted(_)
        | Kind::BreakGlassReviewed(_)
        | Kind::SignalOutcomeRecorded(_)
        | Kind::IdentifierUnlinked(_)
        | Kind::NhsNumberSuperseded(_) => None,
    }
}

/// The police handling code a kind carries (the 3×5×2 / 5×5×5 handling code of intelligence), if any: the
/// policy's handling-code rules apply to it.
pub fn handling_code(kind: &Kind) -> Option<&str> {
    match kind {
        Kind::PoliceIntelligenceRecorded(e) => Some(e.handling_code.as_str()),
        Kind::ContactReceived(_)
        | Kind::ReferralReceived(_)
        | Kind::ReferralDecisionRecorded(_)
        | Kind::ReferralAcknowledged(_)
        | Kind::AgencyCheckRequested(_)
        | Kind::AgencyCheckResponded(_)
        | Kind::AssessmentStarted(_)
        | Kind::AssessmentCompleted(_)
        | Kind::StrategyDiscussionHeld(_)
        | Kind::Section47EnquiryStarted(_)
        | Kind::Section47EnquiryConcluded(_)
        | Kind::InitialConferenceHeld(_)
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
        | Kind::ExploitationIndicatorRecorded(_)
        | Kind::ConcernRecorded(_)
        | Kind::InvolvementStarted(_)
        | Kind::InvolvementEnded(_)
        | Kind::ConsentRecorded(_)
        | Kind::ConsentWithdrawn(_)
        | Kind::ConsentExemptionRecorded(_)
        | Kind::ShareDecisionRecorded(_)
        | Kind::OriginatorApprovalGranted(_)
        | Kind::IdentifierLinked(_)
        | Kind::RecordCorrected(_)
        | Kind::SeriousIncidentNotified(_)
        | Kind::RapidReviewCompleted(_)
        | Kind::BreakGlassReviewed(_)
        | Kind::SignalOutcomeRecorded(_)
        | Kind::IdentifierUnlinked(_)
        | Kind::NhsNumberSuperseded(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The oneof `kind` of `halcyon.v1.Event` in the compiled contract: (proto field name, message type).
    fn contract_kinds() -> Vec<(String, String)> {
        let fds = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let event = fds
            .file
            .iter()
            .filter(|f| f.package() == "halcyon.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Event")
            .expect("halcyon.v1.Event");
        event
            .field
            .iter()
            .filter(|f| f.oneof_index.is_some())
            .map(|f| {
                (
                    f.name().to_owned(),
                    f.type_name().rsplit('.').next().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_catalogue_lists_every_kind_of_the_contract() {
        let contract: Vec<String> = contract_kinds().into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            EVENT_TYPE_NAMES,
            contract.as_slice(),
            "the catalogue and proto/ disagree"
        );
    }

    /// Every entry as the table in docs/sharing.md and the summary cut describe it, written out by hand: a
    /// change to a kind's category or its narrative or third-party fields must change this list too.
    #[test]
    fn every_kind_has_the_entry_the_documents_give_it() {
        let expected: &[(&str, Category, &[&str], &[&str])] = &[
            (
                "ContactReceived",
                Category::CONTACT_REFERRAL,
                &["summary", "referrer"],
                &["referrer.referrer_name", "referrer.referrer_contact"],
            ),
            (
                "ReferralReceived",
                Category::CONTACT_REFERRAL,
                &["summary", "referrer"],
                &["referrer.referrer_name", "referrer.referrer_contact"],
            ),
            (
                "ReferralDecisionRecorded",
                Category::CONTACT_REFERRAL,
                &["rationale"],
                &[],
            ),
            ("ReferralAcknowledged", Category::CONTACT_REFERRAL, &[], &[]),
            ("AgencyCheckRequested", Category::CONTACT_REFERRAL, &[], &[]),
            (
                "AgencyCheckResponded",
                Category::CONTACT_REFERRAL,
                &["summary"],
                &[],
            ),
            ("AssessmentStarted", Category::ASSESSMENT, &[], &[]),
            ("AssessmentCompleted", Category::ASSESSMENT, &["late_reason"], &[]),
            (
                "StrategyDiscussionHeld",
                Category::STRATEGY_S47,
                &["summary"],
                &[],
            ),
            (
                "Section47EnquiryStarted",
                Category::STRATEGY_S47,
                &["summary"],
                &[],
            ),
            ("Section47EnquiryConcluded", Category::STRATEGY_S47, &[], &[]),
            (
                "InitialConferenceHeld",
                Category::CONFERENCE_PLAN,
                &["minutes_summary"],
                &[],
            ),
            ("ChildProtectionPlanStarted", Category::STATUS_FLAG, &[], &[]),
            ("CategoryChanged", Category::CONFERENCE_PLAN, &[], &[]),
            (
                "ChildProtectionPlanEnded",
                Category::STATUS_FLAG,
                &["reason"],
                &[],
            ),
            (
                "CoreGroupMeetingHeld",
                Category::CONFERENCE_PLAN,
                &["summary"],
                &[],
            ),
            (
                "ReviewConferenceHeld",
                Category::CONFERENCE_PLAN,
                &["summary"],
                &[],
            ),
            ("LookedAfterPeriodStarted", Category::STATUS_FLAG, &[], &[]),
            ("LookedAfterPeriodEnded", Category::STATUS_FLAG, &["reason"], &[]),
            (
                "LookedAfterReviewHeld",
                Category::CONFERENCE_PLAN,
                &["summary"],
                &[],
            ),
            (
                "PoliceProtectionStarted",
                Category::STRATEGY_S47,
                &["reason"],
                &[],
            ),
            ("PoliceProtectionEnded", Category::STRATEGY_S47, &[], &[]),
            ("EmergencyProtectionOrderMade", Category::STRATEGY_S47, &[], &[]),
            (
                "MissingEpisodeReported",
                Category::MISSING,
                &["circumstances"],
                &[],
            ),
            (
                "MissingEpisodeClosed",
                Category::MISSING,
                &["found_location"],
                &[],
            ),
            (
                "ReturnHomeInterviewCompleted",
                Category::MISSING,
                &["summary"],
                &[],
            ),
            ("AttendanceConcernRecorded", Category::ATTENDANCE, &[], &[]),
            ("ExclusionRecorded", Category::ATTENDANCE, &["reason"], &[]),
            (
                "HealthAttendanceRecorded",
                Category::HEALTH_CLINICAL,
                &["clinical_summary"],
                &[],
            ),
            (
                "PoliceIntelligenceRecorded",
                Category::POLICE_INTELLIGENCE,
                &["summary"],
                &[],
            ),
            (
                "ExploitationIndicatorRecorded",
                Category::EXPLOITATION,
                &["detail"],
                &[],
            ),
            ("ConcernRecorded", Category::CONTACT_REFERRAL, &["summary"], &[]),
            ("InvolvementStarted", Category::IDENTITY, &[], &[]),
            ("InvolvementEnded", Category::IDENTITY, &[], &[]),
            ("ConsentRecorded", Category::IDENTITY, &[], &[]),
            ("ConsentWithdrawn", Category::IDENTITY, &[], &[]),
            (
                "ConsentExemptionRecorded",
                Category::IDENTITY,
                &["justification"],
                &[],
            ),
            ("ShareDecisionRecorded", Category::ACCESS_LOG, &["reason"], &[]),
            (
                "OriginatorApprovalGranted",
                Category::ACCESS_LOG,
                &["reason"],
                &[],
            ),
            ("IdentifierLinked", Category::IDENTITY, &["reason"], &[]),
            ("RecordCorrected", Category::IDENTITY, &["reason"], &[]),
            (
                "SeriousIncidentNotified",
                Category::CONTACT_REFERRAL,
                &["summary"],
                &[],
            ),
            (
                "RapidReviewCompleted",
                Category::CONTACT_REFERRAL,
                &["summary"],
                &[],
            ),
            ("BreakGlassReviewed", Category::ACCESS_LOG, &["reason"], &[]),
            ("SignalOutcomeRecorded", Category::SIGNAL, &["reason"], &[]),
            ("IdentifierUnlinked", Category::IDENTITY, &["reason"], &[]),
            ("NhsNumberSuperseded", Category::IDENTITY, &["reason"], &[]),
        ];
        assert_eq!(expected.len(), EVENT_TYPE_NAMES.len());
        for kind in all_kinds() {
            let entry = kind.entry();
            let (name, category, narrative, third_party) = expected
                .iter()
                .find(|(name, ..)| *name == entry.name)
                .unwrap_or_else(|| panic!("{} is not in the expected list", entry.name));
            assert_eq!(
                (entry.name, entry.category, entry.narrative, entry.third_party),
                (*name, *category, *narrative, *third_party)
            );
        }
    }

    /// One default value of every kind, decoded from the contract's field numbers (not from the table).
    fn all_kinds() -> Vec<Kind> {
        let fds = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let event = fds
            .file
            .iter()
            .filter(|f| f.package() == "halcyon.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "Event")
            .expect("halcyon.v1.Event");
        event
            .field
            .iter()
            .filter(|f| f.oneof_index.is_some())
            .map(|f| {
                // An empty message in field `number`: tag (number << 3 | 2), length 0.
                let mut bytes = Vec::new();
                prost::encoding::encode_key(
                    f.number() as u32,
                    prost::encoding::WireType::LengthDelimited,
                    &mut bytes,
                );
                bytes.push(0);
                pb::Event::decode(bytes.as_slice()).unwrap().kind.expect("a kind")
            })
            .collect()
    }
}
