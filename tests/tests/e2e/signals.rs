//! Issue 8 (signals), over real NATS, sled and gRPC: the police record two missing episodes, a school records
//! absences and A&E an intoxication attendance within six weeks → exactly one signal (S02), for the MASH
//! principal on its watch and in ListSignals, citing exactly those four facts by reference; the lead
//! authority receives it too; a school querying the same child sees neither the signal (not listed, not on
//! its watch) nor the police facts it is not entitled to, and the MASH's own view still withholds the
//! health fact the signal cites. The MASH records an outcome (an event) and the
//! signal shows it. A rebuild exports the same read models, signals included, byte for byte. A fact outside
//! the window raises nothing.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use halcyon_bus::Position;
use halcyon_grpc::pb::{
    self, audit_service_client::AuditServiceClient, event::Kind, signal_service_client::SignalServiceClient,
};
use halcyon_node::Node;
use halcyon_policy::Purpose;
use halcyon_projector::{Projector, ViewSpec};
use halcyon_schema::convert::timestamp_millis;
use halcyon_testkit::NatsServer;

const NHS: &str = "9434765919";
const DAY: i64 = 86_400_000;
/// Monday 2 March 2026, 10:00 UTC.
const T0: i64 = 1_772_445_600_000;
/// Every wait in this file gives up after this long.
const WAIT: Duration = Duration::from_secs(20);

fn envelope(agency: &str, at_ms: i64, kind: Kind) -> pb::Envelope {
    halcyon_testkit::envelope(agency, "p-1", NHS, at_ms, kind)
}

fn missing(at_ms: i64) -> pb::Envelope {
    envelope(
        "police-sy",
        at_ms,
        Kind::MissingEpisodeReported(pb::MissingEpisodeReported {
            circumstances: "did not return after school".into(),
        }),
    )
}

fn absence(at_ms: i64) -> pb::Envelope {
    envelope(
        "school-oakwood",
        at_ms,
        Kind::AttendanceConcernRecorded(pb::AttendanceConcernRecorded {
            attendance_percent: 68,
            sessions_missed: 21,
        }),
    )
}

fn intoxication(at_ms: i64) -> pb::Envelope {
    envelope(
        "health-rgh-ed",
        at_ms,
        Kind::HealthAttendanceRecorded(pb::HealthAttendanceRecorded {
            setting: "ED".into(),
            reason: pb::AttendanceReason::Intoxication as i32,
            clinical_summary: "brought in by ambulance, intoxicated".into(),
        }),
    )
}

/// The lead authority's referral and the MASH's check request: the MASH holds the child's referral, so the
/// policy entitles it to the signal category (D11: MASH, "any involvement or MASH referral").
fn case_so_far() -> Vec<pb::Envelope> {
    vec![
        envelope(
            "csc-rotherham",
            T0,
            Kind::ReferralReceived(pb::ReferralReceived {
                referrer: None,
                summary: "worries about who she is with".into(),
            }),
        ),
        envelope(
            "mash-rotherham",
            T0 + 3_600_000,
            Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
                requested_agency_id: "police-sy".into(),
                rag: pb::Rag::Amber as i32,
            }),
        ),
    ]
}

async fn signals_of(node: &Node, agency: &str, after: &[Position]) -> Vec<pb::Signal> {
    let mut client = SignalServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let request = pb::ListSignalsRequest {
        context: Some(common::context(Purpose::Safeguarding, after)),
        ..Default::default()
    };
    client
        .list_signals(common::authorised(request, &format!("demo-{agency}")))
        .await
        .unwrap()
        .into_inner()
        .signals
}

