//! Issue 18, rebuilding online: a node whose read models were made with another configuration (here the
//! future tolerance, part of the store's stamp) rebuilds them while it answers from the old ones, and
//! switches when the new store has caught up. Killed (at an exact point, `HALCYON_CRASH_AT`, as SIGKILL
//! would) in the middle of the rebuild, just before the switch and just after it, it comes back answering
//! from a complete store every time; answers never change; the end state equals an offline rebuild's.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::{self, caught_up_within, export_live_and_rebuilt_with, free_port};
use halcyon_grpc::pb;
use halcyon_grpc::pb::query_service_client::QueryServiceClient;
use halcyon_testkit::NatsServer;

fn serve(nats: &NatsServer, data: &Path, port: u16, tolerance_secs: u32, crash_at: Option<&str>) -> Child {
    let tolerance = tolerance_secs.to_string();
    let env: Vec<(&str, &str)> = crash_at.map(|p| ("HALCYON_CRASH_AT", p)).into_iter().collect();
    common::serve_node(
        nats,
        data,
        port,
        "online-rebuild",
        &["--future-tolerance-secs", &tolerance],
        &env,
    )
}

fn log(data: &Path) -> String {
    std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
}

fn find(nhs: &str) -> tonic::Request<pb::FindChildRequest> {
    let mut r = tonic::Request::new(pb::FindChildRequest {
        context: Some(pb::RequestContext {
            purpose: pb::Purpose::Safeguarding as i32,
            ..Default::default()
        }),
        identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.to_owned())),
    });
    r.metadata_mut()
        .insert("authorization", "Bearer demo-csc-rotherham".parse().unwrap());
    r
}

/// What a caller is told about the child (the facts and what was withheld; not the positions).
fn answer(view: pb::ChildView) -> (Vec<pb::VisibleFact>, Vec<pb::Withheld>) {
    (view.facts, view.withheld)
}

async fn client(port: u16, node: &mut Child, data: &Path) -> QueryServiceClient<tonic::transport::Channel> {
    common::client_once_listening(port, node, &data.with_extension("log")).await
}

/// Asks about the child until `done` (or the node exits); every answer must equal `expected`. Returns how
/// many were answered.
async fn ask_until(
    port: u16,
    node: &mut Child,
    data: &Path,
    nhs: &str,
    expected: &(Vec<pb::VisibleFact>, Vec<pb::Withheld>),
    done: impl Fn(&str) -> bool,
) -> u64 {
    let mut c = client(port, node, data).await;
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if node.try_wait().unwrap().is_some() {
            return answered;
        }
        match c.find_child(find(nhs)).await {
            Ok(view) => {
                assert!(
                    answer(view.into_inner()) == *expected,
                    "an answer changed during the rebuild"
                );
                answered += 1;
            }
            // Only a node that has just died may fail to answer.
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(
                    node.try_wait().unwrap().is_some(),
                    "a call failed while the node ran: {e:?}\n{}",
                    log(data)
                );
                return answered;
            }
        }
        if done(&log(data)) {
            return answered;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuild did not finish: {}",
            log(data)
        );
    }
}

/// The node's first answer about its positions already covers `wanted`: it answers from a complete store
/// from the start, not one that has to catch up.
async fn complete_at_once(
    port: u16,
    node: &mut Child,
    data: &Path,
    wanted: &std::collections::BTreeMap<String, u64>,
) {
    let mut c = client(port, node, data).await;
    let mut r = tonic::Request::new(pb::GetPositionsRequest {});
    r.metadata_mut()
        .insert("authorization", "Bearer demo-operator".parse().unwrap());
    let have: std::collections::BTreeMap<String, u64> = c
        .get_positions(r)
        .await
        .unwrap()
        .into_inner()
        .positions
        .into_iter()
        .map(|p| (p.stream, p.sequence))
        .collect();
    for (stream, sequence) in wanted {
        assert!(
            have.get(stream).copied().unwrap_or(0) >= *sequence,
            "{stream}: the first answer after the restart is at {have:?}, not at {sequence}"
        );
    }
}

