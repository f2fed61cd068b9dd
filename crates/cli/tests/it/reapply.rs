//! Issue 21, schema evolution: a quarantined event that a newer node understands is re-applied without a
//! rebuild, once, audited. A node runs as the release before did (`--schema-version-max 1`, as during a
//! rolling upgrade where nodes move first) while a publisher already sends version 2: the version-2 plan is
//! quarantined, naming the version. An event of a kind no build knows (an unknown `Event` field) is
//! quarantined too. After the "upgrade" (the version raised) `halcyon quarantine reapply` projects the plan
//! at its place in its stream and leaves the unknown kind in quarantine; a second run projects nothing; each
//! run writes one access record naming the operator and reason; the read models then equal a rebuild's
//! from the streams, and the node answers A&E's flag check with the plan and the authority's numbers. All
//! over the real binary, a real nats-server, sled and gRPC.

use halcyon_grpc::pb;
use halcyon_schema::EventId;
use halcyon_testkit::NatsServer;
use prost::Message as _;

use super::common::{self, halcyon, halcyon_ok};

const NHS: &str = "9434765919";
const CASE: &str = "EVOLVE-1";

fn at(minutes_ago: i64) -> String {
    halcyon_schema::convert::format_timestamp(&halcyon_schema::convert::timestamp_from_millis(
        halcyon_schema::clock::now_ms() - minutes_ago * 60_000,
    ))
}

/// One event as an agency system writes it in JSON (the `halcyon publish --file` form).
fn line(version: u32, category: &str, event: serde_json::Value) -> String {
    serde_json::json!({
        "event_id": EventId::new().to_string(),
        "case_id": CASE,
        "agency_id": "csc-rotherham",
        "occurred_at": at(30),
        "recorded_at": at(29),
        "actor": {"practitioner_id": "sw-0042", "role": "social worker", "system": "mosaic"},
        "child": {"nhs_number": NHS},
        "category": category,
        "schema_version": version,
        "lawful_basis": "LAWFUL_BASIS_PUBLIC_TASK",
        "event": event,
    })
    .to_string()
}

/// An envelope whose event is of a kind no build of Halcyon knows (field 99 of `Event`), as a newer
/// publisher might send one: every part valid but the event's kind.
fn unknown_kind() -> Vec<u8> {
    let now = halcyon_schema::clock::now_ms();
    let envelope = pb::Envelope {
        event_id: EventId::new().to_string(),
        case_id: CASE.into(),
        agency_id: "csc-rotherham".into(),
        occurred_at: Some(halcyon_schema::convert::timestamp_from_millis(now - 60_000)),
        recorded_at: Some(halcyon_schema::convert::timestamp_from_millis(now)),
        actor: Some(pb::Actor {
            practitioner_id: "sw-0042".into(),
            ..Default::default()
        }),
        child: Some(pb::ChildIdentifiers {
            nhs_number: NHS.into(),
            ..Default::default()
        }),
        category: pb::DataCategory::D2ContactReferral as i32,
        schema_version: 2,
        lawful_basis: pb::LawfulBasis::PublicTask as i32,
        event: None,
    };
    let mut bytes = envelope.encode_to_vec();
    // Envelope field 11 (event), length 3: Event field 99, wire type 2 (key 0x9a 0x06), empty.
    bytes.extend_from_slice(&[0x5a, 0x03, 0x9a, 0x06, 0x00]);
    bytes
}