/// The school publishes a marker fact of its own (after everything the node announced before it) and
/// reads its watch up to it: no signal on the way.
async fn school_shown_no_signal(nats: &NatsServer, school_watch: &mut tonic::Streaming<pb::WatchEvent>) {
    let marker = envelope(
        "school-oakwood",
        T0 + 21 * DAY,
        Kind::ExclusionRecorded(pb::ExclusionRecorded {
            permanent: false,
            days: 2,
            reason: "marker".into(),
        }),
    );
    common::publish_as_agencies(&nats.url(), std::slice::from_ref(&marker)).await;
    let until = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < until, "the school's marker within {WAIT:?}");
        match common::next_event(school_watch, "the school's own marker fact")
            .await
            .kind
        {
            Some(pb::watch_event::Kind::Signal(s)) => panic!("a school was shown a signal: {s:?}"),
            Some(pb::watch_event::Kind::Fact(f)) if f.event_id == marker.event_id => break,
            _ => {}
        }
    }
}

fn export(p: &Projector) -> String {
    let mut out = Vec::new();
    p.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_missing_absence_and_intoxication_raise_one_signal_for_the_mash_and_none_for_a_school() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let node = common::start_node(common::node_config(&nats, data.path()))
        .await
        .expect("node starts");
    let mut mash_watch = common::watch_as(&node, "mash-rotherham").await;
    let mut school_watch = common::watch_as(&node, "school-oakwood").await;
    common::publish_as_agencies(&nats.url(), &case_so_far()).await;

    // Within six weeks: two missing episodes, an attendance concern, an intoxication attendance.
    let facts = vec![
        missing(T0 + DAY),
        missing(T0 + 8 * DAY),
        absence(T0 + 15 * DAY),
        intoxication(T0 + 20 * DAY),
    ];
    let after = common::publish_as_agencies(&nats.url(), &facts).await;

    // The MASH is told on its watch, without asking.
    let signal = common::next_signal(&mut mash_watch, "signal for the MASH").await;
    assert_eq!(signal.rule_id, "S02");
    assert_eq!(signal.rule_name, "exploitation indicators co-occur");
    assert_eq!(signal.rule_kind, "co-occurrence");
    assert_eq!(signal.window_days, 42);
    assert_eq!(signal.signal_id, format!("S02/{}", facts[3].event_id));
    assert_eq!(timestamp_millis(signal.fired_at.as_ref().unwrap()), T0 + 20 * DAY);
    let cited: Vec<(&str, &str)> = signal
        .facts
        .iter()
        .map(|f| (f.agency_id.as_str(), f.event_id.as_str()))
        .collect();
    let published: Vec<(&str, &str)> = facts
        .iter()
        .map(|e| (e.agency_id.as_str(), e.event_id.as_str()))
        .collect();
    assert_eq!(
        cited, published,
        "exactly the four facts the rule needs, in time order"
    );
    for (f, e) in signal.facts.iter().zip(&facts) {
        assert_eq!(
            f.stream,
            format!("EVENTS_{}", e.agency_id.to_uppercase().replace('-', "_"))
        );
        assert!(f.sequence >= 1);
        assert_eq!(f.occurred_at, e.occurred_at);
    }
    assert!(signal.outcome.is_none());
    // References only: nothing any fact says is in the signal.
    let wire = format!("{signal:?}");
    for text in ["did not return", "intoxicated"] {
        assert!(!wire.contains(text), "{text:?} in {wire}");
    }

    // Exactly one, listed for the MASH, and for the lead authority.
    let listed = signals_of(&node, "mash-rotherham", &after).await;
    assert_eq!(listed, vec![signal.clone()]);
    assert_eq!(signals_of(&node, "csc-rotherham", &after).await.len(), 1);

    // A school: no signal listed…
    assert!(signals_of(&node, "school-oakwood", &after).await.is_empty());
    // …none on its watch (its own marker fact comes after everything the node announced before it)…
    school_shown_no_signal(&nats, &mut school_watch).await;
    // …and, querying the child, none of the police facts it is not entitled to.
    let mut query = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let view = common::find_by_nhs(&mut query, "school-oakwood", NHS, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    assert!(
        view.facts.iter().all(|f| f.agency_id != "police-sy"),
        "{:?}",
        view.facts.iter().map(|f| &f.agency_id).collect::<Vec<_>>()
    );
    assert!(
        view.facts.iter().any(|f| f.event_id == facts[2].event_id),
        "its own absence record"
    );

    // The signal widens nothing: the MASH's own view of the child still withholds the A&E attendance it
    // cites (health records reach a MASH only with the originator's approval), while the police and
    // school facts the policy grants it are there.
    let mash_view = common::find_by_nhs(&mut query, "mash-rotherham", NHS, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    let seen: Vec<&str> = mash_view.facts.iter().map(|f| f.event_id.as_str()).collect();
    assert!(!seen.contains(&facts[3].event_id.as_str()), "{seen:?}");
    for granted in &facts[..3] {
        assert!(seen.contains(&granted.event_id.as_str()), "{seen:?}");
    }
    assert!(mash_view.withheld.iter().map(|w| w.count).sum::<u32>() >= 1);

    // The MASH records an outcome; the signal shows it, on the watch and in the list.
    let outcome = envelope(
        "mash-rotherham",
        T0 + 22 * DAY,
        Kind::SignalOutcomeRecorded(pb::SignalOutcomeRecorded {
            signal_id: signal.signal_id.clone(),
            outcome: pb::SignalOutcome::ActionTaken as i32,
            recorded_by: "mash-07".into(),
            reason: "strategy discussion convened".into(),
        }),
    );
    let after = common::publish_as_agencies(&nats.url(), std::slice::from_ref(&outcome)).await;
    let updated = common::next_signal(&mut mash_watch, "the signal with its outcome").await;
    assert_eq!(updated.signal_id, signal.signal_id);
    let recorded = updated.outcome.as_ref().expect("an outcome");
    assert_eq!(recorded.outcome(), pb::SignalOutcome::ActionTaken);
    assert_eq!(
        (recorded.agency_id.as_str(), recorded.recorded_by.as_str()),
        ("mash-rotherham", "mash-07")
    );
    assert_eq!(recorded.fact.as_ref().unwrap().event_id, outcome.event_id);
    assert_eq!(
        signals_of(&node, "mash-rotherham", &after).await,
        vec![updated.clone()]
    );
    assert!(signals_of(&node, "school-oakwood", &after).await.is_empty());

    // Every showing was recorded in the access log first; the school's empty answers disclosed nothing.
    let mut audit = AuditServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let records = audit
        .list_access(common::authorised(
            pb::ListAccessRequest {
                context: Some(common::context(Purpose::Audit, &[])),
                child_id: signal.child_id.clone(),
                ..Default::default()
            },
            "demo-privacy-officer",
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    let calls = |agency: &str, method: &str| {
        records
            .iter()
            .filter(|r| r.agency_id == agency && r.method == method)
            .count()
    };
    assert_eq!(calls("mash-rotherham", "ListSignals"), 2);
    assert!(calls("mash-rotherham", "Watch") >= 2, "{records:?}");
    assert_eq!(calls("school-oakwood", "ListSignals"), 0);

    // A rebuild from the streams exports the same read models, signals included.
    let live = node.projector().clone();
    node.stop(Duration::from_secs(5)).await;
    let registry = common::registry();
    let config = common::node_config(&nats, data.path());
    let rebuilt = Arc::new(
        Projector::temporary()
            .unwrap()
            .with_views(ViewSpec::new(Arc::new(config.policy.clone()), &registry))
            .with_deadlines(halcyon_projector::DeadlineSpec::new(config.timescales.clone()))
            .with_signals(halcyon_projector::SignalSpec::new(
                config.signals.clone(),
                &registry,
            )),
    );
    let operator = common::operator(&nats).await;
    halcyon_review::rebuild::project_streams(
        &operator,
        &rebuilt,
        &halcyon_review::rebuild::Until::End,
        &|_, _| {},
    )
    .await
    .unwrap();
    live.derive_all_views().unwrap();
    rebuilt.derive_all_views().unwrap();
    let at_ms = halcyon_schema::clock::now_ms();
    live.record_all_breaches(at_ms).unwrap();
    rebuilt.record_all_breaches(at_ms).unwrap();
    let (live, rebuilt) = (export(&live), export(&rebuilt));
    assert_eq!(
        live.lines().filter(|l| l.starts_with("S ")).count(),
        1,
        "the child's signal record is exported"
    );
    assert_eq!(live, rebuilt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_fact_outside_the_window_raises_no_signal() {
    let h = common::Harness::start().await;
    common::publish_as_agencies(&h.nats.url(), &case_so_far()).await;
    // The attendance comes 44 days after the first missing episode: that episode is outside S02's 42-day
    // window, so within the window there is one missing episode (not "repeat") and two kinds, not three.
    let facts = vec![
        missing(T0 + DAY),
        missing(T0 + 8 * DAY),
        absence(T0 + 15 * DAY),
        intoxication(T0 + 45 * DAY),
    ];
    let after = common::publish_as_agencies(&h.nats.url(), &facts).await;
    common::derived(&h.node, &after).await;
    assert!(signals_of(&h.node, "mash-rotherham", &after).await.is_empty());
    assert!(h.node.projector().signals(None).unwrap().is_empty());

    // A third missing episode, recorded late but occurring on day 30, makes the episodes repeat within the
    // window of the attendance: facts count by when they occurred, not when they arrived, so the signal
    // fires at the attendance, citing the second and third episodes, the absence and the attendance.
    let late = vec![missing(T0 + 30 * DAY)];
    let after = common::publish_as_agencies(&h.nats.url(), &late).await;
    common::derived(&h.node, &after).await;
    let listed = signals_of(&h.node, "mash-rotherham", &after).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].signal_id, format!("S02/{}", facts[3].event_id));
    assert_eq!(
        timestamp_millis(listed[0].fired_at.as_ref().unwrap()),
        T0 + 45 * DAY
    );
    let cited: Vec<&str> = listed[0].facts.iter().map(|f| f.event_id.as_str()).collect();
    assert_eq!(
        cited,
        [
            facts[1].event_id.as_str(),
            facts[2].event_id.as_str(),
            late[0].event_id.as_str(),
            facts[3].event_id.as_str()
        ]
    );
    h.node.stop(Duration::from_secs(5)).await;
}

/// Issue 22: the child the signal matters most for is the one nobody has referred. No referral, no MASH
/// involvement: police, a school and A&E record what completes S02, and
/// - a query carrying the position of the completing fact sees the signal (read your writes covers the
///   derived records; there is no sleep here);
/// - the MASH of the child's area receives it on its watch and in ListSignals, each showing recorded as a
///   disclosure of D14 (the signal category); its view of the child shows none of the facts the signal
///   cites, which the sharing table gives a MASH only with a relationship or the originator's approval;
/// - a school receives nothing;
/// - an outcome the MASH records stays attached when a fact recorded late (an older associate, three weeks
///   back) changes which fact completes the pattern: the signal keeps its id;
/// - the MASH's agency check then creates the relationship the table already recognises (D10 missing
///   episodes: "P" to the MASH with a MASH referral), and only then does it see the missing episodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_22_the_mash_receives_the_signal_of_a_child_nobody_has_referred() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let node = common::start_node(with_sheffield_mash(common::node_config(&nats, data.path())))
        .await
        .expect("node starts");
    let mut mash_watch = common::watch_as(&node, "mash-rotherham").await;
    let mut school_watch = common::watch_as(&node, "school-oakwood").await;

    let facts = vec![
        missing(T0 + DAY),
        missing(T0 + 8 * DAY),
        absence(T0 + 15 * DAY),
        intoxication(T0 + 20 * DAY),
    ];
    let after = common::publish_as_agencies(&nats.url(), &facts).await;
    let id = format!("S02/{}", facts[3].event_id);

    // Read your writes: the positions of the facts, and the signal they complete is there.
    let listed = signals_of(&node, "mash-rotherham", &after).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let signal = listed[0].clone();
    assert_eq!(
        (signal.rule_id.as_str(), signal.signal_id.as_str()),
        ("S02", id.as_str())
    );
    let cited: Vec<&str> = signal.facts.iter().map(|f| f.event_id.as_str()).collect();
    let published: Vec<&str> = facts.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(cited, published);
    assert_eq!(
        common::next_signal(&mut mash_watch, "the signal for the MASH")
            .await
            .signal_id,
        id
    );

    // Each showing is a recorded disclosure of the signal category, and of nothing else.
    let records = common::audit_records(&nats).await;
    let shown: Vec<&pb::AccessRecord> = records
        .iter()
        .filter(|r| r.agency_id == "mash-rotherham" && (r.method == "ListSignals" || r.method == "Watch"))
        .filter(|r| r.outcome == pb::AccessOutcome::Permitted as i32)
        .collect();
    assert!(shown.iter().any(|r| r.method == "ListSignals"), "{records:?}");
    assert!(shown.iter().any(|r| r.method == "Watch"), "{records:?}");
    for r in &shown {
        assert_eq!(
            r.categories_disclosed,
            [pb::DataCategory::D14Signal as i32],
            "{r:?}"
        );
        assert_eq!(r.child_id, signal.child_id);
    }

    // The MASH's view: none of what the signal cites (D9, D10, D6 all need a relationship or approval).
    let mut query = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let mash_sees = |view: &Result<pb::ChildView, tonic::Status>| -> Vec<String> {
        match view {
            Ok(v) => v.facts.iter().map(|f| f.event_id.clone()).collect(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
                Vec::new()
            }
        }
    };
    let view = common::find_by_nhs(&mut query, "mash-rotherham", NHS, Purpose::Safeguarding, &after).await;
    let seen = mash_sees(&view);
    for e in &facts {
        assert!(
            !seen.contains(&e.event_id),
            "the MASH sees {} with no relationship",
            e.agency_id
        );
    }

    // A school: nothing listed, nothing on its watch up to its own marker.
    assert!(signals_of(&node, "school-oakwood", &after).await.is_empty());
    school_shown_no_signal(&nats, &mut school_watch).await;
    // Sheffield's MASH: the force serves Sheffield too, but the child's school and hospital are Rotherham's.
    assert!(
        signals_of(&node, "mash-sheffield", &after).await.is_empty(),
        "a Rotherham child's signal went to Sheffield's MASH"
    );

    // The MASH records an outcome; then an older associate the police noted on day 16 is recorded late.
    let outcome = envelope(
        "mash-rotherham",
        T0 + 22 * DAY,
        Kind::SignalOutcomeRecorded(pb::SignalOutcomeRecorded {
            signal_id: id.clone(),
            outcome: pb::SignalOutcome::Reviewed as i32,
            recorded_by: "mash-07".into(),
            reason: "checks under way".into(),
        }),
    );
    common::publish_as_agencies(&nats.url(), std::slice::from_ref(&outcome)).await;
    let late = envelope(
        "police-sy",
        T0 + 16 * DAY,
        Kind::ExploitationIndicatorRecorded(pb::ExploitationIndicatorRecorded {
            indicator: pb::ExploitationIndicator::OlderAssociate as i32,
            detail: "seen with an older man in a car".into(),
        }),
    );
    let after = common::publish_as_agencies(&nats.url(), std::slice::from_ref(&late)).await;
    // The outcome is part of the signal (D14): the police, who never receive signals, are not shown it
    // (nor its signal id), though they are shown the exploitation indicators (D11) they recorded.
    let police = common::find_by_nhs(&mut query, "police-sy", NHS, Purpose::Safeguarding, &after)
        .await
        .expect("the police know the child");
    let police_sees: Vec<&str> = police.facts.iter().map(|f| f.event_id.as_str()).collect();
    assert!(police_sees.contains(&late.event_id.as_str()), "{police_sees:?}");
    assert!(
        !police_sees.contains(&outcome.event_id.as_str()),
        "the police were shown the MASH's signal outcome"
    );
    let listed = signals_of(&node, "mash-rotherham", &after).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let kept = &listed[0];
    assert_eq!(kept.signal_id, id, "the signal keeps its id");
    assert_eq!(
        timestamp_millis(kept.fired_at.as_ref().unwrap()),
        T0 + 16 * DAY,
        "in the order things happened, the older associate now completes the pattern"
    );
    assert_eq!(kept.facts.last().unwrap().event_id, late.event_id);
    let recorded = kept.outcome.as_ref().expect("the outcome stays attached");
    assert_eq!(recorded.outcome(), pb::SignalOutcome::Reviewed);
    assert_eq!(recorded.fact.as_ref().unwrap().event_id, outcome.event_id);

    // The MASH acts: an agency check is the MASH referral the table recognises for D10.
    let check = envelope(
        "mash-rotherham",
        T0 + 23 * DAY,
        Kind::AgencyCheckRequested(pb::AgencyCheckRequested {
            requested_agency_id: "police-sy".into(),
            rag: pb::Rag::Amber as i32,
        }),
    );
    let after = common::publish_as_agencies(&nats.url(), std::slice::from_ref(&check)).await;
    let view = common::find_by_nhs(&mut query, "mash-rotherham", NHS, Purpose::Safeguarding, &after).await;
    let seen = mash_sees(&view);
    assert!(
        seen.contains(&facts[0].event_id) && seen.contains(&facts[1].event_id),
        "{seen:?}"
    );
    assert!(
        !seen.contains(&facts[3].event_id),
        "A&E still needs the originator's approval"
    );
    // Rotherham's check is Rotherham's MASH referral: Sheffield's MASH gains nothing by it.
    let sheffield =
        common::find_by_nhs(&mut query, "mash-sheffield", NHS, Purpose::Safeguarding, &after).await;
    assert!(
        mash_sees(&sheffield).is_empty(),
        "Sheffield's MASH sees {:?}",
        mash_sees(&sheffield)
    );
    assert!(signals_of(&node, "mash-sheffield", &after).await.is_empty());
    node.stop(Duration::from_secs(5)).await;
}

/// The deploy registry and tokens with a second MASH, Sheffield's (token `demo-mash-sheffield`): the force
/// serves both areas; everyone else in the deploy registry is Rotherham's.
fn with_sheffield_mash(mut config: halcyon_node::NodeConfig) -> halcyon_node::NodeConfig {
    let root = halcyon_testkit::workspace_root();
    let agencies = std::fs::read_to_string(root.join("deploy/agencies.toml")).unwrap()
        + r#"
[[agency]]
id = "mash-sheffield"
kind = "mash"
areas = ["sheffield"]
name = "Sheffield Multi-Agency Safeguarding Hub"
"#;
    let registry = halcyon_schema::Registry::from_toml(&agencies).unwrap();
    let tokens = std::fs::read_to_string(root.join("deploy/tokens.toml")).unwrap()
        + &format!(
            "\n[[token]]\nagency = \"mash-sheffield\"\nrole = \"mash-member\"\nprincipal = \"mash-s-01\"\nsha256 = \"{}\"\n",
            halcyon_node::auth::hash_token("demo-mash-sheffield")
        );
    config.tokens = halcyon_node::auth::Tokens::from_toml(&tokens, &registry).unwrap();
    config.agencies = registry;
    config
}
