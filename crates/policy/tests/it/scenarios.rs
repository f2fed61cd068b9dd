//! Scenarios from docs/domain.md and ARCHITECTURE.md, one behaviour each, in given/when/then form.

use crate::common;

use common::{agency_of, given};
use halcyon_policy::{
    AgencyKind, Category, Condition, ConsentGround, DenyKind, Involvement, LawfulBasis, Mode, Policy,
    Projection, Purpose, Relationship, Role, minimise, referrer_identity_granted,
};
use halcyon_schema::pb::{self, event::Kind};

fn policy() -> Policy {
    Policy::england()
}

#[test]
fn an_emergency_department_sees_the_cp_flag_and_the_owning_authoritys_numbers_and_nothing_else() {
    let policy = policy();
    // Given an A&E clinician with no involvement, asking for direct care,
    let ed = given(AgencyKind::HealthUnscheduled, Category::STATUS_FLAG).purpose(Purpose::DirectCare);
    // when the child has a CP plan flag, then the flag is permitted, and the owner is notified.
    let permit = ed.decide(&policy).permit().cloned().expect("CP-IS flag");
    assert_eq!(
        (permit.mode, permit.projection, permit.basis),
        (Mode::Flag, Projection::Flag, LawfulBasis::PublicTask)
    );
    assert!(permit.notify_owner);
    assert_eq!(&*permit.rule, "D1.health-unscheduled.flag");
    // The fact is cut to the flag: that a plan exists and the phone numbers; no category of abuse.
    let plan = pb::Event {
        kind: Some(Kind::ChildProtectionPlanStarted(pb::ChildProtectionPlanStarted {
            category: pb::PlanCategory::Neglect as i32,
            unborn: false,
            contact: Some(pb::AuthorityContact {
                office_hours_phone: "01632 960001".into(),
                out_of_hours_phone: "01632 960002".into(),
            }),
            ..Default::default()
        })),
    };
    let mut flag = plan.clone();
    if let Some(Kind::ChildProtectionPlanStarted(p)) = flag.kind.as_mut() {
        p.category = 0;
    }
    assert_eq!(
        minimise(&plan, permit.projection, false, policy.flag_content()),
        flag
    );
    // But not the plan itself, the referral or the assessment, even with a treating involvement.
    for c in [
        Category::CONFERENCE_PLAN,
        Category::CONTACT_REFERRAL,
        Category::ASSESSMENT,
    ] {
        let mut ask = ed
            .clone()
            .purpose(Purpose::Safeguarding)
            .involved(Involvement::TreatingClinician)
            .s47_started();
        ask.fact.category = c;
        let deny = ask
            .decide(&policy)
            .deny()
            .cloned()
            .unwrap_or_else(|| panic!("{c} permitted to A&E"));
        assert_eq!(deny.kind, DenyKind::NotGranted, "{c}");
    }
    // A GP sees the flag without notifying.
    let gp = given(AgencyKind::HealthCommunity, Category::STATUS_FLAG).decide(&policy);
    assert!(
        gp.permit()
            .is_some_and(|p| !p.notify_owner && p.projection == Projection::Flag)
    );
}

#[test]
fn an_agency_always_sees_its_own_records_in_full() {
    let policy = policy();
    for kind in AgencyKind::ALL {
        for c in Category::all() {
            let own = given(kind, c)
                .recorded_by(agency_of(kind))
                .role(Role::Operator)
                .purpose(Purpose::Audit);
            let permit = own
                .decide(&policy)
                .permit()
                .cloned()
                .unwrap_or_else(|| panic!("{kind} {c}"));
            assert_eq!((&*permit.rule, permit.projection), ("own", Projection::Full));
            let basis = if kind == AgencyKind::Police {
                LawfulBasis::LawEnforcement
            } else {
                LawfulBasis::PublicTask
            };
            assert_eq!(permit.basis, basis);
        }
    }
}

