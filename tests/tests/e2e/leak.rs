//! Issue 6: no leaks, checked against the documented sharing table rather than against the policy code.
//!
//! The oracle here is the DOMAIN sharing table (agency kind × data category → never / flag / summary /
//! full / on condition), the purposes allowed per category, the D4/D5 stage gate and the fields each
//! projection may carry, all transcribed by hand into this file (`TABLE`, `cell`, `purposes`, `allowed`).
//! Each child's stage, each agency's relationships with it and the originators' approvals are derived here
//! from the envelopes the test publishes. Nothing of `halcyon-policy`'s decisions, `halcyon-projector`'s
//! sharing state or views, or `deploy/policy/` is used: if the policy file and the table disagree, this
//! test sides with the table.
//!
//! Over generated scenarios (two seeds) and a hand-made one (a CP plan for sexual abuse, a looked-after
//! period under s31, category changes, an agency publishing with only an NHS number, facts arriving out of
//! occurred-at order, originator approvals — one of them by an agency that is not the originator — and a
//! consent), every agency kind's principal (and the CSC and MASH privacy officers) asks FindChild and
//! GetChronology about every child for every purpose, over real NATS, sled and gRPC. Then:
//!
//! - every returned fact is one the table lets the caller have for that purpose and stage (or its own);
//!   its projection is no more than the box allows; every non-default field of its event is allowed by
//!   that projection (flag: only that a plan / looked-after period exists, `unborn`, the owner's phone
//!   numbers; summary: no narratives and no referrer; full: referrer identity only to the originator or an
//!   approved D12 recipient) and equals what was published;
//! - withheld metadata names only categories the caller may learn of (never a "–" or another agency's
//!   "own" box, never a `never` rule, no unknown rule shape) with counts no larger than the facts really
//!   held back, and the chronology's paging does not reveal more facts than that either;
//! - the identity shown is the latest non-empty value per field among the facts whose identity (D0) the
//!   caller may see, whatever order they arrived in;
//! - ListAccess shows each reader only the access records its D13 box allows, and no record shows a
//!   category the reader may never see or a `never` rule.
//!
//! The scenario runs once per test binary; each test reports one class of violation, every instance
//! grouped by agency, kind, category, field and purpose, so one run names every defect.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use halcyon_grpc::pb::{self, audit_service_client::AuditServiceClient, event::Kind as Ev};
use halcyon_node::auth::{Tokens, hash_token};
use halcyon_policy::Purpose;
use halcyon_schema::convert::timestamp_millis;
use halcyon_schema::{EventKindExt, NhsNumber, validate_envelope};
use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig, envelope::envelope, workspace_root};
use serde_json::Value;

// ── The oracle: the documented table, transcribed ──────────────────────────────────────────────────────

/// The table's columns, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Column {
    Csc,
    Police,
    Unscheduled,
    Community,
    School,
    Mash,
    YouthJustice,
    Voluntary,
}

impl Column {
    fn of(kind: &str) -> Column {
        match kind {
            "childrens-social-care" => Column::Csc,
            "police" => Column::Police,
            "health-unscheduled" => Column::Unscheduled,
            "health-community" => Column::Community,
            "school" => Column::School,
            "mash" => Column::Mash,
            "youth-justice" => Column::YouthJustice,
            "voluntary" => Column::Voluntary,
            other => panic!("agency kind {other:?} is not a column of the table"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Column::Csc => "childrens-social-care",
            Column::Police => "police",
            Column::Unscheduled => "health-unscheduled",
            Column::Community => "health-community",
            Column::School => "school",
            Column::Mash => "mash",
            Column::YouthJustice => "youth-justice",
            Column::Voluntary => "voluntary",
        }
    }
}

/// docs/sharing.md, box by box. Rows D0–D14 (D14, a multi-agency signal: the category of the access records
/// of signals shown and of signal outcomes, the only facts that may state it); columns CSC, police, health: unscheduled, health: GP / HV /
/// school nurse, education (DSL), MASH member, youth justice, voluntary.
#[rustfmt::skip]
const TABLE: [[&str; 8]; 15] = [
    //          CSC                        police                        unscheduled         GP/HV/nurse         school DSL                 MASH member          youth justice     voluntary
    /* D0  */ ["Q",                       "Q",                          "Q",                "Q",                "Q (own pupils)",          "Q",                 "Q",              "N"],
    /* D1  */ ["owner",                   "F",                          "F + notify owner", "F",                "F (enrolled)",            "Q",                 "F",              "–"],
    /* D2  */ ["owner",                   "Q (s47 / MASH)",             "–",                "N",                "Q (referrer or CP plan)", "Q",                 "N",              "–"],
    /* D3  */ ["owner",                   "Q (CP / s47)",               "–",                "Q (involved)",     "Q (involved)",            "Q",                 "Q (involved)",   "N"],
    /* D4  */ ["owner",                   "P (participant)",            "N",                "Q (invitee)",      "Q (invitee)",             "P",                 "N",              "–"],
    /* D5  */ ["owner",                   "P (core group)",             "–",                "P (core group)",   "P (core group)",          "Q",                 "Q (core group)", "Q (core group)"],
    /* D6  */ ["–",                       "N",                          "own",              "own",              "–",                       "N",                 "–",              "–"],
    /* D7  */ ["N",                       "N",                          "N",                "N",                "–",                       "N",                 "–",              "–"],
    /* D8  */ ["Q (redacted)",            "own",                        "–",                "–",                "–",                       "N (handling code)", "N",              "–"],
    /* D9  */ ["Q",                       "Q (missing / exploitation)", "–",                "Q (school nurse)", "own",                     "Q",                 "Q",              "–"],
    /* D10 */ ["P",                       "own",                        "–",                "N",                "Q (enrolled)",            "P",                 "Q",              "N"],
    /* D11 */ ["P",                       "P",                          "N",                "N",                "Q",                       "P",                 "Q",              "N"],
    /* D12 */ ["owner",                   "N",                          "–",                "–",                "–",                       "N",                 "–",              "–"],
    /* D13 */ ["owner + privacy officer", "own queries",                "own queries",      "own queries",      "own queries",             "governance",        "–",              "–"],
    /* D14 */ ["P (lead authority)",      "–",                          "–",                "–",                "–",                       "P (area)",          "–",              "–"],
];

/// D7 and D12 always need the originator's approval, whatever the box.
const RESTRICTED: [usize; 2] = [7, 12];
/// D4 and D5 only after a Section47EnquiryStarted or a ChildProtectionPlanStarted.
const GATED: [usize; 2] = [4, 5];

/// The documented purposes per category.
fn purposes(category: usize) -> &'static [Purpose] {
    use Purpose::*;
    match category {
        0 | 1 => &[Safeguarding, DirectCare, LawEnforcement, StatutoryReview],
        6 | 7 => &[Safeguarding, DirectCare, StatutoryReview],
        13 => &[Audit, StatutoryReview],
        14 => &[Safeguarding, StatutoryReview],
        _ => &[Safeguarding, LawEnforcement, StatutoryReview],
    }
}

const PURPOSES: [Purpose; 5] = [
    Purpose::Safeguarding,
    Purpose::DirectCare,
    Purpose::LawEnforcement,
    Purpose::StatutoryReview,
    Purpose::Audit,
];

/// What a box means for another agency's fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// "–".
    Never,
    /// "own", "own queries": only the agency's own records; another agency's are never.
    OwnOnly,
    /// F: the flag projection, given the relationship.
    Flag(Need),
    /// Q or P: the fact in full, given the relationship.
    Full(Need),
    /// "Q (redacted)": the summary projection, given the relationship.
    Summary(Need),
    /// N: only with the originating agency's approval for this fact and this recipient.
    Approval,
    /// D13 "governance": the MASH's privacy officer, for children whose referral the MASH handled.
    Governance,
}

/// The relationship a box asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A standing entitlement ("F").
    Standing,
    /// Any legitimate relationship ("Q", "P", "(involved)", "owner").
    Involved,
    /// "(own pupils)", "(enrolled)": an enrolled-pupil involvement.
    Enrolled,
    /// "(school nurse)": a school nursing service holds an enrolled-pupil involvement for the pupil.
    SchoolNurse,
    /// "(participant)", "(invitee)": named in a strategy discussion.
    Participant,
    /// "(core group)": named in the conference's core group.
    CoreGroup,
    /// "(s47 / MASH)": involved, and a section 47 enquiry or a MASH referral.
    S47OrMash,
    /// "(CP / s47)": involved, and a plan or a section 47 enquiry.
    PlanOrS47,
    /// "(referrer or CP plan)": involved, and a plan, or an education referrer.
    ReferrerOrPlan,
    /// "(missing / exploitation)": the police hold a missing or exploitation case, or took part in a
    /// strategy discussion.
    MissingOrExploitation,
    /// "(lead authority)": the caller's agency holds the child's case (recorded its first contact or
    /// referral).
    LeadAuthority,
}

