//! Operating a node (issue 18): the admin listener's `/metrics` moves with a scenario as it should and
//! `promtool` accepts it; a real Prometheus server scrapes a node, loads the alert rules and answers every
//! dashboard query; `/readyz` waits for the catch-up after start and fails while AUDIT is unreachable; a
//! call's request id is in its response and its access record.
//!
//! Expectations are written from what happened in the test (events published, calls made and how each was
//! answered), not read back from the node's own counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common;
use halcyon_bus::{Credentials, connect};
use halcyon_grpc::pb;
use halcyon_policy::Purpose;
use halcyon_testkit::{NatsServer, PrometheusServer, Scenario, http_get, prometheus_binary, workspace_root};

/// One scrape, parsed: (family sample name, labels, value).
struct Scrape {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").expect("label");
                        labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                    }
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            samples.push((name, labels, value.parse().expect("sample value")));
        }
        Self { text, samples }
    }

    /// The sum of `name`'s samples whose labels include `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || http_get(addr, &owned))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body)
}

/// Waits until `/readyz` answers `want`; returns its body.
async fn readyz_becomes(addr: SocketAddr, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let (status, body) = get(addr, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status} ({body}), wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_scenario_and_promtool_accepts_them() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let config = common::node_config(&nats, data.path());
    common::apply_streams(&config).await;
    // A backlog before the node starts (it shows as lag), and one message that is not an envelope.
    let s = common::children(6);
    let after = common::publish_as_agencies(&nats.url(), &s.envelopes).await;
    let police = connect(
        &nats.url(),
        &Credentials::agency("police-sy", "police-sy-dev-secret"),
        "test",
    )
    .await
    .unwrap();
    let js = async_nats::jetstream::new(police);
    let garbage = js
        .publish(
            Scenario::subject(s.envelopes.iter().find(|e| e.agency_id == "police-sy").unwrap()),
            bytes::Bytes::from_static(b"\x00\xffnot an envelope"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(garbage.stream, "EVENTS_POLICE_SY");
    let police_messages = garbage.sequence;

    let node = common::start_node(config).await.unwrap();
    let admin = node.admin_addr.expect("the admin listener runs");
    let (live, _) = get(admin, "/livez").await;
    assert_eq!(live, 200);
    // Not ready until caught up: the first answer is 503 and says why.
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catching up"), "{body}");
    // The backlog shows as lag, in events and in seconds, then falls to nothing.
    let first = scrape(admin).await;
    let backlog = s.envelopes.len() as f64 + 1.0;
    assert!(
        first.sum("halcyon_stream_lag_events", &[]) > 0.0
            && first.sum("halcyon_stream_lag_events", &[]) <= backlog,
        "lag at start: {}",
        first.text
    );
    assert!(
        first.sum("halcyon_stream_lag_seconds", &[]) > 0.0,
        "{}",
        first.text
    );
    readyz_becomes(admin, 200).await;
    let caught_up = scrape(admin).await;
    assert_eq!(
        caught_up.sum("halcyon_stream_lag_events", &[]),
        0.0,
        "{}",
        caught_up.text
    );
    assert_eq!(caught_up.sum("halcyon_stream_lag_seconds", &[]), 0.0);
    assert_eq!(
        caught_up.sum(
            "halcyon_stream_applied_sequence",
            &[("stream", "EVENTS_POLICE_SY")]
        ),
        police_messages as f64
    );
    assert_eq!(
        caught_up.sum("halcyon_projected_messages_total", &[]),
        backlog,
        "every message applied once"
    );
    // The quarantined message, by stream and kind.
    assert_eq!(
        caught_up.sum(
            "halcyon_quarantined_events",
            &[("stream", "EVENTS_POLICE_SY"), ("reason", "undecodable")]
        ),
        1.0,
        "{}",
        caught_up.text
    );
    assert_eq!(caught_up.sum("halcyon_quarantined_events", &[]), 1.0);

    // Calls, each answered as written here: two found, one unknown child, one without credentials.
    let mut client = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let nhs = s.children[0].nhs.to_string();
    for _ in 0..2 {
        common::find_by_nhs(&mut client, "csc-rotherham", &nhs, Purpose::Safeguarding, &after)
            .await
            .unwrap();
    }
    let unknown = common::find_by_nhs(
        &mut client,
        "csc-rotherham",
        "9434765919",
        Purpose::Safeguarding,
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let anonymous = client
        .find_child(tonic::Request::new(pb::FindChildRequest {
            context: Some(common::context(Purpose::Safeguarding, &[])),
            identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.clone())),
        }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    // A call with the calling system's own request id: it comes back, and it is in the access record.
    let mut traced = common::authorised(
        pb::FindChildRequest {
            context: Some(common::context(Purpose::Safeguarding, &[])),
            identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.clone())),
        },
        "demo-police-sy",
    );
    traced
        .metadata_mut()
        .insert("x-request-id", "case-system:ops-0001".parse().unwrap());
    let answered = client.find_child(traced).await.unwrap();
    assert_eq!(
        answered.metadata().get("x-request-id").unwrap(),
        "case-system:ops-0001"
    );
    let child_id = answered.into_inner().child_id;

    let after_calls = scrape(admin).await;
    let calls = |code: &str| {
        after_calls.sum(
            "halcyon_grpc_calls_total",
            &[("method", "QueryService/FindChild"), ("code", code)],
        )
    };
    assert_eq!(calls("OK"), 3.0, "{}", after_calls.text);
    assert_eq!(calls("NotFound"), 1.0);
    assert_eq!(calls("Unauthenticated"), 1.0);
    assert_eq!(
        after_calls.sum(
            "halcyon_grpc_call_duration_seconds_count",
            &[("method", "QueryService/FindChild")]
        ),
        5.0
    );
    // Four access records (the unauthenticated call is refused before the gate has anyone to record).
    assert_eq!(after_calls.sum("halcyon_audit_records_total", &[]), 4.0);
    assert_eq!(after_calls.sum("halcyon_audit_records_per_write_sum", &[]), 4.0);
    assert_eq!(after_calls.sum("halcyon_audit_write_failures_total", &[]), 0.0);
    assert_eq!(after_calls.sum("halcyon_watchers", &[]), 0.0);
    assert_eq!(after_calls.sum("halcyon_ready", &[]), 1.0);
    assert!(after_calls.sum("halcyon_sled_size_bytes", &[]) > 0.0);
    assert!(after_calls.has("halcyon_clock_offset_seconds"));
    assert_eq!(
        after_calls.sum(
            "halcyon_build_info",
            &[("policy_version", node_policy_version().as_str())]
        ),
        1.0,
        "{}",
        after_calls.text
    );
    // No personal data or child ids in any label or value.
    for child in &s.children {
        assert!(!after_calls.text.contains(&child.nhs.to_string()));
        assert!(!after_calls.text.contains(&child.family_name));
    }
    assert!(!after_calls.text.contains(&child_id));

    // The traced call's access record carries its request id.
    let operator = common::operator(&nats).await;
    let mut audit = halcyon_bus::ordered_messages(&operator, "AUDIT", 1)
        .await
        .unwrap();
    let mut found = None;
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut audit)).await
    {
        for r in halcyon_bus::audit::decode_records(&m.payload).unwrap() {
            if r.request_id == "case-system:ops-0001" {
                found = Some(r);
            }
        }
    }
    let record = found.expect("an access record with the call's request id");
    assert_eq!(record.agency_id, "police-sy");
    assert_eq!(record.method, "FindChild");

    // promtool, Prometheus' own checker, accepts the exposition.
    let mut check = std::process::Command::new(prometheus_binary("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), after_calls.text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.stop(Duration::from_secs(5)).await;
}

fn node_policy_version() -> String {
    halcyon_policy::Policy::load(&workspace_root().join("deploy/policy/england.toml"))
        .unwrap()
        .version()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_audit_is_unreachable() {
    let mut h = common::Harness::start().await;
    let admin = h.node.admin_addr.unwrap();
    readyz_becomes(admin, 200).await;
    h.nats.kill();
    let body = readyz_becomes(admin, 503).await;
    assert!(body.contains("AUDIT: not writable"), "{body}");
    // The process still runs.
    assert_eq!(get(admin, "/livez").await.0, 200);
    h.nats.start_again();
    readyz_becomes(admin, 200).await;
    h.node.stop(Duration::from_secs(5)).await;
}

/// Percent-encodes a query for Prometheus' HTTP API.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `halcyon_…` family name a text refers to (histogram series reduced to their family).
fn families_named(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("halcyon_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.insert(family);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_a_node_and_the_rules_and_dashboard_hold() {
    let h = common::Harness::start().await;
    let admin = h.node.admin_addr.unwrap();
    // Something to project and checkpoint, so that every family has a series.
    let s = common::children(1);
    let after = common::publish_as_agencies(&h.nats.url(), &s.envelopes).await;
    let operator = common::operator(&h.nats).await;
    for p in &after {
        common::wait_checkpointed(&operator, &p.stream, p.sequence).await;
    }
    readyz_becomes(admin, 200).await;
    let rules = workspace_root().join("deploy/monitoring/alerts.yml");
    let dashboard =
        std::fs::read_to_string(workspace_root().join("deploy/monitoring/grafana-dashboard.json")).unwrap();
    let exposition = scrape(admin).await;
    // Every family the rules and the dashboard name is one the node exports (a typo would show nothing).
    let exported: std::collections::BTreeSet<String> = exposition
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    let named: std::collections::BTreeSet<String> = families_named(&std::fs::read_to_string(&rules).unwrap())
        .into_iter()
        .chain(families_named(&dashboard))
        .collect();
    let missing: Vec<_> = named.difference(&exported).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");

    // promtool, Prometheus' own checker, accepts the rules.
    let check = std::process::Command::new(prometheus_binary("promtool"))
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let prometheus = PrometheusServer::start(&[admin], &rules);
    // A family read back through Prometheus' HTTP API once it has scraped the node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Ok((200, body)) = tokio::task::spawn_blocking({
            let addr = prometheus.addr;
            move || http_get(addr, "/api/v1/query?query=halcyon_build_info")
        })
        .await
        .unwrap()
            && body.contains(&node_policy_version())
        {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not scrape the node within 60 s: {}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "halcyon", "{body}");
    assert_eq!(result["metric"]["version"], env!("CARGO_PKG_VERSION"), "{body}");
    assert_eq!(result["value"][1], "1", "{body}");

    // Every alert rule loaded and evaluates without error.
    let alerts = std::fs::read_to_string(&rules)
        .unwrap()
        .matches("- alert:")
        .count();
    assert!(alerts >= 8, "{alerts} alert rules");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(prometheus.addr, "/api/v1/rules").await;
        let rules: serde_json::Value = serde_json::from_str(&body).unwrap();
        let all: Vec<&serde_json::Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        let evaluated_ok = all.iter().all(|r| r["health"] == "ok");
        if all.len() == alerts && evaluated_ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the alert rules did not all evaluate: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every dashboard query is one Prometheus accepts.
    let dash: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let (status, body) = get(prometheus.addr, &format!("/api/v1/query?query={}", encode(expr))).await;
            assert_eq!(status, 200, "{expr}: {body}");
            assert!(body.contains("\"status\":\"success\""), "{expr}: {body}");
            queries += 1;
        }
    }
    assert!(queries >= 16, "{queries} dashboard queries");
    h.node.stop(Duration::from_secs(5)).await;
}

