//! Issue 14: one unreadable record never breaks a child's record, a listing, a rebuild or an export. Over
//! real NATS, sled and gRPC, with the real binary: a node projects a scenario; stopped, it has unreadable
//! records planted in its sled (a fact under a child, a breach record); restarted, the child's other facts
//! still answer for every agency exactly as before, listings across children answer, health reports the
//! read models' condition, the operator's quarantine listing names the records; `halcyon export` and
//! `halcyon rebuild` succeed and report them, and the rebuild replaces them.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{free_port, halcyon, halcyon_ok, serve_at, stop};
use halcyon_grpc::pb::{self, query_service_client::QueryServiceClient};
use halcyon_testkit::NatsServer;
use tonic::transport::Channel;

const AGENCIES: &[&str] = &[
    "csc-rotherham",
    "police-sy",
    "health-rgh-ed",
    "health-gp-clifton",
    "school-oakwood",
    "mash-rotherham",
    "yjs-rotherham",
    "vol-safe-haven",
];

fn nats_args(nats: &NatsServer) -> Vec<String> {
    ["--nats-url", &nats.url()].map(str::to_owned).to_vec()
}

async fn channel(port: u16) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            return channel;
        }
        assert!(Instant::now() < deadline, "the node did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn authorised<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn context(after: &[pb::Position]) -> pb::RequestContext {
    pb::RequestContext {
        purpose: pb::Purpose::Safeguarding as i32,
        min_positions: after.to_vec(),
        ..Default::default()
    }
}

