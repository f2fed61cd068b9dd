//! Issue 18: a clean stop. `halcyon serve` is sent SIGTERM while 16 callers query it and 4 agencies watch:
//! every call completes or fails UNAVAILABLE (retryable), every watch ends UNAVAILABLE, the process exits 0,
//! and the store reopens without a rebuild (each stream read on from its checkpoint). The node logs JSON
//! (`HALCYON_LOG_FORMAT=json`), and a call's request id is in its log lines and in its access record.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, free_port, halcyon};
use halcyon_grpc::pb;
use halcyon_grpc::pb::query_service_client::QueryServiceClient;
use halcyon_testkit::{NatsServer, http_get, workspace_root};

fn serve(nats: &NatsServer, data: &Path, port: u16, admin: u16, extra: &[&str]) -> Child {
    let admin = format!("127.0.0.1:{admin}");
    let args: Vec<&str> = ["--admin-listen", admin.as_str(), "--drain-grace-secs", "10"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    common::serve_node(
        nats,
        data,
        port,
        "drain",
        &args,
        &[
            ("HALCYON_LOG", "info,async_nats=warn"),
            ("HALCYON_LOG_FORMAT", "json"),
        ],
    )
}

async fn ready(admin: u16, node: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = tokio::task::spawn_blocking(move || {
            http_get(std::net::SocketAddr::from(([127, 0, 0, 1], admin)), "/readyz")
        })
        .await
        .unwrap();
        if matches!(got, Ok((200, _))) {
            return;
        }
        if let Some(status) = node.try_wait().unwrap() {
            panic!(
                "the node exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "not ready within 60 s: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn authorised<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn find(nhs: &str) -> pb::FindChildRequest {
    pb::FindChildRequest {
        context: Some(pb::RequestContext {
            purpose: pb::Purpose::Safeguarding as i32,
            ..Default::default()
        }),
        identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.to_owned())),
    }
}

async fn positions(client: &mut QueryServiceClient<tonic::transport::Channel>) -> BTreeMap<String, u64> {
    client
        .get_positions(authorised(pb::GetPositionsRequest {}, "demo-operator"))
        .await
        .unwrap()
        .into_inner()
        .positions
        .into_iter()
        .map(|p| (p.stream, p.sequence))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_calls_and_watches_exits_0_and_the_store_reopens_without_a_rebuild() {
    let nats = NatsServer::start_with_auth();
    common::apply_streams(&nats);
    let scenario = common::publish_scenario(&nats, 3, 11);
    let nhs = scenario.children[0].nhs.to_string();
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("node"), dir.path().join("node.log")); // serve_node logs to data.log
    let (port, admin) = (free_port(), free_port());
    let mut node = serve(&nats, &data, port, admin, &[]);
    ready(admin, &mut node, &log).await;
    let url = format!("http://127.0.0.1:{port}");
    let mut client = QueryServiceClient::connect(url.clone()).await.unwrap();

    // A call with the calling system's request id.
    let mut traced = authorised(find(&nhs), "demo-csc-rotherham");
    traced
        .metadata_mut()
        .insert("x-request-id", "drain-check-0001".parse().unwrap());
    client.find_child(traced).await.unwrap();
    let applied = positions(&mut client).await;
    assert!(!applied.is_empty());

    // Four agencies watch; sixteen callers query until the node stops answering.
    let mut watches = Vec::new();
    for token in [
        "demo-csc-rotherham",
        "demo-police-sy",
        "demo-school-oakwood",
        "demo-health-rgh-ed",
    ] {
        let mut stream = client
            .clone()
            .watch(authorised(
                pb::WatchRequest {
                    context: Some(pb::RequestContext {
                        purpose: pb::Purpose::Safeguarding as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        watches.push(tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        }));
    }
    let answered = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..16 {
        let (url, nhs, answered) = (url.clone(), nhs.clone(), answered.clone());
        callers.push(tokio::spawn(async move {
            let mut client = QueryServiceClient::connect(url).await.unwrap();
            loop {
                match client
                    .find_child(authorised(find(&nhs), "demo-csc-rotherham"))
                    .await
                {
                    Ok(_) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => return status,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "the callers were not answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = answered.load(Ordering::Relaxed);
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(exit.code(), Some(0), "{text}");
    for caller in callers {
        let status = caller.await.unwrap();
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "a call failed with a status that is not retryable: {status:?}"
        );
    }
    for watch in watches {
        let status = watch
            .await
            .unwrap()
            .expect("a watch ends with a status, not silently");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shutting down"), "{status:?}");
    }
    println!(
        "{before} calls answered before SIGTERM, {} in all",
        answered.load(Ordering::Relaxed)
    );

    // Logs: one JSON object per line; the traced call's lines carry its request id.
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let traced_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "drain-check-0001")
        .collect();
    assert!(
        !traced_lines.is_empty(),
        "no log line carries the request id: {text}"
    );
    assert!(
        traced_lines
            .iter()
            .any(|l| l["fields"]["message"] == "access recorded"),
        "{traced_lines:?}"
    );
    assert!(text.contains("read models flushed; stopped"), "{text}");
    // The access record carries it too.
    let mut args = vec!["audit".to_owned(), "access".to_owned(), "--json".to_owned()];
    args.extend(common::as_operator(&nats));
    let out = halcyon(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let records = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        records.matches("drain-check-0001").count(),
        1,
        "one access record names the request id"
    );

    // Restarted on the same folder: every stream is read on from its checkpoint, nothing is rebuilt.
    let mut again = serve(&nats, &data, port, admin, &[]);
    ready(admin, &mut again, &log).await;
    for (stream, sequence) in &applied {
        let deadline = Instant::now() + Duration::from_secs(20);
        let started = loop {
            let text = std::fs::read_to_string(&log).unwrap();
            let found = text
                .lines()
                .skip(lines.len())
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|l| l["fields"]["message"] == "consuming" && l["span"]["stream"] == stream.as_str());
            if let Some(found) = found {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "{stream} not consumed after the restart: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(started["fields"]["start"], sequence + 1, "{stream}: {started}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("moving them aside"), "{text}");
    common::stop(again);
}

/// SIGHUP reloads the tokens file (the node neither stops, as a process does by default on SIGHUP, nor needs
/// the file to change on disk after the signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tokens_and_the_node_keeps_serving() {
    let nats = NatsServer::start_with_auth();
    common::apply_streams(&nats);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let original = std::fs::read_to_string(workspace_root().join("deploy/tokens.toml")).unwrap();
    std::fs::write(&tokens, &original).unwrap();
    let (data, log) = (dir.path().join("node"), dir.path().join("node.log")); // serve_node logs to data.log
    let (port, admin) = (free_port(), free_port());
    let mut node = serve(&nats, &data, port, admin, &["--tokens", tokens.to_str().unwrap()]);
    ready(admin, &mut node, &log).await;
    let mut client = QueryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let ask = |token: &str| authorised(pb::GetPositionsRequest {}, token);
    assert_eq!(
        client
            .get_positions(ask("sighup-new-token"))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    // Calls run throughout the rotation on the tokens that stay.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (mut c, stop, answered) = (client.clone(), stop.clone(), answered.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.get_positions(authorised(pb::GetPositionsRequest {}, "demo-operator"))
                    .await
                    .unwrap_or_else(|e| panic!("a call failed during the rotation: {e:?}"));
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while answered.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let added = format!(
        "{original}\n[[token]]\nagency = \"csc-rotherham\"\nrole = \"operator\"\nprincipal = \"ops-2\"\nsha256 = \"{}\"\n",
        halcyon_node::auth::hash_token("sighup-new-token")
    );
    // Written in place (not renamed over), so only the signal tells the node before its next look.
    std::fs::write(&tokens, added).unwrap();
    Command::new("kill")
        .args(["-HUP", &node.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if client.get_positions(ask("sighup-new-token")).await.is_ok() {
            break;
        }
        assert!(node.try_wait().unwrap().is_none(), "SIGHUP stopped the node");
        assert!(
            Instant::now() < deadline,
            "the new token was not accepted after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGHUP: reloading"), "{text}");
    assert!(text.contains("tokens reloaded"), "{text}");
    let at_reload = answered.load(Ordering::Relaxed);
    while answered.load(Ordering::Relaxed) < at_reload + 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    println!(
        "{} calls during the SIGHUP rotation, none failed",
        answered.load(Ordering::Relaxed)
    );
    common::stop(node);
}

/// The drain delay: after SIGTERM the node reports not ready at once but still answers for the delay (while
/// load balancers take it out), then refuses new calls UNAVAILABLE, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_drain_delay_the_node_is_not_ready_but_still_answers() {
    let nats = NatsServer::start_with_auth();
    common::apply_streams(&nats);
    let scenario = common::publish_scenario(&nats, 2, 12);
    let nhs = scenario.children[0].nhs.to_string();
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("node"), dir.path().join("node.log"));
    let (port, admin) = (free_port(), free_port());
    let mut node = serve(&nats, &data, port, admin, &["--drain-delay-secs", "3"]);
    ready(admin, &mut node, &log).await;
    let mut client = QueryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    client
        .find_child(authorised(find(&nhs), "demo-csc-rotherham"))
        .await
        .unwrap();
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .unwrap();
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    // Not ready at once...
    let mut not_ready = None;
    while not_ready.is_none() {
        let got = tokio::task::spawn_blocking(move || http_get(admin_addr, "/readyz"))
            .await
            .unwrap();
        if let Ok((503, body)) = &got {
            not_ready = Some(body.clone());
        }
        // Not a speed claim: waiting past the 3 s delay would find calls refused, failing below.
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "/readyz still ready: {got:?}"
        );
    }
    assert!(not_ready.unwrap().contains("draining"));
    // ...and still answering, while the delay lasts.
    let mut answered_while_draining = 0;
    let refused = loop {
        match client
            .find_child(authorised(find(&nhs), "demo-csc-rotherham"))
            .await
        {
            Ok(_) => answered_while_draining += 1,
            Err(status) => break status,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused_after = signalled.elapsed();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        answered_while_draining > 0,
        "no call was answered during the delay"
    );
    println!("{answered_while_draining} calls answered while draining; refused after {refused_after:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        exit.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