#[test]
fn a_purpose_the_category_does_not_allow_is_denied() {
    let policy = policy();
    let police = given(AgencyKind::Police, Category::EXPLOITATION).involved(Involvement::OwnCase);
    assert!(
        police
            .clone()
            .purpose(Purpose::LawEnforcement)
            .decide(&policy)
            .is_permit()
    );
    let deny = police
        .purpose(Purpose::Audit)
        .decide(&policy)
        .deny()
        .cloned()
        .unwrap();
    assert_eq!((deny.kind, &*deny.rule), (DenyKind::Purpose, "D11.purpose"));
    assert!(
        deny.reason.contains("the purpose audit is not allowed for D11"),
        "{}",
        deny.reason
    );
}

#[test]
fn the_access_log_is_for_owners_own_queries_and_governance_auditing() {
    let policy = policy();
    // The owning authority (it holds its own case), practitioner or privacy officer, for audit.
    let la = given(AgencyKind::ChildrensSocialCare, Category::ACCESS_LOG).involved(Involvement::OwnCase);
    for role in [Role::Practitioner, Role::PrivacyOfficer] {
        assert!(
            la.clone()
                .role(role)
                .purpose(Purpose::Audit)
                .decide_access_record(&policy)
                .is_permit(),
            "{role}"
        );
    }
    assert_eq!(
        la.clone()
            .role(Role::Operator)
            .purpose(Purpose::Audit)
            .decide_access_record(&policy)
            .deny()
            .unwrap()
            .kind,
        DenyKind::Role
    );
    // Police, health and schools: the records of their own calls only ("own queries").
    for kind in [
        AgencyKind::Police,
        AgencyKind::HealthUnscheduled,
        AgencyKind::HealthCommunity,
        AgencyKind::School,
    ] {
        let own = given(kind, Category::ACCESS_LOG)
            .recorded_by(agency_of(kind))
            .purpose(Purpose::Audit);
        let permit = own
            .decide_access_record(&policy)
            .permit()
            .cloned()
            .unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(
            permit.relied_on,
            Some(halcyon_policy::Relationship::OwnRecord),
            "{kind}"
        );
        let others = given(kind, Category::ACCESS_LOG)
            .involved(Involvement::OwnCase)
            .purpose(Purpose::Audit);
        assert_eq!(
            others.decide_access_record(&policy).deny().unwrap().kind,
            DenyKind::Relationship,
            "{kind}"
        );
    }
    // Youth justice and the voluntary sector: "–", not even the records of their own calls.
    for kind in [AgencyKind::YouthJustice, AgencyKind::Voluntary] {
        let own = given(kind, Category::ACCESS_LOG)
            .recorded_by(agency_of(kind))
            .purpose(Purpose::Audit);
        assert_eq!(
            own.clone().decide_access_record(&policy).deny().unwrap().kind,
            DenyKind::NotGranted,
            "{kind}"
        );
        // Its own stored events of the category (an approval, a share decision) are its own records.
        assert_eq!(&*own.decide(&policy).permit().unwrap().rule, "own", "{kind}");
    }
    assert_eq!(
        la.role(Role::PrivacyOfficer)
            .decide_access_record(&policy)
            .deny()
            .unwrap()
            .kind,
        DenyKind::Purpose
    );
    // MASH governance: its privacy officer, for children whose referral it handled.
    let mash = given(AgencyKind::Mash, Category::ACCESS_LOG)
        .role(Role::PrivacyOfficer)
        .purpose(Purpose::Audit);
    assert_eq!(mash.decide(&policy).deny().unwrap().kind, DenyKind::Relationship);
    assert!(mash.stage(|s| s.mash_referral = true).decide(&policy).is_permit());
    // Privacy officers see nothing else of other agencies' records.
    let po = given(AgencyKind::ChildrensSocialCare, Category::MISSING)
        .role(Role::PrivacyOfficer)
        .involved(Involvement::OwnCase);
    assert_eq!(po.decide(&policy).deny().unwrap().kind, DenyKind::Role);
}

