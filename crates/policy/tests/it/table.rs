//! The sharing table of docs/sharing.md, one case per box (15 categories × 8 recipient kinds), checked
//! against the shipped policy: the box as written, the mode, lawful basis and projection it means, and a
//! decision for a recipient that meets every condition (permitted unless the box is never) and for one
//! that meets none (denied unless the box is a standing flag). Then the stage gates under the table.

use crate::common;

use common::{d, given};
use halcyon_policy::{
    AgencyKind, Category, Decision, DenyKind, Involvement, LawfulBasis, Mode, Policy, Projection,
    Relationship,
};

/// docs/sharing.md, verbatim. Columns: CSC, police, health: unscheduled, health: GP / HV / school nurse,
/// education (DSL), MASH member, youth justice, voluntary.
const TABLE: [[&str; 8]; 15] = [
    ["Q", "Q", "Q", "Q", "Q (own pupils)", "Q", "Q", "N"],
    [
        "owner",
        "F",
        "F + notify owner",
        "F",
        "F (enrolled)",
        "Q",
        "F",
        "–",
    ],
    [
        "owner",
        "Q (s47 / MASH)",
        "–",
        "N",
        "Q (referrer or CP plan)",
        "Q",
        "N",
        "–",
    ],
    [
        "owner",
        "Q (CP / s47)",
        "–",
        "Q (involved)",
        "Q (involved)",
        "Q",
        "Q (involved)",
        "N",
    ],
    [
        "owner",
        "P (participant)",
        "N",
        "Q (invitee)",
        "Q (invitee)",
        "P",
        "N",
        "–",
    ],
    [
        "owner",
        "P (core group)",
        "–",
        "P (core group)",
        "P (core group)",
        "Q",
        "Q (core group)",
        "Q (core group)",
    ],
    ["–", "N", "own", "own", "–", "N", "–", "–"],
    ["N", "N", "N", "N", "–", "N", "–", "–"],
    [
        "Q (redacted)",
        "own",
        "–",
        "–",
        "–",
        "N (handling code)",
        "N",
        "–",
    ],
    [
        "Q",
        "Q (missing / exploitation)",
        "–",
        "Q (school nurse)",
        "own",
        "Q",
        "Q",
        "–",
    ],
    ["P", "own", "–", "N", "Q (enrolled)", "P", "Q", "N"],
    ["P", "P", "N", "N", "Q", "P", "Q", "N"],
    ["owner", "N", "–", "–", "–", "N", "–", "–"],
    [
        "owner + privacy officer",
        "own queries",
        "own queries",
        "own queries",
        "own queries",
        "governance",
        "–",
        "–",
    ],
    ["P (lead authority)", "–", "–", "–", "–", "P (area)", "–", "–"],
];

/// What a box means for agencies other than the one that recorded the fact (which always sees its own,
/// but in D13). "own queries" (D13) is a query cell whose relationship is `own-record`: an access record
/// is made by the agency whose call it records.
fn expected_mode(category: Category, text: &str) -> Mode {
    match text {
        "–" | "own" => Mode::Never,
        "own queries" => Mode::Query,
        // Referrer identity is restricted, even between local authorities.
        "owner" if category == Category::REFERRER_IDENTITY => Mode::OriginatorApproval,
        "owner" | "owner + privacy officer" | "governance" => Mode::Query,
        t if t.starts_with('P') => Mode::Pushed,
        t if t.starts_with('Q') => Mode::Query,
        t if t.starts_with('F') => Mode::Flag,
        t if t.starts_with('N') => Mode::OriginatorApproval,
        other => panic!("unknown box {other:?}"),
    }
}

/// The police process under DPA 2018 Part 3; agencies assisting a section 47 enquiry do so under a legal
/// obligation; everything else is public task.
fn expected_basis(category: Category, kind: AgencyKind, mode: Mode) -> Option<LawfulBasis> {
    match (mode, kind) {
        (Mode::Never, _) => None,
        (_, AgencyKind::Police) => Some(LawfulBasis::LawEnforcement),
        _ if category == Category::STRATEGY_S47 => Some(LawfulBasis::LegalObligation),
        _ => Some(LawfulBasis::PublicTask),
    }
}

fn expected_projection(text: &str, mode: Mode) -> Option<Projection> {
    match mode {
        Mode::Never => None,
        Mode::Flag => Some(Projection::Flag),
        _ if text.contains("redacted") => Some(Projection::Summary),
        _ => Some(Projection::Full),
    }
}