/// The box for `category` and `column`, read.
fn cell(category: usize, column: Column) -> Access {
    use Access::*;
    match TABLE[category][column as usize] {
        "–" => Never,
        "own" | "own queries" => OwnOnly,
        "governance" => Governance,
        // The owning authority sees its own (the `own` rule); another CSC queries with a relationship.
        "owner" | "owner + privacy officer" => Full(Need::Involved),
        "F" | "F + notify owner" => Flag(Need::Standing),
        "F (enrolled)" => Flag(Need::Enrolled),
        "Q" | "P" | "Q (involved)" => Full(Need::Involved),
        "Q (own pupils)" | "Q (enrolled)" => Full(Need::Enrolled),
        "Q (school nurse)" => Full(Need::SchoolNurse),
        "P (participant)" | "Q (invitee)" => Full(Need::Participant),
        "P (core group)" | "Q (core group)" => Full(Need::CoreGroup),
        "Q (s47 / MASH)" => Full(Need::S47OrMash),
        "Q (CP / s47)" => Full(Need::PlanOrS47),
        "Q (referrer or CP plan)" => Full(Need::ReferrerOrPlan),
        "Q (missing / exploitation)" => Full(Need::MissingOrExploitation),
        // A signal: the lead authority (holding the case) and the MASH of the child's area (every child here
        // is in the one area the test's registry serves).
        "P (lead authority)" => Full(Need::LeadAuthority),
        "P (area)" => Full(Need::Standing),
        "Q (redacted)" => Summary(Need::Involved),
        "N" | "N (handling code)" => Approval,
        other => panic!("box {other:?} is not transcribed"),
    }
}

/// Whether a caller of `column` may learn nothing at all about other agencies' facts of `category`.
fn unseeable(category: usize, column: Column) -> bool {
    matches!(cell(category, column), Access::Never | Access::OwnOnly)
}

/// How much of a fact: the wire enum's order (flag < summary < full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proj {
    Flag = 1,
    Summary = 2,
    Full = 3,
}

impl Proj {
    fn from_wire(p: i32) -> Option<Proj> {
        match p {
            1 => Some(Proj::Flag),
            2 => Some(Proj::Summary),
            3 => Some(Proj::Full),
            _ => None,
        }
    }
}

/// Free-text narratives (events.proto), cut from the summary projection.
const NARRATIVES: [&str; 10] = [
    "summary",
    "rationale",
    "minutes_summary",
    "reason",
    "clinical_summary",
    "detail",
    "circumstances",
    "found_location",
    "justification",
    "late_reason",
];

/// The owning authority's contact numbers (`contact`, schema version 2), shown with a flag.
fn contact(path: &str) -> bool {
    matches!(
        path,
        "contact" | "contact.office_hours_phone" | "contact.out_of_hours_phone"
    )
}

/// Whether a non-default field (`path` inside the event kind `kind`, e.g. `referrer.referrer_name`) may be
/// shown under `proj`; `referrer_ok` says whether referrer identity (D12) is allowed with this fact.
fn allowed(proj: Proj, kind: &str, path: &str, referrer_ok: bool) -> bool {
    match proj {
        // That a plan / unborn plan / looked-after period exists, its dates (the envelope's occurred_at),
        // and the owning authority's contact numbers. Nothing else: no category, no legal status.
        Proj::Flag => match kind {
            "child_protection_plan_started" => matches!(path, "unborn") || contact(path),
            "looked_after_period_started" => contact(path),
            _ => false,
        },
        Proj::Summary => {
            let last = path.rsplit('.').next().unwrap_or(path);
            // HealthAttendanceRecorded.reason is an enum (why they attended), not a narrative.
            let narrative =
                NARRATIVES.contains(&last) && !(last == "reason" && kind == "health_attendance_recorded");
            !narrative && path != "referrer" && !path.starts_with("referrer.")
        }
        Proj::Full => referrer_ok || !matches!(path, "referrer.referrer_name" | "referrer.referrer_contact"),
    }
}

// ── What the oracle derives from the published envelopes ───────────────────────────────────────────────

#[derive(Debug, Clone, Default)]
struct Relationships {
    published: bool,
    published_missing_or_exploitation: bool,
    enrolled: bool,
    participant: bool,
    core_group: bool,
    other_involvement: bool,
}

#[derive(Debug)]
struct Child {
    label: String,
    nhs: String,
    facts: Vec<pb::Envelope>,
    s47_started: bool,
    s47_decided: bool,
    plan_started: bool,
    /// The child's referral is with the MASH: a contact or referral was received, or the MASH asked
    /// agencies to check (AgencyCheckRequested).
    mash_referral: bool,
    /// The MASH asked agencies to check: the referral certainly went through the MASH.
    mash_checked: bool,
    education_referrer: bool,
    /// The lead authority: the agency that recorded the latest child protection plan start, else the
    /// child's first contact or referral (by when they occurred), docs/sharing.md "Signals (D14)".
    lead: Option<String>,
    relationships: BTreeMap<String, Relationships>,
    /// (event id, recipient agency) approved by the event's own originator.
    approvals: BTreeSet<(String, String)>,
    /// Approvals published by an agency that is not the event's originator (worth nothing).
    foreign_approvals: BTreeSet<(String, String)>,
    /// Event ids no answer may return: facts their recording agency withdrew as entered in error, and the
    /// corrections themselves (which are not case facts).
    withdrawn: BTreeSet<String>,
}

/// The facts as their recording agencies corrected them, by the documented rules (docs/corrections.md),
/// written here without the projector's code: a `RecordCorrected` counts only when published by the agency
/// that published the event it names (later in that agency's stream, which is publish order here) and,
/// with a replacement, of the same kind; the latest such correction of an event counts; entered in error
/// removes the event, a replacement stands in for its event; corrections are not case facts. Returns the
/// corrected facts and the ids no answer may return.
fn corrected(facts: Vec<pb::Envelope>) -> (Vec<pb::Envelope>, BTreeSet<String>) {
    let mut withdrawn = BTreeSet::new();
    let mut latest: BTreeMap<String, pb::RecordCorrected> = BTreeMap::new();
    for (i, e) in facts.iter().enumerate() {
        let Ev::RecordCorrected(c) = kind_of(e) else {
            continue;
        };
        withdrawn.insert(e.event_id.clone());
        let Some(target) = facts[..i].iter().find(|t| t.event_id == c.corrected_event_id) else {
            continue;
        };
        let same_kind = c.entered_in_error
            || c.replacement
                .as_ref()
                .and_then(|r| r.kind.as_ref())
                .is_some_and(|r| std::mem::discriminant(r) == std::mem::discriminant(kind_of(target)));
        if target.agency_id == e.agency_id && same_kind && !matches!(kind_of(target), Ev::RecordCorrected(_))
        {
            latest.insert(c.corrected_event_id.clone(), (**c).clone());
        }
    }
    let mut out = Vec::new();
    for mut e in facts {
        if matches!(kind_of(&e), Ev::RecordCorrected(_)) {
            continue;
        }
        match latest.get(&e.event_id) {
            None => out.push(e),
            Some(c) if c.entered_in_error => {
                withdrawn.insert(e.event_id.clone());
            }
            Some(c) => {
                e.event = c.replacement.as_deref().cloned();
                out.push(e);
            }
        }
    }
    (out, withdrawn)
}

fn category_of(e: &pb::Envelope) -> usize {
    // docs/sharing.md "Signals (D14)": an outcome is part of its signal, D14 whatever its envelope states.
    if matches!(kind_of(e), Ev::SignalOutcomeRecorded(_)) {
        return 14;
    }
    let c = e.category - 1;
    assert!((0..14).contains(&c), "category {} is not D0–D13", e.category);
    c as usize
}

fn kind_of(e: &pb::Envelope) -> &Ev {
    e.event.as_ref().and_then(|e| e.kind.as_ref()).expect("an event")
}