#[test]
fn break_glass_stands_in_for_a_relationship_for_a_limited_time_and_is_marked() {
    let policy = policy();
    // A school nurse with no involvement asks for missing-episode records: refused,
    let nurse = given(AgencyKind::School, Category::MISSING);
    assert_eq!(nurse.decide(&policy).deny().unwrap().kind, DenyKind::Relationship);
    // permitted on a break-glass with a reason, marked for review, on the vital-interests basis,
    let glass = nurse
        .clone()
        .break_glass("pupil collapsed; ambulance asks where she has been", 10);
    let permit = glass.decide(&policy).permit().cloned().expect("break-glass");
    assert!(permit.break_glass);
    assert_eq!(permit.basis, LawfulBasis::VitalInterests);
    assert_eq!(
        permit.break_glass_expires_at_ms,
        Some(common::NOW_MS - 10 * common::MINUTE_MS + 240 * common::MINUTE_MS)
    );
    // refused once the break-glass has lapsed, or before it starts,
    for minutes_ago in [241, -1] {
        let stale = nurse
            .clone()
            .break_glass("pupil collapsed", minutes_ago)
            .decide(&policy);
        assert_eq!(
            stale.deny().unwrap().kind,
            DenyKind::BreakGlassExpired,
            "{minutes_ago}"
        );
        assert_eq!(stale.rule(), "break-glass.expired");
    }
    // and refused without a reason, even where it would not be needed.
    let blank = nurse
        .clone()
        .involved(Involvement::EnrolledPupil)
        .break_glass("   ", 0)
        .decide(&policy);
    assert_eq!(
        (blank.deny().unwrap().kind, blank.rule()),
        (DenyKind::BreakGlassWithoutReason, "break-glass.no-reason")
    );
    // A break-glass not needed is not marked.
    let held = nurse
        .involved(Involvement::EnrolledPupil)
        .break_glass("not needed", 0)
        .decide(&policy);
    assert!(
        held.permit()
            .is_some_and(|p| !p.break_glass && p.relied_on == Some(Relationship::EnrolledPupil))
    );
}

#[test]
fn break_glass_opens_no_never_box_approval_gate_or_consent() {
    let policy = policy();
    let reason = "unconscious, suspected overdose";
    // never: CSC and health clinical detail
    let never = given(AgencyKind::ChildrensSocialCare, Category::HEALTH_CLINICAL).break_glass(reason, 0);
    assert_eq!(never.decide(&policy).deny().unwrap().kind, DenyKind::NotGranted);
    // N: A&E and the strategy discussion
    let n = given(AgencyKind::HealthUnscheduled, Category::STRATEGY_S47)
        .s47_started()
        .break_glass(reason, 0);
    assert_eq!(
        n.decide(&policy).deny().unwrap().kind,
        DenyKind::OriginatorApproval
    );
    // restricted: sexual health
    let d7 = given(AgencyKind::HealthUnscheduled, Category::SEXUAL_HEALTH)
        .consented(Category::SEXUAL_HEALTH)
        .break_glass(reason, 0);
    assert_eq!(
        d7.decide(&policy).deny().unwrap().kind,
        DenyKind::OriginatorApproval
    );
    // the stage gate
    let gate = given(AgencyKind::Police, Category::STRATEGY_S47).break_glass(reason, 0);
    assert_eq!(gate.decide(&policy).deny().unwrap().kind, DenyKind::Stage);
}

#[test]
fn health_detail_needs_approval_and_consent_or_an_exemption() {
    let policy = policy();
    let police = given(AgencyKind::Police, Category::HEALTH_CLINICAL);
    assert_eq!(
        police.decide(&policy).deny().unwrap().kind,
        DenyKind::OriginatorApproval
    );
    let approved = police.approved();
    let deny = approved.decide(&policy).deny().cloned().unwrap();
    assert_eq!(deny.kind, DenyKind::Consent);
    assert!(
        deny.reason.contains("consent or a recorded consent exemption"),
        "{}",
        deny.reason
    );
    let consented = approved
        .clone()
        .consented(Category::HEALTH_CLINICAL)
        .decide(&policy);
    let permit = consented.permit().cloned().unwrap();
    assert_eq!(
        (permit.consent, permit.basis),
        (ConsentGround::Consented, LawfulBasis::LawEnforcement)
    );
    assert_eq!(permit.condition, Some(Condition::SafeguardingChildren));
    let exempted = approved
        .clone()
        .exempted(Category::HEALTH_CLINICAL)
        .decide(&policy);
    assert_eq!(exempted.permit().unwrap().consent, ConsentGround::Exempted);
    // Consent to another category does not count.
    assert!(
        !approved
            .consented(Category::SEXUAL_HEALTH)
            .decide(&policy)
            .is_permit()
    );
}