async fn publish_raw(nats: &NatsServer, payload: Vec<u8>, id: &str) {
    let client = halcyon_bus::connect(
        &nats.url(),
        &halcyon_bus::Credentials::agency("csc-rotherham", "csc-rotherham-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers(
        format!("halcyon.events.csc-rotherham.{CASE}"),
        headers,
        payload.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Access records in AUDIT written by `halcyon quarantine reapply`.
async fn reapply_records(nats: &NatsServer) -> Vec<pb::AccessRecord> {
    let js = common::operator_js(nats).await;
    let mut records = common::audit_records(&js).await;
    records.retain(|r| r.method == "halcyon quarantine reapply");
    records
}

async fn quarantined(
    client: &mut pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
) -> Vec<pb::QuarantinedEvent> {
    let mut request = tonic::Request::new(pb::ListQuarantineRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer demo-csc-rotherham".parse().unwrap());
    client.list_quarantine(request).await.unwrap().into_inner().events
}

async fn flag(
    client: &mut pb::query_service_client::QueryServiceClient<tonic::transport::Channel>,
) -> pb::FlagStatus {
    let mut request = tonic::Request::new(pb::CheckFlagRequest {
        context: Some(pb::RequestContext {
            purpose: pb::Purpose::DirectCare as i32,
            ..Default::default()
        }),
        nhs_number: NHS.into(),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer demo-health-rgh-ed".parse().unwrap());
    client.check_flag(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_event_a_newer_node_understands_is_reapplied_once_audited_as_a_rebuild_would() {
    let nats = NatsServer::start_with_auth();
    common::apply_streams(&nats);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = common::free_port();

    // A node of the release before: version 2 not yet enabled.
    let mut node = common::serve_node(&nats, &data, port, "node-a", &["--schema-version-max", "1"], &[]);
    let mut client = common::client_once_listening(port, &mut node, &data.with_extension("log")).await;
    let file = dir.path().join("events.jsonl");
    let referral = line(
        1,
        "DATA_CATEGORY_D2_CONTACT_REFERRAL",
        serde_json::json!({"referral_received": {"summary": "school raised worries"}}),
    );
    let plan = line(
        2,
        "DATA_CATEGORY_D1_STATUS_FLAG",
        serde_json::json!({"child_protection_plan_started": {
            "category": "PLAN_CATEGORY_NEGLECT",
            "contact": {"office_hours_phone": "01632 960001", "out_of_hours_phone": "01632 960002"}
        }}),
    );
    std::fs::write(&file, format!("{referral}\n{plan}\n")).unwrap();
    halcyon_ok(&[
        "publish",
        "--nats-url",
        &nats.url(),
        "--file",
        file.to_str().unwrap(),
        "--credentials",
        "deploy/nats/dev-credentials.toml",
        "--quiet",
    ]);
    publish_raw(&nats, unknown_kind(), &EventId::new().to_string()).await;
    common::caught_up(port, &common::stream_lasts(&nats).await).await;

    let held = quarantined(&mut client).await;
    let reasons: Vec<(u64, Vec<String>)> = held.iter().map(|q| (q.sequence, q.reasons.clone())).collect();
    assert_eq!(
        reasons,
        [
            (
                2,
                vec!["schema_version: unknown version 2 (this node accepts 1 to 1)".to_string()]
            ),
            (3, vec!["event: missing".to_string()]),
        ],
        "the plan waits for version 2; the unknown kind is not an event this build can read"
    );
    let before = flag(&mut client).await;
    assert!(!before.child_protection_plan, "{before:?}");
    common::stop(node);

    // The upgrade: version 2 enabled (the default); the node stopped, its quarantine re-checked.
    let nats_args = common::as_operator(&nats);
    let mut reapply: Vec<&str> = vec!["quarantine", "reapply", "--data-dir", data.to_str().unwrap()];
    reapply.extend(nats_args.iter().map(String::as_str));
    let first = halcyon_ok(&reapply);
    assert!(first.contains("EVENTS_CSC_ROTHERHAM:2  projected"), "{first}");
    assert!(
        first.contains("EVENTS_CSC_ROTHERHAM:3  still quarantined"),
        "{first}"
    );
    assert!(
        first.ends_with(
            "2 quarantined event(s) re-checked: 1 projected, 0 duplicate(s), 1 still quarantined\n"
        ),
        "{first}"
    );
    let second = halcyon_ok(&reapply);
    assert!(
        second.ends_with(
            "1 quarantined event(s) re-checked: 0 projected, 0 duplicate(s), 1 still quarantined\n"
        ),
        "a second run projects nothing: {second}"
    );
    let records = reapply_records(&nats).await;
    assert_eq!(records.len(), 2, "one access record per run: {records:?}");
    for r in &records {
        assert_eq!(
            (r.acting_person_id.as_str(), r.reason.as_str()),
            (common::OPERATOR, common::READ_REASON)
        );
    }

    // What the node holds now is what a rebuild from the streams gives: the plan once, at its place.
    let rebuilt = dir.path().join("rebuilt");
    let (live, fresh) = common::export_live_and_rebuilt_with(
        &nats_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &data,
        &rebuilt,
        dir.path(),
    );
    assert_eq!(live, fresh, "the reapplied read models equal a rebuild's");

    // The node, started again, answers with the plan: A&E's flag check sees it and the authority's numbers.
    let mut node = common::serve_node(&nats, &data, port, "node-a", &[], &[]);
    let mut client = common::client_once_listening(port, &mut node, &data.with_extension("log")).await;
    let after = flag(&mut client).await;
    assert!(after.child_protection_plan, "{after:?}");
    assert_eq!(
        (
            after.office_hours_phone.as_str(),
            after.out_of_hours_phone.as_str()
        ),
        ("01632 960001", "01632 960002")
    );
    assert_eq!(quarantined(&mut client).await.len(), 1);

    // While a node runs on the folder, reapply refuses (sled allows one process) and changes nothing.
    let out = halcyon(&reapply);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::stop(node);
}