impl Child {
    fn derive(label: String, nhs: String, facts: Vec<pb::Envelope>) -> Child {
        let (facts, withdrawn) = corrected(facts);
        let mut c = Child {
            label,
            nhs,
            s47_started: false,
            s47_decided: false,
            plan_started: false,
            mash_referral: false,
            mash_checked: false,
            education_referrer: false,
            lead: None,
            relationships: BTreeMap::new(),
            approvals: BTreeSet::new(),
            foreign_approvals: BTreeSet::new(),
            facts: Vec::new(),
            withdrawn,
        };
        let originator: BTreeMap<&str, &str> = facts
            .iter()
            .map(|e| (e.event_id.as_str(), e.agency_id.as_str()))
            .collect();
        for e in &facts {
            let category = category_of(e);
            let r = c.relationships.entry(e.agency_id.clone()).or_default();
            // Recording a signal's outcome gives no relationship (docs/sharing.md "Signals (D14)").
            r.published |= !matches!(kind_of(e), Ev::SignalOutcomeRecorded(_));
            r.published_missing_or_exploitation |= category == 10 || category == 11;
            match kind_of(e) {
                Ev::Section47EnquiryStarted(_) => c.s47_started = true,
                Ev::StrategyDiscussionHeld(d) => {
                    c.s47_decided |= d.section47_decided;
                    for a in &d.participant_agency_ids {
                        c.relationships.entry(a.clone()).or_default().participant = true;
                    }
                }
                Ev::InitialConferenceHeld(x) => {
                    for a in &x.core_group_agency_ids {
                        c.relationships.entry(a.clone()).or_default().core_group = true;
                    }
                }
                Ev::CoreGroupMeetingHeld(x) => {
                    for a in &x.attending_agency_ids {
                        c.relationships.entry(a.clone()).or_default().core_group = true;
                    }
                }
                Ev::ChildProtectionPlanStarted(_) => c.plan_started = true,
                Ev::AgencyCheckRequested(_) => {
                    c.mash_referral = true;
                    c.mash_checked = true;
                }
                Ev::ContactReceived(pb::ContactReceived { referrer, .. })
                | Ev::ReferralReceived(pb::ReferralReceived { referrer, .. }) => {
                    c.mash_referral = true;
                    // CIN source codes 2x: schools and education services.
                    c.education_referrer |= referrer.as_ref().is_some_and(|r| r.source_code.starts_with('2'));
                }
                Ev::InvolvementStarted(i) => {
                    let r = c.relationships.entry(i.involved_agency_id.clone()).or_default();
                    match pb::InvolvementKind::try_from(i.kind) {
                        Ok(pb::InvolvementKind::EnrolledPupil) => r.enrolled = true,
                        Ok(pb::InvolvementKind::CoreGroup) => r.core_group = true,
                        Ok(pb::InvolvementKind::StrategyParticipant) => r.participant = true,
                        _ => r.other_involvement = true,
                    }
                }
                Ev::OriginatorApprovalGranted(a) => {
                    let pair = (a.approved_event_id.clone(), a.recipient_agency_id.clone());
                    if originator.get(a.approved_event_id.as_str()) == Some(&e.agency_id.as_str()) {
                        c.approvals.insert(pair);
                    } else {
                        c.foreign_approvals.insert(pair);
                    }
                }
                _ => {}
            }
        }
        let when = |e: &&pb::Envelope| (e.occurred_at.as_ref().map(timestamp_millis), e.agency_id.clone());
        c.lead = facts
            .iter()
            .filter(|e| matches!(kind_of(e), Ev::ChildProtectionPlanStarted(_)))
            .max_by_key(when)
            .or_else(|| {
                facts
                    .iter()
                    .filter(|e| matches!(kind_of(e), Ev::ContactReceived(_) | Ev::ReferralReceived(_)))
                    .min_by_key(when)
            })
            .map(|e| e.agency_id.clone());
        c.facts = facts;
        c
    }

    fn rel(&self, agency: &str) -> Relationships {
        self.relationships.get(agency).cloned().unwrap_or_default()
    }

    fn involved(&self, who: &Who) -> bool {
        let r = self.rel(&who.agency);
        r.published
            || r.enrolled
            || r.participant
            || r.core_group
            || r.other_involvement
            || (who.column == Column::Mash && self.mash_referral)
    }

    fn gate_open(&self) -> bool {
        self.s47_started || self.plan_started
    }

    fn holds(&self, need: Need, who: &Who) -> bool {
        let r = self.rel(&who.agency);
        let s47 = self.s47_started || self.s47_decided;
        match need {
            Need::Standing => true,
            Need::Involved => self.involved(who),
            Need::Enrolled | Need::SchoolNurse => r.enrolled,
            Need::Participant => r.participant,
            Need::CoreGroup => r.core_group,
            Need::S47OrMash => self.involved(who) && (s47 || self.mash_referral),
            Need::PlanOrS47 => self.involved(who) && (self.plan_started || s47),
            Need::ReferrerOrPlan => self.involved(who) && (self.plan_started || self.education_referrer),
            Need::MissingOrExploitation => r.published_missing_or_exploitation || r.participant,
            Need::LeadAuthority => self.lead.as_deref() == Some(who.agency.as_str()),
        }
    }

    /// The most of `fact` (as if it were of `category`) that `who` may have for `purpose`, or why nothing.
    fn ceiling(
        &self,
        fact: &pb::Envelope,
        category: usize,
        who: &Who,
        purpose: Purpose,
    ) -> Result<Proj, String> {
        if fact.agency_id == who.agency {
            return Ok(Proj::Full);
        }
        if !purposes(category).contains(&purpose) {
            return Err(format!("purpose {purpose} is not allowed for D{category}"));
        }
        let approved = self
            .approvals
            .contains(&(fact.event_id.clone(), who.agency.clone()));
        let foreign = if self
            .foreign_approvals
            .contains(&(fact.event_id.clone(), who.agency.clone()))
        {
            " (an approval exists, but it was not granted by the originator)"
        } else {
            ""
        };
        if RESTRICTED.contains(&category) && !approved {
            return Err(format!(
                "D{category} is restricted and the originator has not approved it{foreign}"
            ));
        }
        if GATED.contains(&category) && !self.gate_open() {
            return Err("the D4/D5 stage gate is shut (no s47 enquiry or plan)".into());
        }
        let boxed = TABLE[category][who.column as usize];
        match cell(category, who.column) {
            Access::Never | Access::OwnOnly => Err(format!("the box is {boxed:?}")),
            Access::Governance if who.privacy_officer && self.mash_referral => Ok(Proj::Full),
            Access::Governance => {
                Err("the box is \"governance\" (MASH privacy officer, MASH referral)".into())
            }
            Access::Approval if approved => Ok(Proj::Full),
            Access::Approval => Err(format!(
                "the box is {boxed:?} and there is no originator approval{foreign}"
            )),
            Access::Flag(need) | Access::Full(need) | Access::Summary(need) if !self.holds(need, who) => Err(
                format!("the box is {boxed:?} and the caller does not hold {need:?}"),
            ),
            Access::Flag(_) => Ok(Proj::Flag),
            Access::Summary(_) => Ok(Proj::Summary),
            Access::Full(_) => Ok(Proj::Full),
        }
    }

    /// Whether `who` may see the identity (D0) recorded on `fact`. `certain`: whether the oracle insists
    /// that a view shows it; it does not for what rests on an originator's approval, for privacy
    /// officers, or for purposes D0 does not allow.
    fn identity_visible(&self, fact: &pb::Envelope, who: &Who, purpose: Purpose, certain: bool) -> bool {
        // The table's columns are practitioners' (and MASH members'); a privacy officer's view is held
        // to them as a ceiling only.
        if certain && who.privacy_officer {
            return false;
        }
        if fact.agency_id == who.agency {
            return !certain || purposes(0).contains(&purpose);
        }
        if certain && cell(0, who.column) == Access::Approval {
            return false;
        }
        // A MASH related to the child only by a referral it may not have handled (no MASH check): the
        // oracle allows, but does not insist on, its identity.
        let r = self.rel(&who.agency);
        let related = r.published || r.enrolled || r.participant || r.core_group || r.other_involvement;
        if certain && who.column == Column::Mash && !self.mash_checked && !related {
            return false;
        }
        self.ceiling(fact, 0, who, purpose).is_ok()
    }
}

/// A caller.
#[derive(Debug, Clone)]
struct Who {
    agency: String,
    column: Column,
    privacy_officer: bool,
    token: String,
}

impl Who {
    fn label(&self) -> String {
        format!(
            "{}{} ({})",
            self.agency,
            if self.privacy_officer {
                " privacy officer"
            } else {
                ""
            },
            self.column.name()
        )
    }
}

// ── Findings ───────────────────────────────────────────────────────────────────────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// A fact returned that the table does not let the caller have.
    Fact,
    /// A projection above the box.
    Projection,
    /// A field beyond the projection (defect 1 for the flag).
    Field,
    /// Withheld entries naming what the caller may never see (defect 3).
    Withheld,
    /// Chronology paging revealing facts the caller may never see (defect 3).
    Paging,
    /// Identity not the best known from visible facts (defect 5).
    Identity,
    /// ListAccess records a reader's D13 box does not allow (defect 2).
    AccessLog,
    /// Access records revealing categories or `never` rules (defect 2).
    AccessLogContent,
    /// ListAccess answering with other agencies' records for a purpose D13 does not allow.
    AccessLogPurpose,
    /// A flag check or search telling a caller the table gives nothing of the child that the child is
    /// known (defect 4).
    KnownChild,
    /// The same question asked twice, answered differently.
    Repeat,
    /// A fact its recording agency withdrew (entered in error), or a correction, returned after the
    /// correction (issue 20).
    Withdrawn,
}