/// Every agency's answer about the child: the event ids it is shown, or its refusal.
async fn views(
    client: &mut QueryServiceClient<Channel>,
    nhs: &str,
    after: &[pb::Position],
) -> BTreeMap<String, Result<Vec<String>, tonic::Code>> {
    let mut out = BTreeMap::new();
    for agency in AGENCIES {
        let request = pb::FindChildRequest {
            context: Some(context(after)),
            identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.into())),
        };
        let answer = client
            .find_child(authorised(request, &format!("demo-{agency}")))
            .await
            .map(|r| r.into_inner().facts.into_iter().map(|f| f.event_id).collect())
            .map_err(|s| s.code());
        out.insert((*agency).to_owned(), answer);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_fails_nothing_else_and_a_rebuild_replaces_it() {
    let nats = NatsServer::start_with_auth();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let mut apply = vec![
        "streams",
        "apply",
        "--nats-user",
        "operator",
        "--credentials",
        "deploy/nats/dev-credentials.toml",
    ];
    let n = nats_args(&nats);
    apply.extend(n.iter().map(String::as_str));
    halcyon_ok(&apply);
    let port = free_port();
    let node = serve_at(&nats, &data, port, "damaged", true);
    let _ = channel(port).await;

    let mut publish = vec![
        "publish",
        "--scenario-children",
        "4",
        "--seed",
        "14",
        "--credentials",
        "deploy/nats/dev-credentials.toml",
        "--quiet",
    ];
    publish.extend(n.iter().map(String::as_str));
    let out = halcyon_ok(&publish);
    let nhs = out
        .lines()
        .find_map(|l| l.strip_prefix("child 1: NHS number "))
        .unwrap()
        .to_owned();
    let after: Vec<pb::Position> = out
        .lines()
        .filter_map(|l| l.strip_prefix("position "))
        .map(|p| {
            let (stream, seq) = p.rsplit_once(':').unwrap();
            pb::Position {
                stream: stream.into(),
                sequence: seq.parse().unwrap(),
            }
        })
        .collect();
    let mut client = QueryServiceClient::new(channel(port).await);
    let before = views(&mut client, &nhs, &after).await;
    let csc_view = client
        .find_child(authorised(
            pb::FindChildRequest {
                context: Some(context(&after)),
                identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.clone())),
            },
            "demo-csc-rotherham",
        ))
        .await
        .unwrap()
        .into_inner();
    let child: halcyon_schema::ChildId = csc_view.child_id.parse().unwrap();
    assert!(!csc_view.facts.is_empty());
    stop(node);

    // Plant: a fact under the child that cannot be read back, and a breach record that cannot either.
    let read_models = halcyon_review::rebuild::read_models_dir(&data).unwrap();
    {
        let db = sled::open(&read_models).unwrap();
        let model = db.open_tree("model").unwrap();
        let fact_key = halcyon_projector::keys::fact(&child, 1_767_603_600_000, "police-sy", 9_999_999);
        model
            .insert(fact_key, &b"\x0a\xff\xff\xff\xff\x0fnot a stored fact"[..])
            .unwrap();
        let mut breach_key = vec![b'B'];
        breach_key.extend_from_slice(child.as_bytes());
        breach_key.extend_from_slice(b"T01/planted");
        model.insert(breach_key, &b"\xff\xff\xff"[..]).unwrap();
        db.flush().unwrap();
    }

    let node = serve_at(&nats, &data, port, "damaged", true);
    let channel = channel(port).await;
    let mut client = QueryServiceClient::new(channel.clone());
    // The child's record answers every agency exactly as before.
    assert_eq!(views(&mut client, &nhs, &after).await, before);
    // Listings across children answer.
    let mut deadlines = pb::deadline_service_client::DeadlineServiceClient::new(channel.clone());
    deadlines
        .list_breaches(authorised(
            pb::ListBreachesRequest {
                context: Some(context(&[])),
                ..Default::default()
            },
            "demo-csc-rotherham",
        ))
        .await
        .expect("ListBreaches across children answers");
    let mut signals = pb::signal_service_client::SignalServiceClient::new(channel.clone());
    signals
        .list_signals(authorised(
            pb::ListSignalsRequest {
                context: Some(context(&[])),
                ..Default::default()
            },
            "demo-mash-rotherham",
        ))
        .await
        .expect("ListSignals across children answers");
    // Health says so, under the read models' name; the query service still serves.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = health
            .check(check("halcyon.ReadModels"))
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never reported the unreadable records"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let query_status = health
        .check(check("halcyon.v1.QueryService"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        query_status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The operator's listing names them, with their reasons.
    let listed = client
        .list_quarantine(authorised(pb::ListQuarantineRequest::default(), "demo-operator"))
        .await
        .unwrap()
        .into_inner()
        .damaged;
    let kinds: Vec<&str> = listed.iter().map(|d| d.kind.as_str()).collect();
    assert!(kinds.contains(&"F") && kinds.contains(&"B"), "{listed:?}");
    // An agency's own listing does not show them.
    let own = client
        .list_quarantine(authorised(pb::ListQuarantineRequest::default(), "demo-police-sy"))
        .await
        .unwrap()
        .into_inner()
        .damaged;
    assert!(own.is_empty());
    stop(node);

    // Export succeeds and reports them; a rebuild succeeds, reports them and replaces them.
    let data_arg = data.to_str().unwrap();
    let export = halcyon(&[
        "export",
        "--data-dir",
        data_arg,
        "--nats-url",
        &nats.url(),
        "--nats-password",
        "operator-dev-secret",
    ]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let stderr = String::from_utf8_lossy(&export.stderr);
    assert!(stderr.contains("2 record(s) cannot be read back"), "{stderr}");
    let mut rebuild = vec![
        "rebuild",
        "--data-dir",
        data_arg,
        "--quiet",
        "--nats-user",
        "operator",
        "--credentials",
        "deploy/nats/dev-credentials.toml",
    ];
    rebuild.extend(n.iter().map(String::as_str));
    let rebuilt = halcyon_ok(&rebuild);
    assert!(
        rebuilt.contains("held 2 record(s) that could not be read back"),
        "{rebuilt}"
    );
    let export = halcyon(&[
        "export",
        "--data-dir",
        data_arg,
        "--nats-url",
        &nats.url(),
        "--nats-password",
        "operator-dev-secret",
    ]);
    assert!(export.status.success());
    assert!(
        !String::from_utf8_lossy(&export.stderr).contains("cannot be read back"),
        "the rebuild replaced them"
    );
}