/// Issue 18, tokens rotated without a restart: the tokens file is replaced while calls run (police's token
/// withdrawn, a new one issued); the node notices the change by itself. CSC's calls never fail; police's
/// old token is refused from then on and the new one accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_tokens_file_takes_effect_without_a_restart() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let tokens = data.path().join("tokens.toml");
    let original = std::fs::read_to_string(workspace_root().join("deploy/tokens.toml")).unwrap();
    std::fs::write(&tokens, &original).unwrap();
    let mut config = common::node_config(&nats, &data.path().join("node"));
    config.tokens_path = Some(tokens.clone());
    let node = common::start_node(config).await.unwrap();
    let s = common::children(1);
    let after = common::publish_as_agencies(&nats.url(), &s.envelopes).await;
    let nhs = s.children[0].nhs.to_string();
    let client = pb::query_service_client::QueryServiceClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (mut c, stop, answered, nhs, after) = (
            client.clone(),
            stop.clone(),
            answered.clone(),
            nhs.clone(),
            after.clone(),
        );
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                common::find_by_nhs(&mut c, "csc-rotherham", &nhs, Purpose::Safeguarding, &after)
                    .await
                    .unwrap_or_else(|e| panic!("a CSC call failed during the rotation: {e:?}"));
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut police = client.clone();
    common::find_by_nhs(&mut police, "police-sy", &nhs, Purpose::Safeguarding, &after)
        .await
        .unwrap();
    let mut police_watch = common::watch(&mut police, "demo-police-sy").await;

    // Police's demo token withdrawn, a new one issued (the file holds only hashes).
    let police_entry = "[[token]]\nagency = \"police-sy\"";
    let start = original.find(police_entry).expect("police's entry");
    let end = original[start + 1..]
        .find("[[token]]")
        .map_or(original.len(), |i| start + 1 + i);
    let rotated = format!(
        "{}{}[[token]]\nagency = \"police-sy\"\nrole = \"practitioner\"\nprincipal = \"pc-4411\"\nsha256 = \"{}\"\n",
        &original[..start],
        &original[end..],
        halcyon_node::auth::hash_token("rotated-police-token")
    );
    let tmp = tokens.with_extension("new");
    std::fs::write(&tmp, rotated).unwrap();
    std::fs::rename(&tmp, &tokens).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match common::find_by_nhs(&mut police, "police-sy", &nhs, Purpose::Safeguarding, &after).await {
            Err(e) if e.code() == tonic::Code::Unauthenticated => break,
            other => {
                assert!(other.is_ok(), "{other:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the withdrawn token was still accepted 20 s after the file changed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The watch opened with the withdrawn token ends too.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match police_watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the withdrawn token's watch ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the withdrawn token's watch went on");
    assert_eq!(ended.code(), tonic::Code::Unauthenticated, "{ended:?}");
    let view = police
        .find_child(common::authorised(
            pb::FindChildRequest {
                context: Some(common::context(Purpose::Safeguarding, &after)),
                identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.clone())),
            },
            "rotated-police-token",
        ))
        .await
        .expect("the new token is accepted")
        .into_inner();
    assert!(view.facts.iter().any(|f| f.agency_id == "police-sy"));
    let during = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert!(during > 0);
    let reloads = scrape(node.admin_addr.unwrap()).await;
    assert_eq!(
        reloads.sum("halcyon_reloads_total", &[("outcome", "ok")]),
        1.0,
        "{}",
        reloads.text
    );
    assert_eq!(
        reloads.sum("halcyon_reloads_total", &[("outcome", "failed")]),
        0.0
    );
    node.stop(Duration::from_secs(5)).await;
}