#[test]
fn every_box_of_the_table_is_a_cell_with_its_mode_basis_and_projection() {
    let policy = Policy::england();
    let mut n_cases = 0;
    for (row, boxes) in TABLE.iter().enumerate() {
        let category = d(row as u8);
        for (col, text) in boxes.iter().enumerate() {
            let kind = AgencyKind::ALL[col];
            let at = format!("{category} × {kind} ({text:?})");
            let mode = expected_mode(category, text);
            let basis = expected_basis(category, kind, mode);
            let projection = expected_projection(text, mode);
            n_cases += 1;

            // The file says what the table says.
            let cell = policy
                .cell(category, kind)
                .unwrap_or_else(|| panic!("{at}: no cell"));
            assert_eq!(cell.table(), *text, "{at}: the file quotes another box");
            assert_eq!(cell.mode(), mode, "{at}: mode");
            assert_eq!(cell.basis(), basis, "{at}: basis");
            assert_eq!(cell.projection(), projection, "{at}: projection");

            // A recipient meeting every condition the cell can ask for.
            let mut entitled = given(kind, category)
                .purpose(cell.purposes()[0])
                .role(cell.roles()[0])
                .involved_in_everything()
                .lead_authority()
                .stage(|s| {
                    s.referral = true;
                    s.s47_started = true;
                    s.plan_active = true;
                    s.mash_referral = true;
                })
                .approved()
                .consented(category);
            if *text == "own queries" {
                entitled = entitled.recorded_by(common::agency_of(kind));
            }
            entitled.fact.handling_code = Some("P".into());
            // An access record (D13) is decided by its cells alone, never the own rule.
            let decided = if category == Category::ACCESS_LOG {
                entitled.decide_access_record(&policy)
            } else {
                entitled.decide(&policy)
            };
            match (decided, mode) {
                (Decision::Deny(deny), Mode::Never) => {
                    assert_eq!(deny.kind, DenyKind::NotGranted, "{at}");
                    assert_eq!(&*deny.rule, cell.id(), "{at}");
                }
                (Decision::Permit(permit), _) if mode != Mode::Never => {
                    assert_eq!(permit.mode, mode, "{at}: decided mode");
                    assert_eq!(Some(permit.basis), basis, "{at}: decided basis");
                    assert_eq!(Some(permit.projection), projection, "{at}: decided projection");
                    assert_eq!(&*permit.rule, cell.id(), "{at}: rule");
                    assert_eq!(&*permit.policy_version, policy.version(), "{at}");
                    assert!(!permit.break_glass, "{at}");
                    assert_eq!(
                        permit.notify_owner,
                        text.contains("notify owner"),
                        "{at}: notify owner"
                    );
                }
                (decision, _) => panic!("{at}: expected {mode}, decided {decision:?}"),
            }

            // A recipient meeting none: only a standing flag gets through.
            let stranger = given(kind, category)
                .purpose(cell.purposes()[0])
                .role(cell.roles()[0]);
            let standing = mode == Mode::Flag && cell.relationships().is_empty();
            assert_eq!(
                stranger.decide(&policy).is_permit(),
                standing,
                "{at}: with no relationship"
            );
        }
    }
    assert_eq!(n_cases, 15 * 8);
    assert_eq!(
        policy.cells().count(),
        15 * 8,
        "the file has cells the table has not"
    );
}

#[test]
fn qualified_boxes_rely_on_the_relationship_they_name() {
    let policy = Policy::england();
    let rel = |c: u8, kind| policy.cell(d(c), kind).unwrap().relationships();
    use AgencyKind::*;
    use Relationship::*;
    assert_eq!(rel(0, School), [EnrolledPupil], "Q (own pupils)");
    assert_eq!(rel(1, School), [EnrolledPupil], "F (enrolled)");
    assert_eq!(rel(4, Police), [StrategyParticipant], "P (participant)");
    assert_eq!(rel(4, HealthCommunity), [StrategyParticipant], "Q (invitee)");
    assert_eq!(rel(4, School), [StrategyParticipant], "Q (invitee)");
    for kind in [Police, HealthCommunity, School, YouthJustice, Voluntary] {
        assert_eq!(rel(5, kind), [CoreGroup], "D5 {kind}: (core group)");
    }
    assert_eq!(rel(9, HealthCommunity), [EnrolledPupil], "Q (school nurse)");
    assert_eq!(rel(10, School), [EnrolledPupil], "Q (enrolled)");
    assert!(
        rel(1, HealthUnscheduled).is_empty(),
        "the CP-IS flag is a standing entitlement"
    );
    assert!(rel(1, Mash).contains(&MashReferral));
    for kind in [Police, HealthUnscheduled, HealthCommunity, School] {
        assert_eq!(rel(13, kind), [OwnRecord], "D13 {kind}: own queries");
    }
    assert_eq!(rel(13, Mash), [MashReferral], "D13 MASH: governance");
    assert!(rel(14, Mash).contains(&Area), "D14 MASH: P (area)");
    assert_eq!(
        rel(14, ChildrensSocialCare),
        [LeadAuthority],
        "D14 CSC: P (lead authority), not any authority that recorded something"
    );
}