impl Class {
    fn title(self) -> &'static str {
        match self {
            Class::Fact => "[table] a fact returned that the table does not allow",
            Class::Projection => "[table] a projection above the box",
            Class::Field => "[defect 1] a field beyond the projection",
            Class::Withheld => "[defect 3] withheld metadata about what the caller may never see",
            Class::Paging => "[defect 3] chronology paging reveals facts the caller may never see",
            Class::KnownChild => {
                "[defect 4] a caller the table gives nothing of the child learns that it is known"
            }
            Class::Identity => "[defect 5] identity is not the best known from the facts the caller may see",
            Class::AccessLog => "[defect 2] ListAccess shows records the reader's D13 box does not allow",
            Class::AccessLogContent => {
                "[defect 2] access records reveal categories or rules the reader may never see"
            }
            Class::Repeat => "[consistency] the same FindChild asked twice answered differently",
            Class::Withdrawn => {
                "[corrections] a fact withdrawn by its recording agency returned after the correction"
            }
            Class::AccessLogPurpose => {
                "[D13 purposes] ListAccess shows other agencies' records for a purpose other than audit or \
                 statutory_review"
            }
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    count: usize,
    methods: BTreeSet<String>,
    purposes: BTreeSet<String>,
    children: BTreeSet<String>,
    examples: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Stats {
    calls: usize,
    returned: usize,
    flags_returned: usize,
    summaries_returned: usize,
    approved_returned: usize,
    referrer_shown: usize,
    withheld_entries: usize,
    identities_shown: usize,
    access_records_read: usize,
    /// ListAccess answers about one child that filled a page (records may have been left out).
    access_pages_full: usize,
    /// Questions about a child some of whose facts were withdrawn by a correction.
    withdrawn_asked: usize,
}

#[derive(Debug, Default)]
struct Findings {
    by_class: BTreeMap<Class, BTreeMap<String, Tally>>,
    stats: Stats,
    elapsed: Duration,
}

impl Findings {
    fn note(
        &mut self,
        class: Class,
        key: String,
        method: &str,
        purpose: Purpose,
        child: &str,
        example: String,
    ) {
        let t = self.by_class.entry(class).or_default().entry(key).or_default();
        t.count += 1;
        t.methods.insert(method.to_owned());
        t.purposes.insert(purpose.to_string());
        t.children.insert(child.to_owned());
        if !example.is_empty() && t.examples.len() < 3 {
            t.examples.insert(example);
        }
    }

    /// Fails with every violation of `classes`, grouped.
    fn assert_none(&self, classes: &[Class]) {
        let mut text = String::new();
        for class in classes {
            let Some(groups) = self.by_class.get(class) else {
                continue;
            };
            let total: usize = groups.values().map(|t| t.count).sum();
            text.push_str(&format!(
                "\n{} — {} distinct, {total} in all:\n",
                class.title(),
                groups.len()
            ));
            for (key, t) in groups {
                text.push_str(&format!(
                    "  {key} ×{}\n      in: {} for {}\n      children: {}\n",
                    t.count,
                    listing(&t.methods, 3),
                    listing(&t.purposes, 5),
                    listing(&t.children, 10),
                ));
                if !t.examples.is_empty() {
                    text.push_str(&format!("      e.g. {}\n", listing(&t.examples, 3)));
                }
            }
        }
        eprintln!(
            "leak oracle: {:?} for the scenario, {:?}",
            self.elapsed, self.stats
        );
        assert!(
            text.is_empty(),
            "violations of the documented sharing table:{text}"
        );
    }
}

/// At most `max` items, then how many more.
fn listing(items: &BTreeSet<String>, max: usize) -> String {
    let mut text: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let more = items.len().saturating_sub(max);
    let tail = format!("… {more} more");
    if more > 0 {
        text.push(&tail);
    }
    text.join("; ")
}

// ── The scenario ───────────────────────────────────────────────────────────────────────────────────────

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Tuesday 3 February 2026, 09:00 UTC.
const T0: i64 = 1_770_109_200_000;
const MASH_PRIVACY_OFFICER_TOKEN: &str = "leak-test-mash-privacy-officer";

/// A valid NHS number in the 999 test range, the first at or after `seed`.
fn nhs_number(mut seed: u32) -> String {
    loop {
        let s = format!("999{seed:06}");
        let digits: [u8; 9] = std::array::from_fn(|i| s.as_bytes()[i] - b'0');
        if let Some(check) = NhsNumber::check_digit(&digits) {
            return format!("{s}{check}");
        }
        seed += 1;
    }
}

struct Names(&'static str, &'static str, &'static str);

/// A hand-made envelope; `names` None: only the NHS number.
fn fact(agency: &str, nhs: &str, case: &str, at: i64, kind: Ev, names: Option<&Names>) -> pb::Envelope {
    let mut e = envelope(agency, "leak-07", nhs, at, kind);
    e.case_id = case.to_owned();
    if let Some(Names(given, family, dob)) = names {
        let child = e.child.as_mut().unwrap();
        child.given_name = (*given).into();
        child.family_name = (*family).into();
        child.date_of_birth = (*dob).into();
    }
    e
}

/// The hand-made children: (publish first, publish second).
fn hand_made() -> (Vec<pb::Envelope>, Vec<pb::Envelope>) {
    let a = nhs_number(412_000);
    let before = Names("Kayla", "Brennan", "2012-03-04");
    let renamed = Names("Kayla", "Brennan-Hale", "2012-03-04");
    let (csc, police, school, gp, ed) = (
        "csc-rotherham",
        "police-sy",
        "school-oakwood",
        "health-gp-clifton",
        "health-rgh-ed",
    );
    let phones = ("01632 960001".to_string(), "01632 960002".to_string());
    let at = |days: i64, hours: i64| T0 + days * DAY + hours * HOUR;

    let enrolled = fact(
        school,
        &a,
        "LEAK-PUPIL-A",
        at(0, 0),
        Ev::InvolvementStarted(pb::InvolvementStarted {
            involved_agency_id: school.into(),
            kind: pb::InvolvementKind::EnrolledPupil as i32,
        }),
        Some(&before),
    );
    let referral = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(1, 0),
        Ev::ReferralReceived(pb::ReferralReceived {
            referrer: Some(pb::ReferrerDetails {
                source_code: "2A".into(),
                referrer_name: "Ms R Referrer, Oakwood Academy DSL".into(),
                referrer_contact: "01632 960999".into(),
            }),
            summary: "disclosed an older man collecting her from school".into(),
        }),
        Some(&before),
    );
    let check = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(1, 1),
        Ev::AgencyCheckRequested(pb::AgencyCheckRequested {
            requested_agency_id: police.into(),
            rag: pb::Rag::Amber as i32,
        }),
        Some(&before),
    );
    let treating = fact(
        gp,
        &a,
        "LEAK-GP-A",
        at(3, 0),
        Ev::InvolvementStarted(pb::InvolvementStarted {
            involved_agency_id: gp.into(),
            kind: pb::InvolvementKind::TreatingClinician as i32,
        }),
        None,
    );
    let strategy = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(4, 0),
        Ev::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
            participant_agency_ids: vec![police.into(), gp.into(), school.into()],
            section47_decided: true,
            summary: "threshold for s47 met".into(),
        }),
        Some(&before),
    );
    let s47 = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(4, 2),
        Ev::Section47EnquiryStarted(pb::Section47EnquiryStarted {
            summary: "joint enquiry with police".into(),
        }),
        Some(&before),
    );
    let intelligence = fact(
        police,
        &a,
        "LEAK-CR-A",
        at(5, 0),
        Ev::PoliceIntelligenceRecorded(pb::PoliceIntelligenceRecorded {
            handling_code: "P".into(),
            summary: "seen in a car registered to a man known for CSE offences".into(),
        }),
        Some(&before),
    );
    let assessment = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(8, 0),
        Ev::AssessmentCompleted(pb::AssessmentCompleted {
            factors: vec!["10A".into(), "11A".into()],
            outcome: "child protection enquiry".into(),
            late_reason: "awaiting the police check".into(),
        }),
        Some(&before),
    );
    let conference = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(10, 0),
        Ev::InitialConferenceHeld(pb::InitialConferenceHeld {
            plan_made: true,
            category: pb::PlanCategory::SexualAbuse as i32,
            core_group_agency_ids: vec![
                police.into(),
                gp.into(),
                school.into(),
                "yjs-rotherham".into(),
                "vol-safe-haven".into(),
            ],
            minutes_summary: "plan made under sexual abuse".into(),
        }),
        Some(&before),
    );
    let plan = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(10, 1),
        Ev::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted {
            category: pb::PlanCategory::SexualAbuse as i32,
            unborn: false,
            contact: Some(pb::AuthorityContact {
                office_hours_phone: phones.0.clone(),
                out_of_hours_phone: phones.1.clone(),
            }),
            ..Default::default()
        }),
        Some(&before),
    );
    // A category change recorded as part of the status flag (D1), and one as a plan record (D5).
    let mut category_flag = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(12, 0),
        Ev::CategoryChanged(pb::CategoryChanged {
            category: pb::PlanCategory::SexualAbuse as i32,
        }),
        Some(&before),
    );
    category_flag.category = pb::DataCategory::D1StatusFlag as i32;
    let category_plan = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(13, 0),
        Ev::CategoryChanged(pb::CategoryChanged {
            category: pb::PlanCategory::Multiple as i32,
        }),
        Some(&before),
    );
    let exclusion = fact(
        school,
        &a,
        "LEAK-PUPIL-A",
        at(15, 0),
        Ev::ExclusionRecorded(pb::ExclusionRecorded {
            permanent: false,
            days: 2,
            reason: "left site with an adult".into(),
        }),
        Some(&before),
    );
    // A later name, recorded by the owner; published before the earlier facts.
    let looked_after = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(20, 0),
        Ev::LookedAfterPeriodStarted(pb::LookedAfterPeriodStarted {
            legal_status: pb::LegalStatus::S31 as i32,
            contact: Some(pb::AuthorityContact {
                office_hours_phone: phones.0.clone(),
                out_of_hours_phone: phones.1.clone(),
            }),
            ..Default::default()
        }),
        Some(&renamed),
    );
    let mut sexual_health = fact(
        gp,
        &a,
        "LEAK-GP-A",
        at(22, 0),
        Ev::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "sexual health clinic".into(),
            reason: pb::AttendanceReason::SexualHealth as i32,
            clinical_summary: "emergency contraception".into(),
        }),
        None,
    );
    sexual_health.category = pb::DataCategory::D7SexualHealth as i32;
    let consent = fact(
        csc,
        &a,
        "LEAK-CSC-A",
        at(23, 0),
        Ev::ConsentRecorded(pb::ConsentRecorded {
            categories: vec![pb::DataCategory::D7SexualHealth as i32],
            given_by: "child".into(),
        }),
        Some(&renamed),
    );
    let approve = |by: &str, case: &str, hours: i64, event: &pb::Envelope, to: &str, names| {
        fact(
            by,
            &a,
            case,
            at(24, hours),
            Ev::OriginatorApprovalGranted(pb::OriginatorApprovalGranted {
                approved_event_id: event.event_id.clone(),
                recipient_agency_id: to.into(),
                reason: "needed for the child protection plan".into(),
            }),
            names,
        )
    };
    let gp_approves = approve(gp, "LEAK-GP-A", 0, &sexual_health, csc, None);
    // Not the originator: worth nothing under the table.
    let police_self_approves = approve(police, "LEAK-CR-A", 1, &sexual_health, police, None);
    let csc_approves_referrer = approve(csc, "LEAK-CSC-A", 2, &referral, police, Some(&renamed));
    let csc_approves_voluntary = approve(
        csc,
        "LEAK-CSC-A",
        3,
        &assessment,
        "vol-safe-haven",
        Some(&renamed),
    );
    let attendance = fact(
        ed,
        &a,
        "LEAK-ED-A",
        at(27, 0),
        Ev::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "emergency department".into(),
            reason: pb::AttendanceReason::Injury as i32,
            clinical_summary: "bruising to the wrist".into(),
        }),
        None,
    );
    let missing = fact(
        police,
        &a,
        "LEAK-CR-A",
        at(30, 0),
        Ev::MissingEpisodeReported(pb::MissingEpisodeReported {
            circumstances: "did not return from school".into(),
        }),
        None,
    );

    // A second child nobody in children's social care or the MASH knows: police and the GP only.
    let b = nhs_number(733_000);
    let pike = Names("Jordan", "Pike", "2010-07-21");
    let b_missing = fact(
        police,
        &b,
        "LEAK-CR-B",
        at(2, 0),
        Ev::MissingEpisodeReported(pb::MissingEpisodeReported {
            circumstances: "found at an address linked to older males".into(),
        }),
        Some(&pike),
    );
    let b_treating = fact(
        gp,
        &b,
        "LEAK-GP-B",
        at(3, 0),
        Ev::InvolvementStarted(pb::InvolvementStarted {
            involved_agency_id: gp.into(),
            kind: pb::InvolvementKind::TreatingClinician as i32,
        }),
        None,
    );
    let b_clinical = fact(
        gp,
        &b,
        "LEAK-GP-B",
        at(4, 0),
        Ev::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "surgery".into(),
            reason: pb::AttendanceReason::SelfHarm as i32,
            clinical_summary: "superficial cuts to the forearm".into(),
        }),
        Some(&pike),
    );
    let b_indicator = fact(
        police,
        &b,
        "LEAK-CR-B",
        at(5, 0),
        Ev::ExploitationIndicatorRecorded(pb::ExploitationIndicatorRecorded {
            indicator: pb::ExploitationIndicator::OlderAssociate as i32,
            detail: "older male associate".into(),
        }),
        None,
    );

    // A third child whose strategy discussion decided against a section 47 enquiry: no enquiry, no plan,
    // so the D4/D5 gate stays shut for everyone but its author.
    let c = nhs_number(586_000);
    let rowe = Names("Alfie", "Rowe", "2013-11-30");
    let c_enrolled = fact(
        school,
        &c,
        "LEAK-PUPIL-C",
        at(1, 0),
        Ev::InvolvementStarted(pb::InvolvementStarted {
            involved_agency_id: school.into(),
            kind: pb::InvolvementKind::EnrolledPupil as i32,
        }),
        Some(&rowe),
    );
    let c_referral = fact(
        csc,
        &c,
        "LEAK-CSC-C",
        at(2, 0),
        Ev::ReferralReceived(pb::ReferralReceived {
            referrer: Some(pb::ReferrerDetails {
                source_code: "6".into(),
                referrer_name: "PC 4411".into(),
                referrer_contact: "01632 960101".into(),
            }),
            summary: "found in a stairwell late at night".into(),
        }),
        Some(&rowe),
    );
    let c_strategy = fact(
        csc,
        &c,
        "LEAK-CSC-C",
        at(3, 0),
        Ev::StrategyDiscussionHeld(pb::StrategyDiscussionHeld {
            participant_agency_ids: vec![police.into(), school.into(), gp.into()],
            section47_decided: false,
            summary: "threshold for s47 not met; single assessment".into(),
        }),
        Some(&rowe),
    );
    let c_missing = fact(
        police,
        &c,
        "LEAK-CR-C",
        at(4, 0),
        Ev::MissingEpisodeReported(pb::MissingEpisodeReported {
            circumstances: "did not come home".into(),
        }),
        Some(&rowe),
    );

    // Corrections (issue 20), published after what they correct: the police correct their intelligence
    // (another summary, same kind and handling code) and withdraw child B's indicator as entered in error; a
    // school's attempt to withdraw the authority's agency check is refused (quarantined) and changes nothing.
    let fixed_intelligence = Ev::PoliceIntelligenceRecorded(pb::PoliceIntelligenceRecorded {
        handling_code: "P".into(),
        summary: "seen in a car; the registered keeper is not known to the police".into(),
    });
    let corrections = [
        correction(&intelligence, police, Some(fixed_intelligence)),
        correction(&b_indicator, police, None),
        correction(&check, school, None),
    ];

    // First: the latest facts (the new name, and the name-less ones). Then the rest, the owner's newest
    // first, so that the last to arrive carry the old name.
    let first = vec![looked_after, attendance, missing];
    let mut csc_rest = vec![
        referral,
        check,
        strategy,
        s47,
        assessment,
        conference,
        plan,
        category_flag,
        category_plan,
        consent,
        csc_approves_referrer,
        csc_approves_voluntary,
    ];
    csc_rest.reverse();
    let mut second = csc_rest;
    second.extend([
        treating,
        sexual_health,
        gp_approves,
        intelligence,
        police_self_approves,
        enrolled,
        exclusion,
        b_missing,
        b_treating,
        b_clinical,
        b_indicator,
        c_enrolled,
        c_referral,
        c_strategy,
        c_missing,
    ]);
    second.extend(corrections);
    (first, second)
}

