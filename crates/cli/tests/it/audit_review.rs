//! Issue 7: `halcyon audit as-of` and `halcyon audit access`, run as the real binary against a real
//! nats-server (with the deploy users and permissions) and a real node (`halcyon serve`).
//!
//! - As of three moments of a generated case (before the section 47, after it, after the plan ended), a
//!   police principal could see exactly the facts the policy in force then allowed — the expected set is
//!   computed here from the scenario with `halcyon_policy::decide` and a sharing state folded by this test,
//!   not by the code under test — and the accessed list is exactly the calls this test made by then.
//! - `audit access` lists a break-glass use as unreviewed, records a review as an event, and then lists it
//!   as reviewed and no longer as unreviewed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common;
use common::{Node, free_port, halcyon, halcyon_ok};
use halcyon_bus::{Credentials, Position, Publisher, PublisherConfig, connect};
use halcyon_grpc::pb::{self, event::Kind, query_service_client::QueryServiceClient};
use halcyon_policy::{
    AgencyKind, ChildState, Fact, Involvement, Policy, Principal, Purpose, Request, Role, decide,
};
use halcyon_schema::convert::{format_timestamp, timestamp_from_millis};
use halcyon_schema::{Category, EventKindExt};
use halcyon_testkit::{NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};
use serde_json::Value;
use tonic::transport::Channel;