fn crashed_at(node: &mut Child, data: &Path, point: &str) {
    let status = node.wait().unwrap();
    assert!(
        !status.success(),
        "the node was to crash at {point}: {}",
        log(data)
    );
    assert!(
        log(data).contains(&format!("HALCYON_CRASH_AT={point}")),
        "not at {point}: {}",
        log(data)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rebuilds_online_answering_throughout_and_survives_being_killed_at_every_step() {
    let nats = NatsServer::start_with_auth();
    common::apply_streams(&nats);
    let scenario = common::publish_scenario(&nats, 300, 7);
    let nhs = scenario.children[0].nhs.to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let port = free_port();

    // The first store, stamped with a future tolerance of 300 s.
    let mut node = serve(&nats, &data, port, 300, None);
    let mut c = client(port, &mut node, &data).await;
    let wanted = common::stream_lasts(&nats).await;
    caught_up_within(port, &wanted, Duration::from_secs(120)).await;
    let expected = answer(c.find_child(find(&nhs)).await.unwrap().into_inner());
    assert!(!expected.0.is_empty(), "the child has facts to show");
    common::stop(node);

    // Another tolerance: rebuilt online. Killed in the middle of the rebuild.
    let mut node = serve(&nats, &data, port, 301, Some("rebuild:midway"));
    let answered = ask_until(port, &mut node, &data, &nhs, &expected, |_| false).await;
    crashed_at(&mut node, &data, "rebuild:midway");
    println!("killed mid-rebuild after {answered} answers");

    // Restarted: the old store answers (complete), the unfinished one is removed, the rebuild runs to the
    // end and the node switches; every answer throughout is the same.
    let mut node = serve(&nats, &data, port, 301, None);
    complete_at_once(port, &mut node, &data, &wanted).await;
    // Agencies go on publishing (other children) while the node rebuilds and switches, and what the node
    // has applied, as callers see it, never goes back.
    let publishing = {
        let url = nats.url();
        tokio::task::spawn_blocking(move || {
            let out = common::halcyon(&[
                "publish",
                "--nats-url",
                &url,
                "--scenario-children",
                "60",
                "--seed",
                "90210",
                "--credentials",
                "deploy/nats/dev-credentials.toml",
                "--quiet",
            ]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
    };
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let monotonic = {
        let watching = watching.clone();
        let mut c = client(port, &mut node, &data).await;
        tokio::spawn(async move {
            let mut seen: std::collections::BTreeMap<String, u64> = Default::default();
            let mut looks = 0u64;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let mut r = tonic::Request::new(pb::GetPositionsRequest {});
                r.metadata_mut()
                    .insert("authorization", "Bearer demo-operator".parse().unwrap());
                if let Ok(now) = c.get_positions(r).await {
                    for p in now.into_inner().positions {
                        let before = seen.insert(p.stream.clone(), p.sequence).unwrap_or(0);
                        assert!(
                            p.sequence >= before,
                            "{}: the node's position went back from {before} to {}",
                            p.stream,
                            p.sequence
                        );
                    }
                    looks += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            looks
        })
    };
    let answered = ask_until(port, &mut node, &data, &nhs, &expected, |l| {
        l.matches("online rebuild done").count() >= 1
    })
    .await;
    publishing.await.unwrap();
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let looks = monotonic.await.expect("positions never went back");
    println!("{looks} looks at the positions during the rebuild and switch, none went back");
    let wanted = common::stream_lasts(&nats).await;
    caught_up_within(port, &wanted, Duration::from_secs(60)).await;
    let text = log(&data);
    assert!(
        text.contains("removed read models that were not in use"),
        "{text}"
    );
    assert!(text.contains("online rebuild done"), "{text}");
    println!(
        "rebuilt online ({} events): {answered} answers during it, none failed; {}",
        wanted.values().sum::<u64>(),
        text.lines()
            .find(|l| l.contains("online rebuild done"))
            .unwrap_or_default()
    );
    let after = ask_until(port, &mut node, &data, &nhs, &expected, {
        let start = Instant::now();
        move |_| start.elapsed() > Duration::from_millis(500)
    })
    .await;
    assert!(after > 0);
    common::stop(node);

    // Another configuration again: killed just before the switch, then just after it.
    let mut node = serve(&nats, &data, port, 302, Some("swap:before-pointer"));
    ask_until(port, &mut node, &data, &nhs, &expected, |_| false).await;
    crashed_at(&mut node, &data, "swap:before-pointer");
    let mut node = serve(&nats, &data, port, 302, Some("swap:after-pointer"));
    // Back on the old store, complete at once, and rebuilding again.
    complete_at_once(port, &mut node, &data, &wanted).await;
    ask_until(port, &mut node, &data, &nhs, &expected, |_| false).await;
    crashed_at(&mut node, &data, "swap:after-pointer");
    let before_last = log(&data).len();
    // The switch was made: the new store is complete and in use, with nothing more to rebuild.
    let mut node = serve(&nats, &data, port, 302, None);
    complete_at_once(port, &mut node, &data, &wanted).await;
    let mut c = client(port, &mut node, &data).await;
    assert!(answer(c.find_child(find(&nhs)).await.unwrap().into_inner()) == expected);
    // The node logs whether it rebuilds before it listens.
    let last_run = &log(&data)[before_last..];
    assert!(!last_run.contains("rebuilding them online"), "{last_run}");
    common::stop(node);

    // What it ends with equals an offline rebuild of the same streams.
    let (live, rebuilt) = export_live_and_rebuilt_with(
        &[
            "--nats-url",
            &nats.url(),
            "--nats-user",
            "operator",
            "--nats-password",
            "operator-dev-secret",
        ],
        &data,
        &dir.path().join("rebuilt"),
        dir.path(),
    );
    assert!(live == rebuilt, "the node's read models differ from a rebuild's");
}