#[test]
fn the_voluntary_sector_needs_approval_and_consent_outside_the_core_group() {
    let policy = policy();
    let charity = given(AgencyKind::Voluntary, Category::EXPLOITATION).approved();
    assert_eq!(charity.decide(&policy).deny().unwrap().kind, DenyKind::Consent);
    assert!(
        charity
            .exempted(Category::EXPLOITATION)
            .decide(&policy)
            .is_permit()
    );
    let core = given(AgencyKind::Voluntary, Category::CONFERENCE_PLAN).involved(Involvement::CoreGroup);
    assert!(core.stage(|s| s.plan_active = true).decide(&policy).is_permit());
}

#[test]
fn police_intelligence_with_a_restrictive_handling_code_needs_the_forces_approval() {
    let policy = policy();
    let la =
        given(AgencyKind::ChildrensSocialCare, Category::POLICE_INTELLIGENCE).involved(Involvement::OwnCase);
    // no code, or the open code P: redacted (summary) on query
    for ask in [
        la.clone(),
        la.clone().handling_code("P"),
        la.clone().handling_code(" P "),
    ] {
        let permit = ask.decide(&policy).permit().cloned().unwrap();
        assert_eq!(
            (permit.projection, permit.mode),
            (Projection::Summary, Mode::Query)
        );
    }
    // C (conditions apply): only with approval
    let c = la.handling_code("C");
    let deny = c.decide(&policy).deny().cloned().unwrap();
    assert_eq!(
        (deny.kind, &*deny.rule),
        (DenyKind::OriginatorApproval, "D8.handling-code")
    );
    assert!(c.approved().decide(&policy).is_permit());
}

#[test]
fn police_see_the_referral_summary_once_there_is_a_section_47_or_a_mash_referral() {
    let policy = policy();
    let police = given(AgencyKind::Police, Category::CONTACT_REFERRAL).involved(Involvement::OwnCase);
    let deny = police.decide(&policy).deny().cloned().unwrap();
    assert_eq!((deny.kind, &*deny.rule), (DenyKind::Stage, "D2.police.query"));
    assert!(police.clone().s47_started().decide(&policy).is_permit());
    assert!(
        police
            .stage(|s| s.mash_referral = true)
            .decide(&policy)
            .is_permit()
    );
}

#[test]
fn the_mash_relies_on_the_referral_being_with_it() {
    let policy = policy();
    let mash = given(AgencyKind::Mash, Category::EXPLOITATION);
    assert_eq!(mash.decide(&policy).deny().unwrap().kind, DenyKind::Relationship);
    let permit = mash
        .stage(|s| s.mash_referral = true)
        .decide(&policy)
        .permit()
        .cloned()
        .unwrap();
    assert_eq!(
        (permit.mode, permit.relied_on),
        (Mode::Pushed, Some(Relationship::MashReferral))
    );
}

#[test]
fn referrer_identity_is_shown_only_with_the_originators_approval() {
    let policy = policy();
    let police = given(AgencyKind::Police, Category::CONTACT_REFERRAL)
        .involved(Involvement::OwnCase)
        .s47_started();
    assert!(police.decide(&policy).is_permit());
    assert!(!referrer_identity_granted(&policy, &police.request()));
    let approved = police.approved();
    assert!(referrer_identity_granted(&policy, &approved.request()));
    // Schools never get it.
    let school = given(AgencyKind::School, Category::CONTACT_REFERRAL)
        .approved()
        .involved(Involvement::CoreGroup);
    assert!(!referrer_identity_granted(
        &policy,
        &school.stage(|s| s.plan_active = true).request()
    ));
}

#[test]
fn every_decision_carries_the_policy_version() {
    let policy = policy();
    let permit = given(AgencyKind::Police, Category::STATUS_FLAG).decide(&policy);
    let deny = given(AgencyKind::Voluntary, Category::STATUS_FLAG).decide(&policy);
    assert!(permit.is_permit() && !deny.is_permit());
    for decision in [permit, deny] {
        assert_eq!(decision.policy_version(), "england-2026.4");
    }
}