/// Issue 22: the MASH of a child's area receives the signal with no relationship at all, and the child
/// being in its area gives it nothing the signal cites: expectations from the table (D14 "P (area)"; every
/// other MASH box needs a relationship or the originator's approval).
#[test]
fn a_child_in_the_mash_area_gives_the_mash_the_signal_and_nothing_it_cites() {
    let policy = Policy::england();
    let mash = |category: Category| given(AgencyKind::Mash, category).in_area();
    assert!(
        mash(Category::SIGNAL).decide(&policy).is_permit(),
        "D14 in its area"
    );
    assert!(
        !given(AgencyKind::Mash, Category::SIGNAL)
            .decide(&policy)
            .is_permit(),
        "D14 outside its area, with no referral"
    );
    for c in 0..14 {
        let category = d(c);
        let decided = mash(category).decide(&policy);
        assert!(
            !decided.is_permit(),
            "{category}: being in the MASH's area must widen nothing: {decided:?}"
        );
    }
    for kind in [
        AgencyKind::Police,
        AgencyKind::School,
        AgencyKind::HealthUnscheduled,
    ] {
        assert!(
            !given(kind, Category::SIGNAL)
                .in_area()
                .involved_in_everything()
                .decide(&policy)
                .is_permit(),
            "{kind}: D14 is never theirs"
        );
    }
}

#[test]
fn strategy_and_plan_records_are_shut_before_a_section_47_or_a_plan_and_open_after_for_participants() {
    let policy = Policy::england();
    // (category, recipient, the involvement its box names, needs originator approval)
    let cases = [
        (4, AgencyKind::ChildrensSocialCare, Involvement::OwnCase, false),
        (4, AgencyKind::Police, Involvement::StrategyParticipant, false),
        (
            4,
            AgencyKind::HealthUnscheduled,
            Involvement::TreatingClinician,
            true,
        ),
        (
            4,
            AgencyKind::HealthCommunity,
            Involvement::StrategyParticipant,
            false,
        ),
        (4, AgencyKind::School, Involvement::StrategyParticipant, false),
        (4, AgencyKind::Mash, Involvement::OwnCase, false),
        (4, AgencyKind::YouthJustice, Involvement::OwnCase, true),
        (5, AgencyKind::ChildrensSocialCare, Involvement::OwnCase, false),
        (5, AgencyKind::Police, Involvement::CoreGroup, false),
        (5, AgencyKind::HealthCommunity, Involvement::CoreGroup, false),
        (5, AgencyKind::School, Involvement::CoreGroup, false),
        (5, AgencyKind::Mash, Involvement::OwnCase, false),
        (5, AgencyKind::YouthJustice, Involvement::CoreGroup, false),
        (5, AgencyKind::Voluntary, Involvement::CoreGroup, false),
    ];
    for (c, kind, involvement, needs_approval) in cases {
        let at = format!("D{c} × {kind}");
        let mut participant = given(kind, d(c)).involved(involvement).stage(|s| {
            s.referral = true;
            s.mash_referral = true;
            s.looked_after = true;
        });
        if needs_approval {
            participant = participant.approved();
        }
        let before = participant.decide(&policy);
        let deny = before
            .deny()
            .unwrap_or_else(|| panic!("{at}: permitted before s47 or plan: {before:?}"));
        assert_eq!(
            (deny.kind, &*deny.rule),
            (DenyKind::Stage, "gate.s47-or-plan"),
            "{at}"
        );
        assert!(deny.reason.contains("section 47"), "{at}: {}", deny.reason);

        for (stage, after) in [
            ("s47", participant.clone().s47_started()),
            ("plan", participant.clone().stage(|s| s.plan_active = true)),
            ("ended plan", participant.clone().stage(|s| s.plan_ended = true)),
        ] {
            let decision = after.decide(&policy);
            assert!(decision.is_permit(), "{at}: denied after {stage}: {decision:?}");
        }
        // A non-participant stays out after the gate opens.
        let outsider = given(kind, d(c)).s47_started().stage(|s| s.plan_active = true);
        assert!(!outsider.decide(&policy).is_permit(), "{at}: outsider let in");
    }
}

#[test]
fn the_core_group_is_pushed_the_plan_while_it_is_active_and_may_only_query_it_after() {
    let policy = Policy::england();
    for kind in [
        AgencyKind::Police,
        AgencyKind::HealthCommunity,
        AgencyKind::School,
    ] {
        let member = given(kind, Category::CONFERENCE_PLAN)
            .involved(Involvement::CoreGroup)
            .s47_started();
        let active = member.clone().stage(|s| s.plan_active = true).decide(&policy);
        assert_eq!(active.permit().map(|p| p.mode), Some(Mode::Pushed), "{kind}");
        let ended = member.clone().stage(|s| s.plan_ended = true).decide(&policy);
        assert_eq!(ended.permit().map(|p| p.mode), Some(Mode::Query), "{kind}");
        // Leaving the core group ends access altogether.
        let mut left = member.stage(|s| s.plan_ended = true);
        left.state.involvements.clear();
        assert!(!left.decide(&policy).is_permit(), "{kind}");
    }
}