/// A correction of `target` published by `by` an hour after it: its replacement, or entered in error.
fn correction(target: &pb::Envelope, by: &str, replacement: Option<Ev>) -> pb::Envelope {
    let at = timestamp_millis(target.occurred_at.as_ref().unwrap()) + HOUR;
    let mut e = envelope(
        by,
        "leak-07",
        &target.child.as_ref().unwrap().nhs_number,
        at,
        Ev::RecordCorrected(Box::new(pb::RecordCorrected {
            corrected_event_id: target.event_id.clone(),
            reason: "corrected by the recording agency".into(),
            entered_in_error: replacement.is_none(),
            replacement: replacement.map(|kind| Box::new(pb::Event { kind: Some(kind) })),
        })),
    );
    e.case_id = target.case_id.clone();
    e
}

/// Generated scenarios: `children` children from `seed`, case ids made unique per seed; and a label
/// per child's NHS number.
fn generated(seed: u64, children: usize, labels: &mut BTreeMap<String, String>) -> Vec<pb::Envelope> {
    let s = Scenario::generate(
        &ScenarioConfig {
            children,
            seed,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    for (i, c) in s.children.iter().enumerate() {
        let plan = match (c.on_plan, i % 2 == 1) {
            (false, _) => "no plan",
            (true, true) => "plan ended",
            (true, false) => "on a plan",
        };
        labels.insert(c.nhs.to_string(), format!("seed {seed} child {i} ({plan})"));
    }
    let mut envelopes = s.envelopes;
    for e in &mut envelopes {
        e.case_id = format!("{}-S{seed}", e.case_id);
    }
    // Every ninth fact withdrawn by its recording agency as entered in error (issue 20); identity links are
    // left alone (undoing one is not a correction).
    let withdrawals: Vec<pb::Envelope> = envelopes
        .iter()
        .enumerate()
        .filter(|(i, e)| i % 9 == 4 && !matches!(kind_of(e), Ev::IdentifierLinked(_)))
        .map(|(_, e)| correction(e, &e.agency_id, None))
        .collect();
    envelopes.extend(withdrawals);
    // The MASH records an outcome of a signal about every child (issue 22): the signal's own category
    // whatever the envelope states, as every other child's states D11 as outcomes did before D14 existed.
    for (i, c) in s.children.iter().enumerate() {
        let nhs = c.nhs.to_string();
        let last = envelopes
            .iter()
            .filter(|e| e.child.as_ref().is_some_and(|k| k.nhs_number == nhs))
            .filter_map(|e| e.occurred_at.as_ref().map(timestamp_millis))
            .max()
            .unwrap_or(0);
        let mut outcome = envelope(
            "mash-rotherham",
            "leak-07",
            &nhs,
            last + HOUR,
            Ev::SignalOutcomeRecorded(pb::SignalOutcomeRecorded {
                signal_id: format!("S02/{}", halcyon_schema::EventId::new()),
                outcome: pb::SignalOutcome::Reviewed as i32,
                recorded_by: "mash-07".into(),
                reason: format!("checks made for seed {seed} child {i}"),
            }),
        );
        outcome.case_id = format!("MASH-{i}-S{seed}");
        if i % 2 == 1 {
            outcome.category = pb::DataCategory::D11Exploitation as i32;
        }
        envelopes.push(outcome);
    }
    envelopes
}

/// The node, with one more principal than deploy/tokens.toml: a MASH privacy officer.
async fn harness() -> common::Harness {
    let nats = halcyon_testkit::NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let mut config = common::node_config(&nats, data.path());
    let mut tokens = std::fs::read_to_string(workspace_root().join("deploy/tokens.toml")).unwrap();
    tokens.push_str(&format!(
        "\n[[token]]\nagency = \"mash-rotherham\"\nrole = \"privacy-officer\"\nprincipal = \"mash-dpo-01\"\n\
         sha256 = \"{}\"\n",
        hash_token(MASH_PRIVACY_OFFICER_TOKEN)
    ));
    config.tokens = Tokens::from_toml(&tokens, &common::registry()).unwrap();
    let node = common::start_node(config).await.expect("node starts");
    common::Harness { nats, node, data }
}

fn merge(into: &mut Vec<halcyon_bus::Position>, more: Vec<halcyon_bus::Position>) {
    for p in more {
        match into.iter_mut().find(|q| q.stream == p.stream) {
            Some(q) if q.sequence < p.sequence => *q = p,
            Some(_) => {}
            None => into.push(p),
        }
    }
}

// ── The checks ─────────────────────────────────────────────────────────────────────────────────────────

/// The non-default leaves of an event kind, as (path, value), and the kind's JSON name.
fn leaves(event: Option<&pb::Event>) -> (String, BTreeMap<String, Value>) {
    fn walk(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, p, out);
                }
            }
            Value::Null => {}
            other => {
                out.insert(path, other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    let Some(event) = event else {
        return (String::new(), out);
    };
    let Value::Object(top) = serde_json::to_value(event).unwrap() else {
        return (String::new(), out);
    };
    let Some((kind, body)) = top.into_iter().next() else {
        return (String::new(), out);
    };
    walk(&body, String::new(), &mut out);
    (kind, out)
}

/// Checks the facts one answer returned; returns their event ids.
fn check_facts(
    f: &mut Findings,
    child: &Child,
    who: &Who,
    purpose: Purpose,
    facts: &[pb::VisibleFact],
    method: &str,
) -> BTreeSet<String> {
    let mut returned = BTreeSet::new();
    if !child.withdrawn.is_empty() {
        f.stats.withdrawn_asked += 1;
    }
    for shown in facts {
        f.stats.returned += 1;
        returned.insert(shown.event_id.clone());
        if child.withdrawn.contains(&shown.event_id) {
            f.note(
                Class::Withdrawn,
                format!(
                    "{}: a fact withdrawn by a correction (or a correction) returned",
                    who.label()
                ),
                method,
                purpose,
                &child.label,
                shown.event_id.clone(),
            );
            continue;
        }
        let Some(original) = child.facts.iter().find(|e| e.event_id == shown.event_id) else {
            f.note(
                Class::Fact,
                format!("{}: an event that is not this child's", who.label()),
                method,
                purpose,
                &child.label,
                shown.event_id.clone(),
            );
            continue;
        };
        let category = category_of(original);
        let type_name = kind_of(original).type_name();
        // Returned with the category the rules read it as (the wire value is the category's number + 1).
        if shown.event_type != type_name || shown.category != category as i32 + 1 {
            f.note(
                Class::Fact,
                format!(
                    "{}: D{category} {type_name} returned as {} of category {}",
                    who.label(),
                    shown.event_type,
                    shown.category
                ),
                method,
                purpose,
                &child.label,
                String::new(),
            );
        }
        let own = original.agency_id == who.agency;
        let ceiling = match child.ceiling(original, category, who, purpose) {
            Ok(c) => c,
            Err(why) => {
                f.note(
                    Class::Fact,
                    format!(
                        "{}: D{category} {type_name} from {} returned, though {why}",
                        who.label(),
                        original.agency_id
                    ),
                    method,
                    purpose,
                    &child.label,
                    format!("rule {:?}, projection {}", shown.rule, shown.projection),
                );
                continue;
            }
        };
        let projection = Proj::from_wire(shown.projection);
        if projection.is_none_or(|p| p > ceiling) {
            f.note(
                Class::Projection,
                format!(
                    "{}: D{category} {type_name} from {} as projection {} (the box allows \
                     {ceiling:?} at most)",
                    who.label(),
                    original.agency_id,
                    shown.projection
                ),
                method,
                purpose,
                &child.label,
                format!("rule {:?}", shown.rule),
            );
        }
        let projection = projection.unwrap_or(Proj::Flag).min(ceiling);
        match projection {
            Proj::Flag => f.stats.flags_returned += 1,
            Proj::Summary => f.stats.summaries_returned += 1,
            Proj::Full => {}
        }
        if !own
            && child
                .approvals
                .contains(&(original.event_id.clone(), who.agency.clone()))
        {
            f.stats.approved_returned += 1;
        }
        let referrer_ok = own || child.ceiling(original, 12, who, purpose).is_ok();
        let (kind, published) = leaves(original.event.as_ref());
        let (shown_kind, fields) = leaves(shown.event.as_ref());
        if !shown_kind.is_empty() && shown_kind != kind {
            f.note(
                Class::Fact,
                format!(
                    "{}: D{category} {type_name} returned with the event of a {shown_kind}",
                    who.label()
                ),
                method,
                purpose,
                &child.label,
                String::new(),
            );
            continue;
        }
        for (path, value) in &fields {
            if !own && path.starts_with("referrer.referrer_") {
                f.stats.referrer_shown += 1;
            }
            if !allowed(projection, &kind, path, referrer_ok) {
                f.note(
                    Class::Field,
                    format!(
                        "{}: D{category} {type_name} from {} under the {projection:?} projection \
                         carries `{path}`",
                        who.label(),
                        original.agency_id
                    ),
                    method,
                    purpose,
                    &child.label,
                    format!("{path} = {value}, rule {:?}", shown.rule),
                );
            } else if published.get(path) != Some(value) {
                f.note(
                    Class::Field,
                    format!(
                        "{}: D{category} {type_name} field `{path}` is not what was published",
                        who.label()
                    ),
                    method,
                    purpose,
                    &child.label,
                    format!("shown {value}, published {:?}", published.get(path)),
                );
            }
        }
    }
    returned
}

/// Checks withheld entries (one answer's, or a chronology's pages together) against what was held back.
fn check_withheld(
    f: &mut Findings,
    child: &Child,
    who: &Who,
    purpose: Purpose,
    withheld: &[pb::Withheld],
    returned: &BTreeSet<String>,
    method: &str,
) {
    let held_back = |category: usize| {
        child
            .facts
            .iter()
            .filter(|e| {
                category_of(e) == category && e.agency_id != who.agency && !returned.contains(&e.event_id)
            })
            .count()
    };
    let mut per_category: BTreeMap<usize, u32> = BTreeMap::new();
    let mut gate: u32 = 0;
    for w in withheld {
        f.stats.withheld_entries += 1;
        let category = w
            .rule
            .strip_prefix('D')
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse::<usize>().ok())
            .filter(|n| *n < 15);
        let gated = category.is_none() && w.rule.starts_with("gate.");
        let problem = match category {
            Some(c) if unseeable(c, who.column) => Some(format!(
                "a withheld entry names D{c}, whose box is {:?}",
                TABLE[c][who.column as usize]
            )),
            None if gated && GATED.iter().all(|c| unseeable(*c, who.column)) => {
                Some("a withheld entry names the D4/D5 gate, and both boxes are never".into())
            }
            None if !gated => Some("a withheld rule of a shape the oracle does not know".into()),
            _ if w.rule.contains("never") => Some("a withheld rule says `never`".into()),
            _ => None,
        };
        if let Some(problem) = problem {
            f.note(
                Class::Withheld,
                format!("{}: {problem}", who.label()),
                method,
                purpose,
                &child.label,
                format!("{} ×{}", w.rule, w.count),
            );
        }
        match category {
            Some(c) => *per_category.entry(c).or_default() += w.count,
            None if gated => gate += w.count,
            None => {}
        }
    }
    for (c, count) in per_category {
        let max = held_back(c);
        if count as usize > max {
            f.note(
                Class::Withheld,
                format!(
                    "{}: the withheld count for D{c} exceeds the facts held back",
                    who.label()
                ),
                method,
                purpose,
                &child.label,
                format!("{count} withheld, {max} held back"),
            );
        }
    }
    let gate_max: usize = GATED
        .iter()
        .filter(|c| !unseeable(**c, who.column))
        .map(|c| held_back(*c))
        .sum();
    if gate as usize > gate_max {
        f.note(
            Class::Withheld,
            format!(
                "{}: the withheld count for the D4/D5 gate exceeds the D4/D5 facts it may learn of",
                who.label()
            ),
            method,
            purpose,
            &child.label,
            format!("{gate} withheld, {gate_max} held back"),
        );
    }
}

const IDENTITY_FIELDS: [&str; 4] = ["given_name", "family_name", "date_of_birth", "nhs_number"];

fn identity_field<'a>(c: &'a pb::ChildIdentifiers, field: &str) -> &'a str {
    match field {
        "given_name" => &c.given_name,
        "family_name" => &c.family_name,
        "date_of_birth" => &c.date_of_birth,
        "nhs_number" => &c.nhs_number,
        "upn" => &c.upn,
        "local_id" => &c.local_id,
        _ => unreachable!(),
    }
}