/// The archived policy england-2026.2, in force before signals had their own category.
fn england_2026_2() -> Policy {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policy/england-2026.2.toml");
    Policy::from_toml(&std::fs::read_to_string(&path).unwrap(), "england-2026.2.toml").unwrap()
}

#[test]
fn a_signal_under_a_policy_written_before_signals_had_a_category_is_decided_as_it_was_then() {
    // Expectations from the two files' tables: 2026.2 has no D14 and its D11 boxes are police "P",
    // MASH "P" (involvement or MASH referral), school "Q"; 2026.3's D14 boxes are MASH "P (area)" and
    // police "–".
    let old = england_2026_2();
    let new = policy();
    let police = given(AgencyKind::Police, Category::SIGNAL).involved(Involvement::OwnCase);
    let mash_area_only = given(AgencyKind::Mash, Category::SIGNAL)
        .role(Role::MashMember)
        .in_area();
    let mash_referred = given(AgencyKind::Mash, Category::SIGNAL)
        .role(Role::MashMember)
        .stage(|s| s.mash_referral = true);

    // Then, under 2026.2, a signal (or a signal's outcome) is an exploitation record, as it was:
    let rule = |d: halcyon_policy::Decision| d.rule().to_owned();
    assert_eq!(rule(police.decide(&old)), "D11.police.pushed");
    assert!(police.decide(&old).is_permit());
    assert_eq!(rule(mash_referred.decide(&old)), "D11.mash.pushed");
    assert!(
        !mash_area_only.decide(&old).is_permit(),
        "no MASH received a signal by area before 2026.3"
    );
    assert!(
        police
            .explain(&old)
            .contains("decided as D11, which it was split out of"),
        "{}",
        police.explain(&old)
    );
    // and under 2026.3 it is a signal: police never, the MASH of the area always.
    assert!(!police.decide(&new).is_permit(), "{}", police.explain(&new));
    assert!(mash_area_only.decide(&new).is_permit());
    assert!(rule(mash_area_only.decide(&new)).starts_with("D14.mash"));
}

#[test]
fn a_mash_referral_made_in_another_area_is_no_relationship_of_this_mash() {
    // The D10 MASH box is "P" with any involvement or the child's MASH referral: Rotherham's front door
    // checking a child gives Rotherham's MASH the missing episodes, not Sheffield's.
    let policy = policy();
    let here = given(AgencyKind::Mash, Category::MISSING)
        .role(Role::MashMember)
        .stage(|s| s.mash_referral = true);
    let mut elsewhere = here.clone();
    elsewhere.state.referral_elsewhere = true;
    assert!(here.decide(&policy).is_permit(), "{}", here.explain(&policy));
    assert!(
        !elsewhere.decide(&policy).is_permit(),
        "{}",
        elsewhere.explain(&policy)
    );
}

#[test]
fn only_the_lead_authority_receives_signals_among_childrens_services() {
    // D14 CSC box "P (lead authority)": the authority holding the case, not another authority that
    // recorded something about the child (an own-case involvement).
    let policy = policy();
    let other_authority =
        given(AgencyKind::ChildrensSocialCare, Category::SIGNAL).involved(Involvement::OwnCase);
    let lead = given(AgencyKind::ChildrensSocialCare, Category::SIGNAL).lead_authority();
    assert!(
        !other_authority.decide(&policy).is_permit(),
        "{}",
        other_authority.explain(&policy)
    );
    assert!(lead.decide(&policy).is_permit(), "{}", lead.explain(&policy));
}

#[test]
fn under_england_2026_3_any_authority_that_recorded_something_received_signals() {
    // The archived file, kept for reviews of its time: its D14 CSC box relied on own-case.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policy/england-2026.3.toml");
    let old = Policy::from_toml(&std::fs::read_to_string(&path).unwrap(), "england-2026.3.toml").unwrap();
    assert_eq!(old.version(), "england-2026.3");
    let other_authority =
        given(AgencyKind::ChildrensSocialCare, Category::SIGNAL).involved(Involvement::OwnCase);
    assert!(
        other_authority.decide(&old).is_permit(),
        "{}",
        other_authority.explain(&old)
    );
    assert!(!other_authority.decide(&policy()).is_permit());
}
