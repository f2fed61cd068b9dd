//! A request to the policy: who asks (principal), why (purpose), about which fact, and the child's sharing
//! state at that moment (case stage, the principal's involvements, consent, exemptions, break-glass).

use std::collections::BTreeSet;

use halcyon_schema::{AgencyId, AgencyKind, Category};

use crate::vocabulary::{Bits, Involvement, Purpose, Role};

/// Who is asking: an agency of some kind, and the role of the person within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub agency: AgencyId,
    /// The agency's kind (from the registry): the column of the sharing table.
    pub kind: AgencyKind,
    pub role: Role,
}

/// The fact being asked about, reduced to what the policy needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fact {
    /// The data category that governs it (the envelope's `category`).
    pub category: Category,
    /// The agency that recorded it: an agency always sees its own facts in full.
    pub originator: AgencyId,
    /// An `OriginatorApprovalGranted` exists for this fact and the principal's agency.
    pub originator_approved: bool,
    /// Police intelligence handling code (`PoliceIntelligenceRecorded.handling_code`); restricts onward
    /// sharing unless the policy lists it as open.
    pub handling_code: Option<String>,
}

impl Fact {
    /// A fact with no approval and no handling code.
    pub fn new(category: Category, originator: AgencyId) -> Fact {
        Fact {
            category,
            originator,
            originator_approved: false,
            handling_code: None,
        }
    }
}

/// How far the child's case has got, as folded from the case events. Each flag says the point has been
/// reached (and, for `plan_active`, is still current).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    /// A contact or referral has been received.
    pub referral: bool,
    /// A section 47 enquiry has been started (Children Act 1989 s47).
    pub s47_started: bool,
    /// A child protection plan is in force now.
    pub plan_active: bool,
    /// A child protection plan has ended (a later plan may be active again).
    pub plan_ended: bool,
    /// The child is looked after now.
    pub looked_after: bool,
    /// The contact or referral is being handled by a MASH.
    pub mash_referral: bool,
}

/// A vital-interests override the principal has invoked. Time-limited by the policy's
/// `break_glass.max_minutes`; always flagged for review when relied on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BreakGlass {
    /// Why: required, shown to the reviewer. An empty or blank reason is refused.
    pub reason: String,
    /// When it was invoked (ms since the Unix epoch).
    pub started_at_ms: i64,
}

/// The child's sharing state as it concerns this principal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ChildState {
    pub stage: Stage,
    /// The principal's agency's current involvements with the child.
    pub involvements: BTreeSet<Involvement>,
    /// Categories covered by a consent that has not been withdrawn.
    pub consented: BTreeSet<Category>,
    /// Categories covered by a recorded consent exemption.
    pub exempted: BTreeSet<Category>,
    /// The child is in the principal's agency's area (the relationship `area`): set by a caller that knows
    /// the agency registry (`SharingState::for_agency_in`); false otherwise, which grants nothing.
    pub in_area: bool,
    /// The child's MASH referral (its agency checks) was made in other areas than the principal's: the
    /// relationship `mash-referral` is the MASH of the area that made it, not every MASH. Set by a caller
    /// that knows the agency registry (`SharingState::for_agency_in`); false otherwise (one area).
    pub referral_elsewhere: bool,
    /// The principal's agency is the child's lead authority (the relationship `lead-authority`).
    pub lead_authority: bool,
}

impl ChildState {
    pub(crate) fn involvement_bits(&self) -> Bits {
        let mut bits = Bits::default();
        for i in &self.involvements {
            bits.insert(i.bit());
        }
        bits
    }
}

/// One question to the policy: may this principal, for this purpose, see this fact now?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub purpose: Purpose,
    pub fact: &'a Fact,
    pub state: &'a ChildState,
    pub break_glass: Option<&'a BreakGlass>,
    /// The time of the request (ms since the Unix epoch), for break-glass expiry.
    pub now_ms: i64,
}