/// The values of `field` on the latest facts (by occurred_at) of `facts` that carry one.
fn latest<'a>(facts: &[&'a pb::Envelope], field: &str) -> BTreeSet<&'a str> {
    let mut best: Option<i64> = None;
    let mut values = BTreeSet::new();
    for e in facts {
        let v = identity_field(e.child.as_ref().unwrap(), field);
        if v.is_empty() {
            continue;
        }
        let at = timestamp_millis(e.occurred_at.as_ref().unwrap());
        if best.is_none_or(|b| at > b) {
            best = Some(at);
            values.clear();
        }
        if best == Some(at) {
            values.insert(v);
        }
    }
    values
}

fn check_identity(f: &mut Findings, child: &Child, who: &Who, purpose: Purpose, view: &pb::ChildView) {
    let method = "FindChild";
    let shown = view.identity.clone().unwrap_or_default();
    let may: Vec<&pb::Envelope> = child
        .facts
        .iter()
        .filter(|e| child.identity_visible(e, who, purpose, false))
        .collect();
    let must: Vec<&pb::Envelope> = child
        .facts
        .iter()
        .filter(|e| child.identity_visible(e, who, purpose, true))
        .collect();
    if IDENTITY_FIELDS
        .iter()
        .any(|x| !identity_field(&shown, x).is_empty())
    {
        f.stats.identities_shown += 1;
    }
    for field in IDENTITY_FIELDS {
        let value = identity_field(&shown, field);
        let (upper, lower) = (latest(&may, field), latest(&must, field));
        if !value.is_empty() && !upper.contains(value) && !lower.contains(value) {
            // The caller asked by NHS number: echoing it back tells it nothing.
            if field == "nhs_number" && value == child.nhs {
                continue;
            }
            let what = if upper.is_empty() {
                "is shown, though the caller may see the identity on none of the child's facts".to_string()
            } else {
                "is not the latest non-empty value among the facts whose identity the caller may see"
                    .to_string()
            };
            f.note(
                Class::Identity,
                format!("{}: identity `{field}` {what}", who.label()),
                method,
                purpose,
                &child.label,
                format!("shown {value:?}, expected one of {upper:?}"),
            );
        }
        if value.is_empty() && !lower.is_empty() {
            let own_named = child.facts.iter().any(|e| {
                e.agency_id == who.agency && !identity_field(e.child.as_ref().unwrap(), field).is_empty()
            });
            f.note(
                Class::Identity,
                format!(
                    "{}: identity `{field}` blanked{}",
                    who.label(),
                    if own_named {
                        " (the caller itself published it)"
                    } else {
                        ""
                    }
                ),
                method,
                purpose,
                &child.label,
                format!("expected {lower:?}"),
            );
        }
    }
    for field in ["upn", "local_id"] {
        let value = identity_field(&shown, field);
        if !value.is_empty()
            && !may
                .iter()
                .any(|e| identity_field(e.child.as_ref().unwrap(), field) == value)
        {
            f.note(
                Class::Identity,
                format!(
                    "{}: identity `{field}` shown from a fact whose identity it may not see",
                    who.label()
                ),
                method,
                purpose,
                &child.label,
                String::new(),
            );
        }
    }
}