/// Issue 18, checkpoint key rotation: the node signs with the development key, which is then retired (its
/// validity ends now) and a new key takes over from now; the node restarts with the new key and extends
/// every chain. `audit verify` with the rotated keyring finds every stream intact, with checkpoints by both
/// keys; a keyring that retired the old key before it signed, or that lacks the new key, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_key_rotation_leaves_every_chain_verifiable() {
    use halcyon_ledger::{Keyring, SigningKey, Validity};
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let operator = common::operator(&nats).await;
    let old_key = common::dev_chain().signing_key;
    let node = common::start_node(common::node_config(&nats, data.path()))
        .await
        .unwrap();
    let first = common::publish_as_agencies(&nats.url(), &common::children(1).envelopes).await;
    for p in &first {
        common::wait_checkpointed(&operator, &p.stream, p.sequence).await;
    }
    node.stop(Duration::from_secs(5)).await;

    // The rotation: the old key valid until now, the new one from now.
    let rotated_at = halcyon_schema::clock::now_ms();
    let new_key = SigningKey::from_seed([7; 32]);
    let ring = |old_until: i64, with_new: bool| {
        let mut ring = Keyring::default();
        ring.add_valid(
            old_key.public_key(),
            Validity {
                from_ms: None,
                until_ms: Some(old_until),
            },
        );
        if with_new {
            ring.add_valid(
                new_key.public_key(),
                Validity {
                    from_ms: Some(rotated_at),
                    until_ms: None,
                },
            );
        }
        ring
    };
    let rotated = ring(rotated_at, true);
    let mut config = common::node_config(&nats, data.path());
    config.checkpoints = Some(halcyon_node::chain::ChainConfig {
        keyring: rotated.clone(),
        ..halcyon_node::chain::ChainConfig {
            signing_key: SigningKey::from_seed([7; 32]),
            ..common::dev_chain()
        }
    });
    let node = common::start_node(config).await.unwrap();
    let more = halcyon_testkit::Scenario::generate(
        &halcyon_testkit::ScenarioConfig {
            children: 1,
            seed: 99,
            ..Default::default()
        },
        &halcyon_testkit::ScenarioAgencies::deploy(),
    );
    let second = common::publish_as_agencies(&nats.url(), &more.envelopes).await;
    for p in &second {
        common::wait_checkpointed(&operator, &p.stream, p.sequence).await;
    }
    node.stop(Duration::from_secs(5)).await;

    let streams: Vec<String> = second.iter().map(|p| p.stream.clone()).collect();
    let (old_id, new_id) = (old_key.public_key().key_id(), new_key.public_key().key_id());
    let mut signers = std::collections::BTreeSet::new();
    for st in &streams {
        let v = halcyon_bus::checkpoint::verify_stream(&operator, st, &rotated, &[])
            .await
            .unwrap();
        assert!(v.is_intact(), "{st}: {:?}", v.report);
        for c in halcyon_bus::checkpoint::read_checkpoints(&operator, Some(st))
            .await
            .unwrap()
            .checkpoints
        {
            signers.insert(c.checkpoint.key_id.clone());
        }
    }
    assert!(
        signers.contains(&old_id) && signers.contains(&new_id),
        "checkpoints by both keys: {signers:?}"
    );
    // The old key retired before it signed anything: its checkpoints no longer verify.
    let too_early = ring(rotated_at - 3_600_000, true);
    // The new key missing from the keyring: the checkpoints after the rotation do not verify.
    let without_new = ring(rotated_at, false);
    for (ring, what) in [(too_early, "retired too early"), (without_new, "new key missing")] {
        let broken = halcyon_bus::checkpoint::verify_stream(&operator, &streams[0], &ring, &[])
            .await
            .unwrap();
        assert!(!broken.is_intact(), "{what}: {:?}", broken.report);
    }
}