/// The records of agencies' calls, without the operator's own reads (each `audit access` records itself
/// before it lists, issue 20).
fn calls(records: Vec<Value>) -> Vec<Value> {
    records.into_iter().filter(|r| r["role"] != "operator").collect()
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// Publishes each envelope as its own agency; returns the last position per stream.
async fn publish_as_agencies(url: &str, envelopes: &[pb::Envelope]) -> Vec<Position> {
    let mut by_agency: BTreeMap<String, Vec<&pb::Envelope>> = BTreeMap::new();
    for e in envelopes {
        by_agency.entry(e.agency_id.clone()).or_default().push(e);
    }
    let mut last = BTreeMap::new();
    for (agency, envelopes) in by_agency {
        let client = connect(
            url,
            &Credentials::agency(&agency, &format!("{agency}-dev-secret")),
            "test",
        )
        .await
        .unwrap();
        let publisher = Publisher::new(
            client,
            PublisherConfig {
                agency: Some(agency.parse().unwrap()),
                ..Default::default()
            },
        );
        for e in envelopes {
            let p = publisher.publish(e, None).await.expect("published");
            last.insert(p.position.stream.clone(), p.position);
        }
    }
    last.into_values().collect()
}

fn context(purpose: Purpose, after: &[Position], break_glass: Option<&str>) -> pb::RequestContext {
    pb::RequestContext {
        purpose: purpose.to_pb() as i32,
        break_glass: break_glass.is_some(),
        break_glass_reason: break_glass.unwrap_or_default().to_owned(),
        min_positions: after
            .iter()
            .map(|p| pb::Position {
                stream: p.stream.clone(),
                sequence: p.sequence,
            })
            .collect(),
        ..Default::default()
    }
}

/// FindChild by NHS number as `agency`'s demo principal.
async fn find(
    client: &mut QueryServiceClient<Channel>,
    agency: &str,
    nhs: &str,
    purpose: Purpose,
    after: &[Position],
    break_glass: Option<&str>,
) -> pb::ChildView {
    let mut request = tonic::Request::new(pb::FindChildRequest {
        context: Some(context(purpose, after, break_glass)),
        identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.into())),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer demo-{agency}").parse().unwrap());
    client.find_child(request).await.expect("FindChild").into_inner()
}

fn now_ms() -> i64 {
    halcyon_schema::clock::now_ms()
}

/// The moment now, after which the wall clock has moved on by a millisecond, so that anything stored or
/// recorded from here on is later than the moment returned.
async fn moment() -> i64 {
    let t = now_ms();
    while now_ms() <= t {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t
}

fn at_text(ms: i64) -> String {
    format_timestamp(&timestamp_from_millis(ms))
}

fn kind(e: &pb::Envelope) -> &Kind {
    e.event.as_ref().unwrap().kind.as_ref().unwrap()
}

/// The child's sharing state as it concerns `agency`, folded here from the published events by the rules
/// of docs/domain.md §2 and docs/sharing.md (not by the projector's code): own case when the agency recorded something; strategy
/// participant and core group from the meetings (the core group ends with the plan); explicit
/// involvements; the case stage; consent and exemptions.
fn state_for(agency: &str, envelopes: &[&pb::Envelope]) -> ChildState {
    let mut sorted = envelopes.to_vec();
    sorted.sort_by_key(|e| {
        let t = e.occurred_at.unwrap();
        (t.seconds, t.nanos, e.agency_id.clone())
    });
    let mut s = ChildState::default();
    let categories = |values: &[i32]| {
        values
            .iter()
            .filter_map(|v| Category::from_wire(*v))
            .collect::<Vec<_>>()
    };
    for e in sorted {
        if e.agency_id == agency {
            s.involvements.insert(Involvement::OwnCase);
        }
        match kind(e) {
            Kind::ContactReceived(_) | Kind::ReferralReceived(_) => s.stage.referral = true,
            Kind::AgencyCheckRequested(_) => s.stage.mash_referral = true,
            Kind::StrategyDiscussionHeld(d) => {
                if d.participant_agency_ids.iter().any(|a| a == agency) {
                    s.involvements.insert(Involvement::StrategyParticipant);
                }
                s.stage.s47_started |= d.section47_decided;
            }
            Kind::Section47EnquiryStarted(_) => s.stage.s47_started = true,
            Kind::InitialConferenceHeld(c) if c.core_group_agency_ids.iter().any(|a| a == agency) => {
                s.involvements.insert(Involvement::CoreGroup);
            }
            Kind::ChildProtectionPlanStarted(_) => {
                s.stage.plan_active = true;
                s.stage.plan_ended = false;
            }
            Kind::ChildProtectionPlanEnded(_) => {
                s.stage.plan_active = false;
                s.stage.plan_ended = true;
                s.involvements.remove(&Involvement::CoreGroup);
            }
            Kind::LookedAfterPeriodStarted(_) => s.stage.looked_after = true,
            Kind::LookedAfterPeriodEnded(_) => s.stage.looked_after = false,
            Kind::InvolvementStarted(i) if i.involved_agency_id == agency => {
                let k = pb::InvolvementKind::try_from(i.kind).unwrap();
                s.involvements.insert(Involvement::from_pb(k).unwrap());
            }
            Kind::InvolvementEnded(i) if i.involved_agency_id == agency => {
                let k = pb::InvolvementKind::try_from(i.kind).unwrap();
                s.involvements.remove(&Involvement::from_pb(k).unwrap());
            }
            Kind::ConsentRecorded(c) => s.consented.extend(categories(&c.categories)),
            Kind::ConsentWithdrawn(c) => {
                for category in categories(&c.categories) {
                    s.consented.remove(&category);
                }
            }
            Kind::ConsentExemptionRecorded(x) => s.exempted.extend(categories(&x.categories)),
            _ => {}
        }
    }
    s
}

/// The event ids `principal` may see among `envelopes` (the child's, as held then), deciding each with
/// the policy directly.
fn allowed(
    policy: &Policy,
    principal: &Principal,
    envelopes: &[&pb::Envelope],
    now_ms: i64,
) -> BTreeSet<String> {
    let state = state_for(principal.agency.as_str(), envelopes);
    envelopes
        .iter()
        .filter(|e| {
            let fact = Fact {
                category: Category::from_wire(e.category).unwrap(),
                originator: e.agency_id.parse().unwrap(),
                originator_approved: false,
                handling_code: match kind(e) {
                    Kind::PoliceIntelligenceRecorded(i) => Some(i.handling_code.clone()),
                    _ => None,
                },
            };
            decide(
                policy,
                &Request {
                    principal,
                    purpose: Purpose::Safeguarding,
                    fact: &fact,
                    state: &state,
                    break_glass: None,
                    now_ms,
                },
            )
            .is_permit()
        })
        .map(|e| e.event_id.clone())
        .collect()
}

/// A policy history in `dir`: the shipped policy from 2026-01-01, and the same rules under a new version
/// from `second_from_ms`.
fn policy_history(dir: &Path, second_from_ms: i64) -> (PathBuf, Policy, Policy) {
    let shipped = std::fs::read_to_string(workspace_root().join("deploy/policy/england.toml")).unwrap();
    let second = shipped.replacen(
        "version = \"england-2026.4\"",
        "version = \"england-2026.5-test\"",
        1,
    );
    std::fs::write(dir.join("england.toml"), &shipped).unwrap();
    std::fs::write(dir.join("england-2.toml"), &second).unwrap();
    let history = dir.join("history.toml");
    std::fs::write(
        &history,
        format!(
            "[[policy]]\nfile = \"england.toml\"\nversion = \"england-2026.4\"\nin_force_from = \"2026-01-01\"\n\n\
             [[policy]]\nfile = \"england-2.toml\"\nversion = \"england-2026.5-test\"\nin_force_from = \"{}\"\n",
            at_text(second_from_ms)
        ),
    )
    .unwrap();
    (
        history,
        Policy::load(&dir.join("england.toml")).unwrap(),
        Policy::load(&dir.join("england-2.toml")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_at_three_moments_gives_police_what_the_policy_then_allowed_and_what_they_accessed() {
    let nats = NatsServer::start_with_auth();
    let mut node = Node::start(&nats, "audit-review-test");
    let mut client = node.client().await;
    let s = Scenario::generate(
        &ScenarioConfig {
            children: 2,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    // Child 1's case goes to a section 47, a plan, and the plan ends.
    let child = &s.children[1];
    let other = s.children[0].nhs.to_string();
    let nhs = child.nhs.to_string();
    let of_child = |e: &pb::Envelope| e.child.as_ref().unwrap().nhs_number == nhs;
    let index = |name: &str| {
        s.envelopes
            .iter()
            .position(|e| of_child(e) && kind(e).type_name() == name)
            .unwrap_or_else(|| panic!("child 1 has no {name}"))
    };
    let (strategy, s47, plan_ended) = (
        index("StrategyDiscussionHeld"),
        index("Section47EnquiryStarted"),
        index("ChildProtectionPlanEnded"),
    );
    assert!(strategy < s47 && s47 < plan_ended);
    let phases = [
        &s.envelopes[..strategy],
        &s.envelopes[strategy..=s47],
        &s.envelopes[s47 + 1..],
    ];

    // Each phase: publish, then the calls police make (and calls that must not show in police's list:
    // police about another child, children's social care about this one); then the moment.
    let police_purposes = [
        vec![Purpose::Safeguarding],
        vec![Purpose::Safeguarding, Purpose::LawEnforcement],
        vec![Purpose::Safeguarding],
    ];
    let mut moments = Vec::new();
    for (phase, purposes) in phases.iter().zip(&police_purposes) {
        let after = publish_as_agencies(&nats.url(), phase).await;
        for purpose in purposes {
            find(&mut client, "police-sy", &nhs, *purpose, &after, None).await;
        }
        find(
            &mut client,
            "police-sy",
            &other,
            Purpose::Safeguarding,
            &after,
            None,
        )
        .await;
        find(
            &mut client,
            "csc-rotherham",
            &nhs,
            Purpose::Safeguarding,
            &after,
            None,
        )
        .await;
        moments.push(moment().await);
    }

    // The second policy version comes into force between the second and third moments.
    let dir = tempfile::tempdir().unwrap();
    let (history, first_policy, second_policy) = policy_history(dir.path(), moments[1] + 1);
    let police = Principal {
        agency: "police-sy".parse().unwrap(),
        kind: AgencyKind::Police,
        role: Role::Practitioner,
    };
    let mut seen_before: Option<BTreeSet<String>> = None;
    let review_store = tempfile::tempdir().unwrap();
    for (k, at) in moments.iter().enumerate() {
        let held: Vec<&pb::Envelope> = phases[..=k]
            .iter()
            .flat_map(|p| p.iter())
            .filter(|e| of_child(e))
            .collect();
        let (policy, version) = if k < 2 {
            (&first_policy, "england-2026.4")
        } else {
            (&second_policy, "england-2026.5-test")
        };
        let expected = allowed(policy, &police, &held, *at);

        let mut args = vec!["audit", "as-of", "--agency", "police-sy", "--nhs", &nhs];
        let at_arg = at_text(*at);
        args.extend([
            "--at",
            &at_arg,
            "--policy-history",
            history.to_str().unwrap(),
            "--json",
        ]);
        let nats_args = common::as_operator(&nats);
        args.extend(nats_args.iter().map(String::as_str));
        let lines = json_lines(&halcyon_ok(&args));
        // Issue 19: the same question to a review store holding the whole history (all three phases and
        // every call), read as it stood at the moment, gives the same answer line for line; only the count
        // of events stored says what the store holds rather than what the streams held then.
        let store_arg = review_store.path().to_str().unwrap().to_owned();
        let mut held_args = args.clone();
        held_args.extend(["--review-store", &store_arg]);
        let mut held_lines = json_lines(&halcyon_ok(&held_args));
        let mut replayed = lines.clone();
        for l in [&mut replayed[0], &mut held_lines[0]] {
            l.as_object_mut().unwrap().remove("events_stored");
        }
        assert_eq!(held_lines, replayed, "moment {k}: the review store's answer");
        let header = &lines[0];
        assert_eq!(header["kind"], "as_of");
        assert_eq!(header["policy_version"], version, "moment {k}");
        assert_eq!(header["role"], "practitioner");
        assert_eq!(header["purpose"], "safeguarding");
        assert_eq!(header["facts_held"], held.len(), "moment {k}");
        let could_see: BTreeSet<String> = lines
            .iter()
            .filter(|l| l["kind"] == "could_see")
            .map(|l| l["event_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(could_see, expected, "moment {k}: what police could see");
        assert!(
            !expected.is_empty() && expected.len() < held.len(),
            "moment {k}: {expected:?}"
        );
        eprintln!(
            "moment {k} ({}): {} facts held, police could see {}, policy {version}",
            at_text(*at),
            held.len(),
            expected.len()
        );
        let withheld: u64 = lines
            .iter()
            .filter(|l| l["kind"] == "withheld")
            .map(|l| l["count"].as_u64().unwrap())
            .sum();
        assert_eq!(withheld as usize, held.len() - expected.len(), "moment {k}");

        // What police accessed by then: exactly this test's police calls about this child, in order.
        let accessed: Vec<(String, String)> = lines
            .iter()
            .filter(|l| l["kind"] == "accessed")
            .map(|l| {
                assert_eq!(l["agency_id"], "police-sy");
                assert_eq!(l["child_id"], header["child_id"]);
                (
                    l["method"].as_str().unwrap().to_owned(),
                    l["purpose"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let made: Vec<(String, String)> = police_purposes[..=k]
            .iter()
            .flatten()
            .map(|p| ("FindChild".to_owned(), p.to_string()))
            .collect();
        assert_eq!(accessed, made, "moment {k}: accessed");

        // The moments differ as the case does: nothing of the strategy discussion before the section 47;
        // the strategy discussion (police took part) after it.
        let strategy_id = &s.envelopes[strategy].event_id;
        let strategy_categories: BTreeSet<&str> = lines
            .iter()
            .filter(|l| l["kind"] == "could_see")
            .filter_map(|l| l["category"].as_str())
            .collect();
        match k {
            0 => assert!(!strategy_categories.contains("D4"), "{strategy_categories:?}"),
            1 => assert!(
                could_see.contains(strategy_id),
                "police see the strategy discussion"
            ),
            _ => {}
        }
        if let Some(before) = &seen_before {
            assert_ne!(before, &could_see, "moment {k} differs from the one before");
        }
        seen_before = Some(could_see);
    }

    // The same question for people.
    let at_arg = at_text(moments[2]);
    let mut args = vec![
        "audit",
        "as-of",
        "--agency",
        "police-sy",
        "--nhs",
        &nhs,
        "--at",
        &at_arg,
    ];
    args.extend(["--policy-history", history.to_str().unwrap()]);
    let nats_args = common::as_operator(&nats);
    args.extend(nats_args.iter().map(String::as_str));
    let text = halcyon_ok(&args);
    eprintln!("{text}");
    assert!(
        text.contains("what police-sy (police, practitioner) could see"),
        "{text}"
    );
    assert!(
        text.contains("policy england-2026.5-test in force from"),
        "{text}"
    );
    assert!(text.contains("plan-ended"), "{text}");
    assert!(text.contains("accessed by"), "{text}");
    assert!(text.contains("4 call(s) by police-sy"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_names_what_is_wrong_and_exits_non_zero() {
    let nats = NatsServer::start_with_auth();
    let ops = common::as_operator(&nats);
    let mut apply = vec!["streams", "apply"];
    apply.extend(ops.iter().map(String::as_str));
    halcyon_ok(&apply);
    let dead = format!("nats://127.0.0.1:{}", free_port());
    let cases: [(Vec<&str>, Vec<&str>, i32, &str); 6] = [
        (
            vec![
                "--agency",
                "police-nowhere",
                "--nhs",
                "9434765919",
                "--at",
                "2026-06-01",
            ],
            ops.iter().map(String::as_str).collect(),
            64,
            "--agency: unknown agency \"police-nowhere\" (registered: ",
        ),
        (
            vec![
                "--agency",
                "police-sy",
                "--nhs",
                "9434765919",
                "--at",
                "last tuesday",
            ],
            ops.iter().map(String::as_str).collect(),
            64,
            "--at: \"last tuesday\" is not a time",
        ),
        (
            vec![
                "--agency",
                "police-sy",
                "--nhs",
                "9876544321",
                "--at",
                "2026-06-01",
            ],
            ops.iter().map(String::as_str).collect(),
            64,
            "--nhs: invalid NHS number",
        ),
        (
            vec![
                "--agency",
                "police-sy",
                "--nhs",
                "9434765919",
                "--at",
                "2025-06-01",
            ],
            ops.iter().map(String::as_str).collect(),
            64,
            "no policy was in force at 2025-06-01T00:00:00Z",
        ),
        (
            vec![
                "--agency",
                "police-sy",
                "--nhs",
                "9434765919",
                "--at",
                "2026-06-01",
            ],
            ops.iter().map(String::as_str).collect(),
            1,
            "no event about the child with NHS number 9434765919 had been stored by 2026-06-01T00:00:00Z",
        ),
        (
            vec![
                "--agency",
                "police-sy",
                "--nhs",
                "9434765919",
                "--at",
                "2026-06-01",
            ],
            vec!["--nats-url", &dead],
            1,
            "cannot connect to NATS at",
        ),
    ];
    for (i, (args, nats_args, code, message)) in cases.iter().enumerate() {
        let mut all = vec!["audit", "as-of"];
        all.extend(args);
        all.extend(nats_args);
        let out = halcyon(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "case {i}: {stderr}");
        assert!(
            stderr.contains(message),
            "case {i}: expected {message:?} in {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists_break_glass_records_a_review_and_then_no_longer_lists_it_unreviewed() {
    let nats = NatsServer::start_with_auth();
    let mut node = Node::start(&nats, "audit-review-test");
    let mut client = node.client().await;
    let s = Scenario::generate(
        &ScenarioConfig {
            children: 1,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    );
    let nhs = s.children[0].nhs.to_string();
    let after = publish_as_agencies(&nats.url(), &s.envelopes).await;
    // Youth justice has no relationship: a plain look, then a break-glass one that opens the assessment.
    let reason = "child missing overnight; risk to life";
    find(
        &mut client,
        "yjs-rotherham",
        &nhs,
        Purpose::Safeguarding,
        &after,
        None,
    )
    .await;
    let opened = find(
        &mut client,
        "yjs-rotherham",
        &nhs,
        Purpose::Safeguarding,
        &after,
        Some(reason),
    )
    .await;
    assert!(
        opened
            .facts
            .iter()
            .any(|f| f.category == Category::ASSESSMENT.to_pb() as i32)
    );
    find(
        &mut client,
        "police-sy",
        &nhs,
        Purpose::Safeguarding,
        &after,
        None,
    )
    .await;

    let ops = common::as_operator(&nats);
    let list = |extra: &[&str]| {
        let mut args = vec!["audit", "access", "--nhs", &nhs];
        args.extend(extra);
        args.extend(ops.iter().map(String::as_str));
        halcyon_ok(&args)
    };
    let listed = json_lines(&list(&["--json"]));
    // The listing's own read is recorded first, naming the operator and why, and so is listed too.
    let own = listed
        .iter()
        .filter(|r| r["role"] == "operator")
        .collect::<Vec<_>>();
    assert_eq!(own.len(), 1, "{listed:?}");
    assert_eq!(own[0]["method"], "halcyon audit access");
    let all = calls(listed);
    assert_eq!(all.len(), 3, "three calls about the child: {all:?}");
    // Issue 19: the same listing from a review store's index of AUDIT (the child's records only).
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().to_str().unwrap().to_owned();
    for extra in [&["--json"][..], &["--agency", "police-sy", "--json"][..]] {
        let mut held = vec!["--review-store", &store_arg];
        held.extend(extra);
        let from_stream = calls(json_lines(&list(extra)));
        assert_eq!(calls(json_lines(&list(&held))), from_stream, "{extra:?}");
        assert!(!from_stream.is_empty());
    }
    let flagged: Vec<&Value> = all
        .iter()
        .filter(|r| r["break_glass_relied_on"] == true)
        .collect();
    assert_eq!(flagged.len(), 1);
    let record_id = flagged[0]["record_id"].as_str().unwrap().to_owned();
    assert_eq!(flagged[0]["agency_id"], "yjs-rotherham");
    assert_eq!(flagged[0]["break_glass_reason"], reason);
    assert_eq!(flagged[0]["reviews"], serde_json::json!([]));
    let plain_id = all.iter().find(|r| r["agency_id"] == "police-sy").unwrap()["record_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let unreviewed = json_lines(&list(&["--unreviewed", "--json"]));
    assert_eq!(unreviewed.len(), 1);
    assert_eq!(unreviewed[0]["record_id"], record_id.as_str());
    let text = list(&["--break-glass"]);
    assert!(text.contains("1 break-glass, 1 unreviewed"), "{text}");
    assert!(text.contains("BREAK-GLASS, unreviewed"), "{text}");

    let review = |record: &str| {
        let mut args = vec![
            "audit",
            "access",
            "review",
            record,
            "--outcome",
            "justified",
            "--reason",
            "vital interests: child missing overnight; access proportionate",
            "--reviewer",
            "dpo-01",
            "--reviewer-agency",
            "csc-rotherham",
            "--reviewer-password",
            "csc-rotherham-dev-secret",
        ];
        args.extend(ops.iter().map(String::as_str));
        halcyon(&args)
    };
    // Only break-glass uses are reviewed, and only records that exist.
    let refused = review(&plain_id);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("did not rely on break-glass"));
    let missing = review("0192f0c4-7b1e-7cc1-9a57-3f0a8f1e2d3c");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no access record"));

    let done = review(&record_id);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(
        stdout.contains(&format!("reviewed access record {record_id}"))
            && stdout.contains("EVENTS_CSC_ROTHERHAM:"),
        "{stdout}"
    );

    assert_eq!(list(&["--unreviewed", "--json"]), "", "no longer unreviewed");
    let mut by_agency = vec![
        "audit",
        "access",
        "--agency",
        "yjs-rotherham",
        "--unreviewed",
        "--json",
    ];
    by_agency.extend(ops.iter().map(String::as_str));
    assert_eq!(halcyon_ok(&by_agency), "");
    let reviewed = json_lines(&list(&["--break-glass", "--json"]));
    assert_eq!(reviewed.len(), 1);
    let r = &reviewed[0]["reviews"][0];
    assert_eq!(r["outcome"], "justified");
    assert_eq!(r["reviewer_id"], "dpo-01");
    assert_eq!(r["agency_id"], "csc-rotherham");
    let text = list(&["--break-glass"]);
    eprintln!("{stdout}{text}");
    assert!(text.contains("1 break-glass, 0 unreviewed"), "{text}");
    assert!(text.contains("by csc-rotherham/dpo-01: justified"), "{text}");
}