/// Whether `reader` may see `record` under its D13 box, for a D13 purpose. `child` is the child the
/// record is about; None for calls about no child (e.g. reading the log without a child filter).
fn may_read(reader: &Who, record: &pb::AccessRecord, child: Option<&Child>) -> Result<(), String> {
    let own = record.agency_id == reader.agency;
    match cell(13, reader.column) {
        Access::Never | Access::Approval => Err("the reader's D13 box is \"–\"".into()),
        Access::OwnOnly if own => Ok(()),
        Access::OwnOnly => Err("its D13 box is \"own queries\" and the call is another agency's".into()),
        // The owning authority and its privacy officer: its own calls, and calls about children it owns
        // (it published a case); a privacy officer also calls about no child.
        Access::Full(_) | Access::Flag(_) | Access::Summary(_) => match child {
            _ if own => Ok(()),
            Some(c) if c.rel(&reader.agency).published => Ok(()),
            Some(_) => {
                Err("\"owner + privacy officer\": another agency's call about a child it does not own".into())
            }
            None if reader.privacy_officer => Ok(()),
            None => Err("\"owner + privacy officer\": another agency's call, about no child".into()),
        },
        // Governance: the MASH's privacy officer, for children whose referral the MASH handled.
        Access::Governance => match child {
            _ if !reader.privacy_officer => {
                Err("its D13 box is \"governance\" and it is not the privacy officer".into())
            }
            Some(c) if c.mash_referral => Ok(()),
            Some(_) => Err("\"governance\": a child whose referral the MASH did not handle".into()),
            None => Ok(()),
        },
    }
}

fn check_record(
    f: &mut Findings,
    reader: &Who,
    purpose: Purpose,
    record: &pb::AccessRecord,
    child: Option<&Child>,
) {
    f.stats.access_records_read += 1;
    let label = child.map_or("(no child)".to_string(), |c| c.label.clone());
    let whose = format!("{}'s {}", record.agency_id, record.method);
    if let Err(why) = may_read(reader, record, child) {
        f.note(
            Class::AccessLog,
            format!("{} is shown access records: {why}", reader.label()),
            &format!("ListAccess, {whose} records"),
            purpose,
            &label,
            String::new(),
        );
    } else if !purposes(13).contains(&purpose) && record.agency_id != reader.agency {
        f.note(
            Class::AccessLogPurpose,
            format!(
                "{} sees another agency's records for a purpose D13 does not allow",
                reader.label()
            ),
            &format!("ListAccess, {whose} records"),
            purpose,
            &label,
            String::new(),
        );
    }
    let method = format!("ListAccess, {whose} records");
    let method = method.as_str();
    let categories = record
        .categories_disclosed
        .iter()
        .map(|c| ("disclosed", *c))
        .chain(record.categories_withheld.iter().map(|c| ("withheld", *c)));
    for (which, c) in categories {
        let c = (c - 1) as usize;
        // D13 itself is what an "own queries" reader is reading: it may see D13 named. What the reader's
        // own call disclosed it has seen already (the view checks hold it to the table).
        let own_disclosure = which == "disclosed" && record.agency_id == reader.agency;
        if c != 13 && !own_disclosure && unseeable(c, reader.column) {
            f.note(
                Class::AccessLogContent,
                format!(
                    "{}: a record names D{c} (box {:?})",
                    reader.label(),
                    TABLE[c][reader.column as usize]
                ),
                method,
                purpose,
                &label,
                format!("in categories_{which}"),
            );
        }
    }
    for rule in &record.rules {
        let category = rule
            .strip_prefix('D')
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse::<usize>().ok())
            .filter(|n| *n < 15);
        let bad = match category {
            Some(c) if c != 13 && unseeable(c, reader.column) => Some(format!(
                "a record names D{c} (box {:?})",
                TABLE[c][reader.column as usize]
            )),
            _ if rule.contains("never") => Some("a record's rule says `never`".to_string()),
            _ => None,
        };
        if let Some(bad) = bad {
            f.note(
                Class::AccessLogContent,
                format!("{}: {bad}", reader.label()),
                method,
                purpose,
                &label,
                format!("in rule {rule:?}"),
            );
        }
    }
}

// ── The run ────────────────────────────────────────────────────────────────────────────────────────────

const CHRONOLOGY_PAGE: u32 = 4;
const ACCESS_PAGE: u32 = 1000;

async fn run() -> Findings {
    let started = Instant::now();
    let h = harness().await;
    let url = h.nats.url();

    let (first, second) = hand_made();
    let mut all: Vec<pb::Envelope> = Vec::new();
    let mut labels = BTreeMap::new();
    let mut batches = vec![
        generated(11, 3, &mut labels),
        generated(23, 2, &mut labels),
        first,
        second,
    ];
    for batch in &mut batches {
        for e in batch.iter() {
            if let Err(problems) = validate_envelope(e.clone()) {
                panic!("the scenario's own envelope is invalid: {problems:?}");
            }
        }
        all.extend(batch.iter().cloned());
    }
    let mut after = Vec::new();
    for batch in &batches {
        merge(&mut after, common::publish_as_agencies(&url, batch).await);
    }

    // The oracle's children.
    let mut by_nhs: BTreeMap<String, Vec<pb::Envelope>> = BTreeMap::new();
    for e in &all {
        by_nhs
            .entry(e.child.as_ref().unwrap().nhs_number.clone())
            .or_default()
            .push(e.clone());
    }
    let children: Vec<Child> = by_nhs
        .into_iter()
        .map(|(nhs, facts)| {
            let label = labels
                .get(&nhs)
                .cloned()
                .unwrap_or_else(|| format!("hand-made {}", facts[0].case_id.rsplit('-').next().unwrap()));
            Child::derive(label, nhs, facts)
        })
        .collect();

    let registry = common::registry();
    let mut callers: Vec<Who> = registry
        .iter()
        .map(|a| Who {
            agency: a.id.to_string(),
            column: Column::of(a.kind.as_str()),
            privacy_officer: false,
            token: format!("demo-{}", a.id),
        })
        .collect();
    callers.push(Who {
        agency: "csc-rotherham".into(),
        column: Column::Csc,
        privacy_officer: true,
        token: "demo-privacy-officer".into(),
    });
    callers.push(Who {
        agency: "mash-rotherham".into(),
        column: Column::Mash,
        privacy_officer: true,
        token: MASH_PRIVACY_OFFICER_TOKEN.into(),
    });

    let mut f = Findings::default();
    let mut client = h.client().await;
    let mut child_ids: BTreeMap<String, usize> = BTreeMap::new();
    // An NHS number no scenario uses: the answers every unentitled caller must get.
    let unknown = nhs_number(777_000);
    assert!(children.iter().all(|c| c.nhs != unknown));
    for who in &callers {
        for purpose in PURPOSES {
            let flag_of = |nhs: &str| pb::CheckFlagRequest {
                context: Some(common::context(purpose, &after)),
                nhs_number: nhs.to_owned(),
            };
            let as_unknown = client
                .check_flag(common::authorised(flag_of(&unknown), &who.token))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| (s.code(), s.message().to_owned()));
            for (index, child) in children.iter().enumerate() {
                // Defect 4: a caller the table gives no flag fact of this child (D1) gets, from a flag
                // check, the answer for a child Halcyon does not know.
                let d1_allowed = child
                    .facts
                    .iter()
                    .filter(|e| category_of(e) == 1)
                    .any(|e| child.ceiling(e, 1, who, purpose).is_ok());
                let flag = client
                    .check_flag(common::authorised(flag_of(&child.nhs), &who.token))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| (s.code(), s.message().to_owned()));
                if !d1_allowed && flag != as_unknown {
                    f.note(
                        Class::KnownChild,
                        format!(
                            "{}: CheckFlag answers otherwise than for an unknown child",
                            who.label()
                        ),
                        "CheckFlag",
                        purpose,
                        &child.label,
                        format!("{flag:?} against {as_unknown:?}"),
                    );
                }
                let request = pb::FindChildRequest {
                    context: Some(common::context(purpose, &after)),
                    identifier: Some(pb::find_child_request::Identifier::NhsNumber(child.nhs.clone())),
                };
                f.stats.calls += 2;
                let Ok(view) = client
                    .find_child(common::authorised(request.clone(), &who.token))
                    .await
                    .map(|r| r.into_inner())
                else {
                    continue;
                };
                // Asked again with nothing new projected, the node reuses the view it decided: the answer
                // must be the one the first decision gave.
                let again = client
                    .find_child(common::authorised(request, &who.token))
                    .await
                    .map(|r| r.into_inner());
                if again.ok().as_ref() != Some(&view) {
                    f.note(
                        Class::Repeat,
                        format!("{}: a second FindChild answered differently", who.label()),
                        "FindChild",
                        purpose,
                        &child.label,
                        String::new(),
                    );
                }
                child_ids.insert(view.child_id.clone(), index);
                let returned = check_facts(&mut f, child, who, purpose, &view.facts, "FindChild");
                check_withheld(
                    &mut f,
                    child,
                    who,
                    purpose,
                    &view.withheld,
                    &returned,
                    "FindChild",
                );
                check_identity(&mut f, child, who, purpose, &view);

                // The chronology, a few facts a page.
                let (mut token, mut pages, mut returned, mut withheld) =
                    (String::new(), 0usize, BTreeSet::new(), Vec::new());
                loop {
                    let request = pb::GetChronologyRequest {
                        context: Some(common::context(purpose, &after)),
                        child_id: view.child_id.clone(),
                        page_size: CHRONOLOGY_PAGE,
                        page_token: token.clone(),
                    };
                    f.stats.calls += 1;
                    let Ok(page) = client
                        .get_chronology(common::authorised(request, &who.token))
                        .await
                        .map(|r| r.into_inner())
                    else {
                        break;
                    };
                    pages += 1;
                    returned.extend(check_facts(
                        &mut f,
                        child,
                        who,
                        purpose,
                        &page.facts,
                        "GetChronology",
                    ));
                    withheld.extend(page.withheld);
                    if page.next_page_token.is_empty() || pages > 1000 {
                        break;
                    }
                    token = page.next_page_token;
                }
                check_withheld(&mut f, child, who, purpose, &withheld, &returned, "GetChronology");
                let learnable = returned.len()
                    + child
                        .facts
                        .iter()
                        .filter(|e| {
                            e.agency_id != who.agency
                                && !returned.contains(&e.event_id)
                                && !unseeable(category_of(e), who.column)
                        })
                        .count();
                let most = learnable.div_ceil(CHRONOLOGY_PAGE as usize).max(1);
                if pages > most {
                    f.note(
                        Class::Paging,
                        format!(
                            "{}: more chronology pages than the facts it may learn of fill",
                            who.label()
                        ),
                        "GetChronology",
                        purpose,
                        &child.label,
                        format!(
                            "{pages} pages of {CHRONOLOGY_PAGE} for {} facts it may learn of ({} returned); \
                             the child has {}",
                            learnable,
                            returned.len(),
                            child.facts.len()
                        ),
                    );
                }
            }
        }
    }

    // The access log, now that every view has been read.
    let mut audit = AuditServiceClient::connect(format!("http://{}", h.node.addr))
        .await
        .unwrap();
    // For the D13 purposes child by child (a page holds the latest 1000 records), then unfiltered for
    // calls about no child; for the other purposes (where only the reader's own calls may come back)
    // the latest page, unfiltered.
    let by_child: Vec<String> = child_ids.keys().cloned().collect();
    for reader in &callers {
        for purpose in PURPOSES {
            let d13 = purposes(13).contains(&purpose);
            let filters = if d13 { &by_child[..] } else { &[] };
            for filter in filters.iter().map(Some).chain([None]) {
                let request = pb::ListAccessRequest {
                    context: Some(common::context(purpose, &[])),
                    child_id: filter.cloned().unwrap_or_default(),
                    page_size: ACCESS_PAGE,
                    ..Default::default()
                };
                f.stats.calls += 1;
                let Ok(records) = audit
                    .list_access(common::authorised(request, &reader.token))
                    .await
                    .map(|r| r.into_inner().records)
                else {
                    continue;
                };
                if filter.is_some() && records.len() >= ACCESS_PAGE as usize {
                    f.stats.access_pages_full += 1;
                }
                // With a D13 purpose, the unfiltered call is for the records about no child.
                for record in records
                    .iter()
                    .filter(|r| !d13 || filter.is_some() || r.child_id.is_empty())
                {
                    let child = child_ids.get(&record.child_id).map(|i| &children[*i]);
                    check_record(&mut f, reader, purpose, record, child);
                }
            }
        }
    }
    h.node.stop(Duration::from_secs(5)).await;
    f.elapsed = started.elapsed();
    f
}

/// The scenario runs once for all the tests in this file.
fn findings() -> &'static Findings {
    static FINDINGS: OnceLock<Findings> = OnceLock::new();
    FINDINGS.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run())
    })
}

#[test]
fn the_oracle_exercises_every_path() {
    let s = &findings().stats;
    assert!(s.returned > 500, "{s:?}");
    assert!(s.flags_returned > 20, "flag recipients saw flags: {s:?}");
    assert!(
        s.summaries_returned > 0,
        "the CSC saw police intelligence redacted: {s:?}"
    );
    assert!(s.approved_returned > 0, "an approved fact was shown: {s:?}");
    assert!(
        s.referrer_shown > 0,
        "an approved recipient saw the referrer: {s:?}"
    );
    assert!(s.withheld_entries > 50, "{s:?}");
    assert!(s.identities_shown > 50, "{s:?}");
    assert!(s.access_records_read > 100, "{s:?}");
    assert_eq!(
        s.access_pages_full, 0,
        "every child's access records fit a page: {s:?}"
    );
}

#[test]
fn a_view_asked_twice_is_the_same() {
    findings().assert_none(&[Class::Repeat]);
}

#[test]
fn returned_facts_are_ones_the_table_allows() {
    findings().assert_none(&[Class::Fact, Class::Projection]);
}

#[test]
fn no_fact_withdrawn_by_a_correction_is_returned_after_it() {
    let s = &findings().stats;
    assert!(s.withdrawn_asked > 0, "the scenarios withdraw facts: {s:?}");
    findings().assert_none(&[Class::Withdrawn]);
}

#[test]
fn returned_fields_stay_within_the_projection() {
    findings().assert_none(&[Class::Field]);
}

#[test]
fn withheld_metadata_reveals_nothing_never_seen() {
    findings().assert_none(&[Class::Withheld]);
}

#[test]
fn chronology_paging_reveals_nothing_never_seen() {
    findings().assert_none(&[Class::Paging]);
}

#[test]
fn identity_is_the_best_known_from_facts_the_caller_may_see() {
    findings().assert_none(&[Class::Identity]);
}

#[test]
fn the_access_log_shows_each_reader_only_what_its_box_allows() {
    findings().assert_none(&[Class::AccessLog, Class::AccessLogContent]);
}

#[test]
fn a_caller_denied_the_flag_learns_nothing_of_the_child() {
    findings().assert_none(&[Class::KnownChild]);
}

#[test]
fn the_access_log_is_read_for_audit_or_statutory_review_only() {
    findings().assert_none(&[Class::AccessLogPurpose]);
}
