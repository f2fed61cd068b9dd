//! Issue 16: Halcyon on a real three-server JetStream cluster (`halcyon_testkit::NatsCluster`, the deploy
//! users, R3 streams from the checked-in `deploy/streams.toml`), with `halcyon serve` as its own process,
//! under faults: a server SIGKILLed mid-publish, mid-projection and mid-query; quorum lost and regained; a
//! silent partition between the node and NATS; a stream rolled back behind the node's checkpoint; a node
//! whose streams fall short of the spec. Every run ends by checking counts and bytes: each acknowledged
//! event once in the streams, each applied once (the live export equals a rebuild's), each answered query
//! with its access record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{self, BIN, free_port, halcyon};
use futures::StreamExt;
use halcyon_bus::streams::patiently;
use halcyon_bus::{Credentials, PublishError, Publisher, PublisherConfig, connect};
use halcyon_grpc::pb;
use halcyon_grpc::pb::query_service_client::QueryServiceClient;
use halcyon_testkit::{
    Auth, ClusterOptions, NatsCluster, Scenario, ScenarioAgencies, ScenarioConfig, TcpProxy,
};
use prost::Message as _;
use tonic::transport::Channel;

const SPEC: &str = "deploy/streams.toml";
const CREDENTIALS: &str = "deploy/nats/dev-credentials.toml";

/// A `halcyon serve` process that is killed when dropped, so a failing test leaves no node running beside
/// the next ones (a plain `std::process::Child` is not killed on drop).
struct Child(std::process::Child);

impl std::ops::Deref for Child {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Child {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The arguments that connect a command to the cluster at `seeds` as the operator.
fn operator_args(seeds: &str) -> [&str; 6] {
    [
        "--nats-url",
        seeds,
        "--nats-user",
        "operator",
        "--credentials",
        CREDENTIALS,
    ]
}

/// `halcyon streams ACTION --spec SPEC` against the cluster, as the operator.
fn streams(cluster: &NatsCluster, action: &str, spec: &str) -> std::process::Output {
    let seeds = cluster.seed_urls();
    let mut args = vec!["streams", action, "--spec", spec];
    args.extend(operator_args(&seeds));
    halcyon(&args)
}

/// [`streams`], expecting success; its standard output.
fn streams_ok(cluster: &NatsCluster, action: &str, spec: &str) -> String {
    let out = streams(cluster, action, spec);
    assert!(
        out.status.success(),
        "halcyon streams {action} --spec {spec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `halcyon streams apply --spec deploy/streams.toml` as the operator: R3 streams, one replica per zone.
fn apply_spec(cluster: &NatsCluster) {
    let out = streams_ok(cluster, "apply", SPEC);
    assert!(out.contains("AUDIT: created"), "{out}");
}

/// `halcyon serve` against the cluster (every server a seed and a monitoring endpoint, or only `seeds`),
/// as the node user, checking the streams against deploy/streams.toml; its log appended beside `data`.
fn serve(cluster: &NatsCluster, seeds: &str, data: &Path, port: u16) -> Child {
    serve_checking(&cluster.monitor_urls().join(","), seeds, data, port)
}

/// [`serve`], the node told of the monitoring endpoints `monitors` (comma-separated) only.
fn serve_checking(monitors: &str, seeds: &str, data: &Path, port: u16) -> Child {
    serve_as(monitors, seeds, data, port, "cluster-test", &[])
}

/// [`serve_checking`] as node `node_id`, with `extra` arguments.
fn serve_as(monitors: &str, seeds: &str, data: &Path, port: u16, node_id: &str, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    Command::new(BIN)
        .args(["serve", "--streams-spec", SPEC, "--nats-url", seeds])
        .args(["--nats-monitor-url", monitors])
        .args(["--nats-user", "halcyon-node", "--credentials", CREDENTIALS])
        .args(["--nats-connect-wait-secs", "60"])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--node-id", node_id])
        .args(["--checkpoint-key", "deploy/checkpoint-dev.key"])
        .args(["--keyring", "deploy/keyring-dev.toml"])
        .args(extra)
        .current_dir(halcyon_testkit::workspace_root())
        .env("HALCYON_LOG", "info,async_nats=warn")
        .env("HALCYON_HEARTBEAT_SECS", "1")
        .env("HALCYON_LEASE_SECS", "3")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Child)
        .unwrap()
}

/// How a node that should refuse to start exited, or `None` (after killing it) if it was still running
/// after `limit`.
async fn exit_within(mut node: Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = node.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = node.kill();
    let _ = node.wait();
    None
}

/// Asserts that `node` (logging beside `data`) refuses to start — exits unsuccessfully within a minute —
/// and returns its log.
async fn refused(node: Child, data: &Path, what: &str) -> String {
    let status = exit_within(node, Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "the node started {what}: {}",
        node_log(data)
    );
    node_log(data)
}

fn node_log(data: &Path) -> String {
    std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
}

async fn channel(port: u16, node: &mut Child, data: &Path) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            return channel;
        }
        if let Some(status) = node.try_wait().unwrap() {
            panic!("the node exited ({status}): {}", node_log(data));
        }
        assert!(
            Instant::now() < deadline,
            "the node did not start: {}",
            node_log(data)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn authorised<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn find_child(nhs: &str, token: &str) -> tonic::Request<pb::FindChildRequest> {
    authorised(
        pb::FindChildRequest {
            context: Some(pb::RequestContext {
                purpose: pb::Purpose::Safeguarding as i32,
                ..Default::default()
            }),
            identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.into())),
        },
        token,
    )
}

async fn health(channel: &Channel) -> Option<i32> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(5), client.check(request)).await {
        Ok(Ok(r)) => Some(r.into_inner().status),
        _ => None,
    }
}

/// Waits (at most `limit`) until the node's health is `serving` or not; returns how long it took.
async fn health_becomes(channel: &Channel, serving: bool, limit: Duration) -> Duration {
    use tonic_health::pb::health_check_response::ServingStatus;
    let started = Instant::now();
    loop {
        let status = health(channel).await;
        if (status == Some(ServingStatus::Serving as i32)) == serving {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "health did not become {} within {limit:?} (last {status:?})",
            if serving { "SERVING" } else { "NOT_SERVING" }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn positions(channel: &Channel) -> Option<BTreeMap<String, u64>> {
    let mut client = QueryServiceClient::new(channel.clone());
    let r = client
        .get_positions(authorised(pb::GetPositionsRequest {}, "demo-operator"))
        .await
        .ok()?;
    Some(
        r.into_inner()
            .positions
            .into_iter()
            .map(|p| (p.stream, p.sequence))
            .collect(),
    )
}

async fn caught_up(channel: &Channel, wanted: &BTreeMap<String, u64>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_seen = None;
    loop {
        if let Some(have) = positions(channel).await {
            if wanted
                .iter()
                .all(|(s, q)| have.get(s).copied().unwrap_or(0) >= *q)
            {
                return;
            }
            last_seen = Some(have);
        }
        assert!(
            Instant::now() < deadline,
            "the node did not catch up with {wanted:?}; it had applied {last_seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What publishing one event came to.
#[derive(Debug, Clone)]
struct Sent {
    event_id: String,
    outcome: Result<halcyon_bus::Position, PublishError>,
}

/// Publishes `envelopes`, each agency's under its own NATS identity and all agencies at once, counting
/// acknowledgements in `acked` as they come.
async fn publish(seeds: String, envelopes: Vec<pb::Envelope>, acked: Arc<AtomicUsize>) -> Vec<Sent> {
    publish_with(seeds, envelopes, acked, PublisherConfig::default().attempts_max).await
}

/// [`publish`] with at most `attempts_max` attempts per event.
async fn publish_with(
    seeds: String,
    envelopes: Vec<pb::Envelope>,
    acked: Arc<AtomicUsize>,
    attempts_max: u32,
) -> Vec<Sent> {
    let mut by_agency: BTreeMap<String, Vec<pb::Envelope>> = BTreeMap::new();
    for e in envelopes {
        by_agency.entry(e.agency_id.clone()).or_default().push(e);
    }
    let mut tasks = Vec::new();
    for (agency, envelopes) in by_agency {
        let (seeds, acked) = (seeds.to_owned(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let client = connect(
                &seeds,
                &Credentials::agency(&agency, &format!("{agency}-dev-secret")),
                "cluster-test publisher",
            )
            .await
            .unwrap();
            let publisher = Publisher::new(
                client,
                PublisherConfig {
                    window: 32,
                    attempts_max,
                    agency: Some(agency.parse().unwrap()),
                    ..Default::default()
                },
            );
            let ids: Vec<String> = envelopes.iter().map(|e| e.event_id.clone()).collect();
            let mut out = Vec::new();
            let mut results = std::pin::pin!(publisher.publish_all(envelopes));
            let mut i = 0;
            while let Some(r) = results.next().await {
                if r.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                out.push(Sent {
                    event_id: ids[i].clone(),
                    outcome: r.map(|p| p.position),
                });
                i += 1;
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// The last acknowledged position per stream.
fn last_positions(sent: &[Sent]) -> BTreeMap<String, u64> {
    let mut last = BTreeMap::new();
    for s in sent {
        if let Ok(p) = &s.outcome {
            let e = last.entry(p.stream.clone()).or_insert(0);
            *e = (*e).max(p.sequence);
        }
    }
    last
}

async fn operator_js(cluster: &NatsCluster) -> async_nats::jetstream::Context {
    let client = connect(
        &cluster.seed_urls(),
        &Credentials::user("operator", "operator-dev-secret"),
        "cluster-test operator",
    )
    .await
    .unwrap();
    async_nats::jetstream::new(client)
}

/// A stream's info, asked again while the cluster settles (a server just restarted, a meta leader being
/// elected: requests may time out for a few seconds), as a node asks.
async fn info(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Option<async_nats::jetstream::stream::Info> {
    patiently(|| halcyon_bus::streams::stream_info(js, stream))
        .await
        .unwrap_or_else(|e| panic!("stream info of {stream}: {e}"))
}

/// Every message of `stream`, read from the start.
async fn read_all(js: &async_nats::jetstream::Context, stream: &str) -> Vec<halcyon_bus::RawMessage> {
    let Some(info) = info(js, stream).await else {
        return Vec::new();
    };
    let last = info.state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let messages = patiently(|| halcyon_bus::ordered_messages(js, stream, 1))
        .await
        .unwrap();
    let mut messages = std::pin::pin!(messages);
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), messages.next())
        .await
        .expect("the stream kept delivering")
    {
        let m = m.unwrap();
        let done = m.sequence >= last;
        out.push(m);
        if done {
            break;
        }
    }
    out
}

/// Every acknowledged event is in the streams exactly once, and no event id is there twice. Returns how
/// many events the agency streams hold.
async fn each_acknowledged_event_once(cluster: &NatsCluster, sent: &[Sent]) -> usize {
    let js = operator_js(cluster).await;
    let mut stored: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    let names = patiently(|| halcyon_bus::list_event_streams(&js)).await.unwrap();
    for stream in names {
        for m in read_all(&js, &stream).await {
            let envelope = pb::Envelope::decode(m.payload).unwrap();
            *stored.entry(envelope.event_id).or_default() += 1;
            total += 1;
        }
    }
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "event ids stored more than once: {doubled:?}");
    let acked: BTreeSet<&str> = sent
        .iter()
        .filter(|s| s.outcome.is_ok())
        .map(|s| s.event_id.as_str())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains_key(**id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing: {missing:?}",
        missing.len()
    );
    total
}

/// Stops the node (SIGTERM), exports its read models, rebuilds a copy from the cluster and exports that;
/// asserts they are byte-identical and hold `events` facts (each applied once). Returns the export's size.
fn export_equals_rebuild(cluster: &NatsCluster, node: Child, data: &Path, events: usize) -> usize {
    common::stop_mut(&mut { node }.0);
    let dir = data.parent().unwrap();
    let rebuilt = dir.join("rebuilt");
    let _ = std::fs::remove_dir_all(&rebuilt);
    let seeds = cluster.seed_urls();
    let (live, again) = common::export_live_and_rebuilt_with(&operator_args(&seeds), data, &rebuilt, dir);
    let facts = live.lines().filter(|l| l.starts_with("F ")).count();
    assert_eq!(
        facts, events,
        "every event projected once: no lost or doubled facts"
    );
    assert!(
        live == again,
        "the live export differs from the rebuild's ({} vs {} bytes)",
        live.len(),
        again.len()
    );
    live.len()
}

/// The index of the server leading `stream`'s Raft group.
async fn leader_of(cluster: &NatsCluster, stream: &str) -> usize {
    let js = operator_js(cluster).await;
    let info = info(&js, stream).await.unwrap();
    let leader = info.cluster.and_then(|c| c.leader).expect("a leader");
    cluster.index_of(&leader).expect("a server of this cluster")
}

/// The index of the server a connection named `name` is attached to (from each server's `/connz`).
fn server_holding(cluster: &NatsCluster, name: &str) -> Option<usize> {
    (0..cluster.len()).find(|&i| {
        cluster.is_running(i)
            && cluster
                .monitor_get(i, "/connz?limit=1024")
                .is_some_and(|(_, body)| body.contains(name))
    })
}

/// Waits until the node's `/readyz` answers `want`; returns its body.
async fn readyz_becomes(admin: std::net::SocketAddr, want: u16, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let got = tokio::task::spawn_blocking(move || halcyon_testkit::http_get(admin, "/readyz"))
            .await
            .unwrap();
        if let Ok((status, body)) = &got
            && *status == want
        {
            return body.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz did not answer {want} within {limit:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn scenario(children: usize, seed: u64) -> Scenario {
    Scenario::generate(
        &ScenarioConfig {
            seed,
            children,
            ..Default::default()
        },
        &ScenarioAgencies::deploy(),
    )
}

struct Run {
    cluster: NatsCluster,
    dir: tempfile::TempDir,
    port: u16,
}

impl Run {
    fn start(options: ClusterOptions) -> Run {
        let cluster = NatsCluster::start_with(ClusterOptions {
            auth: Auth::Deploy,
            ..options
        });
        apply_spec(&cluster);
        Run {
            cluster,
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("node")
    }

    fn serve(&self) -> Child {
        serve(&self.cluster, &self.cluster.seed_urls(), &self.data(), self.port)
    }
}

/// Must-show 1, first run: the leader of the busiest stream is SIGKILLed while agencies publish, then
/// restarted. Publishers ride out the leader change (same `Nats-Msg-Id` on every retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_publish_loses_and_doubles_nothing() {
    let mut run = Run::start(ClusterOptions::default());
    let mut node = run.serve();
    let channel = channel(run.port, &mut node, &run.data()).await;
    let s = scenario(80, 161);
    let n = s.envelopes.len();
    let victim = leader_of(&run.cluster, "EVENTS_POLICE_SY").await;

    let acked = Arc::new(AtomicUsize::new(0));
    let publishing = tokio::spawn(publish(
        run.cluster.seed_urls(),
        s.envelopes.clone(),
        acked.clone(),
    ));
    while acked.load(Ordering::Relaxed) < n / 4 && !publishing.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_kill = acked.load(Ordering::Relaxed);
    run.cluster.kill(victim);
    while acked.load(Ordering::Relaxed) < at_kill + n / 4 && !publishing.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_restart = acked.load(Ordering::Relaxed);
    run.cluster.start_again(victim);
    let sent = publishing.await.unwrap();
    let failed: Vec<&Sent> = sent.iter().filter(|s| s.outcome.is_err()).collect();
    eprintln!(
        "{n} events; killed server {victim} (leader of EVENTS_POLICE_SY) at {at_kill} acknowledged, restarted at {before_restart}; {} not acknowledged: {:?}",
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    assert!(at_kill < n, "the kill landed after publishing ended");
    assert!(
        failed.is_empty(),
        "publishers ride out a leader change within their retries"
    );

    caught_up(&channel, &last_positions(&sent)).await;
    let stored = each_acknowledged_event_once(&run.cluster, &sent).await;
    assert_eq!(stored, n);
    let bytes = export_equals_rebuild(&run.cluster, node, &run.data(), n);
    eprintln!("{stored} events stored once each; live export = rebuild ({bytes} bytes)");
}

/// Must-show 1, second run: the server the node reads from is SIGKILLed while the node projects a backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_projection_applies_each_event_once() {
    let mut run = Run::start(ClusterOptions::default());
    let s = scenario(120, 162);
    let n = s.envelopes.len();
    let sent = publish(run.cluster.seed_urls(), s.envelopes.clone(), Arc::default()).await;
    assert!(sent.iter().all(|s| s.outcome.is_ok()));
    let wanted = last_positions(&sent);
    let total: u64 = wanted.values().sum();

    let mut node = run.serve();
    let channel = channel(run.port, &mut node, &run.data()).await;
    let (victim, applied_at_kill) = loop {
        if let Some(have) = positions(&channel).await {
            let applied: u64 = have.values().sum();
            if applied > 0
                && let Some(server) = server_holding(&run.cluster, "halcyon-node cluster-test")
            {
                break (server, applied);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    run.cluster.kill(victim);
    eprintln!("killed server {victim} (the node's) with {applied_at_kill} of {total} events applied");
    assert!(applied_at_kill < total, "the kill landed after projection ended");
    caught_up(&channel, &wanted).await;
    run.cluster.start_again(victim);
    let stored = each_acknowledged_event_once(&run.cluster, &sent).await;
    assert_eq!(stored, n);
    export_equals_rebuild(&run.cluster, node, &run.data(), n);
}

/// What one query came to.
struct Asked {
    agency: String,
    answer: Result<String, tonic::Code>,
}

/// Must-show 1, third run: the AUDIT stream's leader is SIGKILLed while 16 callers query; every answered
/// query has its access record, and every unanswered one failed with UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_query_leaves_no_answer_without_its_access_record() {
    let mut run = Run::start(ClusterOptions::default());
    let s = scenario(40, 163);
    let sent = publish(run.cluster.seed_urls(), s.envelopes.clone(), Arc::default()).await;
    let mut node = run.serve();
    let channel = channel(run.port, &mut node, &run.data()).await;
    caught_up(&channel, &last_positions(&sent)).await;

    let nhs: Vec<String> = s.children.iter().map(|c| c.nhs.to_string()).collect();
    let agencies = ["csc-rotherham", "police-sy", "health-rgh-ed", "school-oakwood"];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for caller in 0..16 {
        let (channel, nhs, stop) = (channel.clone(), nhs.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut client = QueryServiceClient::new(channel);
            let mut asked = Vec::new();
            let mut i = caller;
            while !stop.load(Ordering::Relaxed) {
                let agency = agencies[i % agencies.len()];
                let answer = client
                    .find_child(find_child(&nhs[i % nhs.len()], &format!("demo-{agency}")))
                    .await
                    .map(|r| r.into_inner().child_id)
                    .map_err(|s| s.code());
                asked.push(Asked {
                    agency: agency.to_owned(),
                    answer,
                });
                i += 16;
            }
            asked
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = leader_of(&run.cluster, "AUDIT").await;
    run.cluster.kill(victim);
    tokio::time::sleep(Duration::from_secs(6)).await;
    run.cluster.start_again(victim);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut asked = Vec::new();
    for c in callers {
        asked.extend(c.await.unwrap());
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for a in &asked {
        let code = match &a.answer {
            Ok(_) => "OK".to_owned(),
            Err(c) => format!("{c:?}"),
        };
        *codes.entry(code).or_default() += 1;
    }
    eprintln!(
        "killed server {victim} (AUDIT's leader); {} calls: {codes:?}",
        asked.len()
    );
    let unexpected: Vec<_> = asked
        .iter()
        .filter_map(|a| a.answer.as_ref().err())
        .filter(|c| {
            !matches!(
                c,
                tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::PermissionDenied
            )
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "calls failed other than UNAVAILABLE: {unexpected:?}"
    );

    // Every answer (a view, NOT_FOUND or PERMISSION_DENIED) has its access record; a view's names its child.
    let js = operator_js(&run.cluster).await;
    let mut records: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut per_agency: BTreeMap<String, usize> = BTreeMap::new();
    for m in read_all(&js, "AUDIT").await {
        for r in halcyon_bus::audit::decode_records(&m.payload).unwrap() {
            if r.method == "FindChild" {
                *records
                    .entry((r.agency_id.clone(), r.child_id.clone()))
                    .or_default() += 1;
                *per_agency.entry(r.agency_id).or_default() += 1;
            }
        }
    }
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let mut shown: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut views = 0;
    for a in &asked {
        match &a.answer {
            Ok(child) => {
                views += 1;
                *shown.entry((a.agency.clone(), child.clone())).or_default() += 1;
                *answered.entry(a.agency.clone()).or_default() += 1;
            }
            Err(tonic::Code::Unavailable) => {}
            Err(_) => *answered.entry(a.agency.clone()).or_default() += 1,
        }
    }
    // As many records as answers for every (agency, child) shown, and per agency overall (a call that
    // failed closed may still have its record: more records than answers is allowed, fewer is not).
    for ((agency, child), n) in &shown {
        let recorded = records
            .get(&(agency.clone(), child.clone()))
            .copied()
            .unwrap_or(0);
        assert!(
            recorded >= *n,
            "{agency} was shown child {child} {n} time(s) with {recorded} access record(s)"
        );
    }
    for (agency, n) in &answered {
        let recorded = per_agency.get(agency).copied().unwrap_or(0);
        assert!(
            recorded >= *n,
            "{agency}: {n} answers but {recorded} access records"
        );
    }
    assert!(views > 0, "no call was answered with a view");
    common::stop_mut(&mut { node }.0);
}

/// Must-show 2: two servers down — no write is acknowledged, queries fail closed, health NOT_SERVING; both
/// back — everything recovers without restarting the node, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quorum_lost_nothing_is_acknowledged_or_answered_and_all_recovers() {
    let mut run = Run::start(ClusterOptions::default());
    let s = scenario(30, 164);
    let (first, second) = s.envelopes.split_at(s.envelopes.len() / 2);
    let mut sent = publish(run.cluster.seed_urls(), first.to_vec(), Arc::default()).await;
    let admin = free_port();
    let admin_listen = format!("127.0.0.1:{admin}");
    let mut node = serve_as(
        &run.cluster.monitor_urls().join(","),
        &run.cluster.seed_urls(),
        &run.data(),
        run.port,
        "cluster-test",
        &["--admin-listen", &admin_listen],
    );
    let channel = channel(run.port, &mut node, &run.data()).await;
    caught_up(&channel, &last_positions(&sent)).await;
    health_becomes(&channel, true, Duration::from_secs(30)).await;
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    readyz_becomes(admin, 200, Duration::from_secs(30)).await;

    let node_server = server_holding(&run.cluster, "halcyon-node cluster-test").unwrap();
    let down: Vec<usize> = (0..3).filter(|i| *i != node_server).collect();
    for &i in &down {
        run.cluster.kill(i);
    }
    let took = health_becomes(&channel, false, Duration::from_secs(60)).await;
    eprintln!("servers {down:?} killed; health NOT_SERVING after {took:?}");
    // The admin listener says so too, and why.
    let why = readyz_becomes(admin, 503, Duration::from_secs(60)).await;
    eprintln!("/readyz without quorum: {why}");
    assert!(why.contains("AUDIT") || why.contains("NATS"), "{why}");
    let nhs = s.children[0].nhs.to_string();
    let mut client = QueryServiceClient::new(channel.clone());
    let refused = client
        .find_child(find_child(&nhs, "demo-csc-rotherham"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let publisher = Publisher::new(
        connect(
            &run.cluster.url(node_server),
            &Credentials::agency("police-sy", "police-sy-dev-secret"),
            "quorum test",
        )
        .await
        .unwrap(),
        PublisherConfig {
            attempts_max: 2,
            ack_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    );
    let lone = second
        .iter()
        .find(|e| e.agency_id == "police-sy")
        .unwrap()
        .clone();
    let err = publisher.publish(&lone, None).await.unwrap_err();
    eprintln!("publishing without quorum: {err}");
    assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");

    for &i in &down {
        run.cluster.start_again(i);
    }
    let took = health_becomes(&channel, true, Duration::from_secs(90)).await;
    eprintln!("quorum back; health SERVING after {took:?}, the node never restarted");
    readyz_becomes(admin, 200, Duration::from_secs(60)).await;
    assert!(node.try_wait().unwrap().is_none(), "the node exited");
    // Answered again (the child's events may all lie in the half not yet published: NOT_FOUND is an
    // answer, with its access record; UNAVAILABLE would not be).
    let answer = client.find_child(find_child(&nhs, "demo-csc-rotherham")).await;
    assert!(
        !matches!(&answer, Err(s) if s.code() == tonic::Code::Unavailable),
        "{answer:?}"
    );
    sent.extend(publish(run.cluster.seed_urls(), second.to_vec(), Arc::default()).await);
    assert!(sent.iter().all(|s| s.outcome.is_ok()));
    caught_up(&channel, &last_positions(&sent)).await;
    let n = s.envelopes.len();
    assert_eq!(each_acknowledged_event_once(&run.cluster, &sent).await, n);
    export_equals_rebuild(&run.cluster, node, &run.data(), n);
}

/// Must-show 3: the node talks to NATS through a proxy that stops forwarding without closing anything.
/// Queries fail closed within the audit write's deadline, health turns NOT_SERVING, and after the
/// partition heals the node recovers without having applied anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_fails_closed_and_heals() {
    let run = Run::start(ClusterOptions {
        no_advertise: true,
        ..ClusterOptions::default()
    });
    let proxy = TcpProxy::start(("127.0.0.1", run.cluster.port(0)));
    let s = scenario(30, 165);
    let (first, second) = s.envelopes.split_at(s.envelopes.len() / 2);
    let mut sent = publish(run.cluster.seed_urls(), first.to_vec(), Arc::default()).await;
    let mut node = serve(&run.cluster, &proxy.url(), &run.data(), run.port);
    let channel = channel(run.port, &mut node, &run.data()).await;
    caught_up(&channel, &last_positions(&sent)).await;
    health_becomes(&channel, true, Duration::from_secs(30)).await;

    proxy.stall();
    let nhs = s.children[0].nhs.to_string();
    let mut client = QueryServiceClient::new(channel.clone());
    let asked = Instant::now();
    let refused = client
        .find_child(find_child(&nhs, "demo-csc-rotherham"))
        .await
        .unwrap_err();
    let waited = asked.elapsed();
    eprintln!(
        "partitioned: a query failed with {:?} after {waited:?}",
        refused.code()
    );
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Failed closed by the audit writer's deadline, not by a hang or a transport timeout.
    assert!(
        refused
            .message()
            .contains("audit record not written, nothing disclosed")
            && refused.message().contains("within 5s"),
        "{refused:?}"
    );
    let took = health_becomes(&channel, false, Duration::from_secs(60)).await;
    eprintln!("health NOT_SERVING {took:?} after the query");
    // Meanwhile the agencies go on publishing (directly to the cluster).
    sent.extend(publish(run.cluster.seed_urls(), second.to_vec(), Arc::default()).await);

    proxy.heal();
    let took = health_becomes(&channel, true, Duration::from_secs(90)).await;
    eprintln!("healed; health SERVING after {took:?}");
    caught_up(&channel, &last_positions(&sent)).await;
    assert!(
        client
            .find_child(find_child(&nhs, "demo-csc-rotherham"))
            .await
            .is_ok()
    );
    let n = s.envelopes.len();
    assert_eq!(each_acknowledged_event_once(&run.cluster, &sent).await, n);
    export_equals_rebuild(&run.cluster, node, &run.data(), n);
}

/// Must-show 5 on the cluster: streams applied with one replica fall short of the node's R3 spec; the node
/// refuses to start naming each stream, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_streams_with_fewer_replicas_than_the_spec() {
    let cluster = NatsCluster::start_with(ClusterOptions {
        auth: Auth::Deploy,
        ..ClusterOptions::default()
    });
    streams_ok(&cluster, "apply", "deploy/streams-local.toml");
    let js = operator_js(&cluster).await;
    let configs = |js: async_nats::jetstream::Context| async move {
        let mut out = Vec::new();
        for name in ["AUDIT", "CHECKPOINTS", "EVENTS_POLICE_SY"] {
            out.push(
                halcyon_bus::streams::stream_info(&js, name)
                    .await
                    .unwrap()
                    .unwrap()
                    .config,
            );
        }
        out
    };
    let before = configs(js.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let log = refused(
        serve(&cluster, &cluster.seed_urls(), &data, free_port()),
        &data,
        "on streams with fewer replicas than the spec",
    )
    .await;
    for stream in ["AUDIT", "CHECKPOINTS", "EVENTS_POLICE_SY"] {
        assert!(
            log.contains(&format!("{stream}: replicas 1 is fewer than the spec's 3")),
            "{stream} not named: {log}"
        );
    }
    assert_eq!(
        configs(js.clone()).await,
        before,
        "a refusing node changed a stream"
    );
    let check = streams(&cluster, "check", SPEC);
    assert!(!check.status.success());
    apply_spec_over(&cluster);
    let check = streams_ok(&cluster, "check", SPEC);
    assert!(check.contains("AUDIT: ok (replicas 3"), "{check}");
}

fn apply_spec_over(cluster: &NatsCluster) {
    let out = streams_ok(cluster, "apply", SPEC);
    assert!(out.contains("AUDIT: updated (num_replicas 1 -> 3)"), "{out}");
}

/// Must-show 6: a stream recreated behind the node's checkpoint (as a restore from an older snapshot
/// leaves it) is refused with a message, not silently skipped — both when it is shorter than the
/// checkpoint and when it has grown past it again with different events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rolled_back_behind_the_checkpoint_is_refused() {
    let run = Run::start(ClusterOptions::default());
    let s = scenario(12, 166);
    let police: Vec<pb::Envelope> = s
        .envelopes
        .iter()
        .filter(|e| e.agency_id == "police-sy")
        .cloned()
        .collect();
    assert!(police.len() >= 6, "{} police events", police.len());
    let sent = publish(run.cluster.seed_urls(), s.envelopes.clone(), Arc::default()).await;
    let mut node = run.serve();
    let channel = channel(run.port, &mut node, &run.data()).await;
    caught_up(&channel, &last_positions(&sent)).await;
    common::stop_mut(&mut { node }.0);

    // The stream as an older snapshot had it: deleted and recreated, with its first half only.
    let js = operator_js(&run.cluster).await;
    js.delete_stream("EVENTS_POLICE_SY").await.unwrap();
    streams_ok(&run.cluster, "apply", SPEC);
    let half = police.len() / 2;
    publish(run.cluster.seed_urls(), police[..half].to_vec(), Arc::default()).await;
    let log = refused(run.serve(), &run.data(), "on a stream that went backwards").await;
    assert!(
        log.contains(&format!(
            "EVENTS_POLICE_SY: this node has applied up to sequence {} but the stream ends at {half}",
            police.len()
        )),
        "{log}"
    );
    assert!(log.contains("refusing to skip ahead"), "{log}");

    // Grown past the checkpoint again, with other events at the same sequences.
    let other = scenario(12, 1666);
    let more: Vec<pb::Envelope> = other
        .envelopes
        .into_iter()
        .filter(|e| e.agency_id == "police-sy")
        .take(police.len())
        .collect();
    publish(run.cluster.seed_urls(), more, Arc::default()).await;
    let log = refused(run.serve(), &run.data(), "on a rewritten stream").await;
    assert!(
        log.contains(&format!(
            "EVENTS_POLICE_SY: the message at sequence {} is not the one this node applied there",
            police.len()
        )),
        "{log}"
    );
}

/// Must-show 4: the servers' disks fill (each store on its own small tmpfs, filled with ballast).
/// Publishers get an error that says what may be wrong, the audit gate fails closed, nothing acknowledged
/// is lost, and once space is freed (and the servers restarted: nats-server 2.15 turns JetStream off on a
/// full disk and does not turn it back on by itself) writes resume and the node recovers without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disks_refuse_writes_fail_closed_and_lose_nothing() {
    if !NatsCluster::small_disk_supported() {
        eprintln!(
            "SKIPPED: unprivileged user namespaces (unshare -rm) are not available, so no small filesystem can be made"
        );
        return;
    }
    let mut run = Run::start(ClusterOptions {
        small_disk: Some(48 << 20),
        ..ClusterOptions::default()
    });
    let s = scenario(30, 167);
    let (first, second) = s.envelopes.split_at(s.envelopes.len() / 2);
    let mut sent = publish(run.cluster.seed_urls(), first.to_vec(), Arc::default()).await;
    let mut node = run.serve();
    let channel = channel(run.port, &mut node, &run.data()).await;
    caught_up(&channel, &last_positions(&sent)).await;
    health_becomes(&channel, true, Duration::from_secs(30)).await;

    let filled: Vec<u64> = (0..3).map(|i| run.cluster.fill_disk(i)).collect();
    eprintln!("ballast written to fill each server's store: {filled:?} bytes");
    // A few events while full (each refusal takes its retries), with three attempts each.
    let during = publish_with(run.cluster.seed_urls(), second[..8].to_vec(), Arc::default(), 3).await;
    let refused: Vec<&Sent> = during.iter().filter(|s| s.outcome.is_err()).collect();
    let first_error = refused
        .first()
        .map(|s| s.outcome.clone().unwrap_err().to_string())
        .unwrap_or_default();
    eprintln!(
        "disks full: {} of {} events acknowledged, {} refused; e.g. {first_error}",
        during.len() - refused.len(),
        during.len(),
        refused.len()
    );
    assert!(!refused.is_empty(), "full disks refused nothing");
    assert!(
        first_error.contains("out of disk") || first_error.contains("no storage left"),
        "the error does not say what may be wrong: {first_error}"
    );
    sent.extend(during.iter().filter(|s| s.outcome.is_ok()).cloned());
    let nhs = s.children[0].nhs.to_string();
    let mut client = QueryServiceClient::new(channel.clone());
    let answer = client.find_child(find_child(&nhs, "demo-csc-rotherham")).await;
    assert_eq!(
        answer.as_ref().map_err(|s| s.code()).err(),
        Some(tonic::Code::Unavailable),
        "the audit gate did not fail closed: {answer:?}"
    );
    health_becomes(&channel, false, Duration::from_secs(60)).await;

    for i in 0..3 {
        run.cluster.free_disk(i);
        run.cluster.kill(i);
    }
    for i in 0..3 {
        run.cluster.start_again_no_wait(i);
    }
    run.cluster.wait_all_healthy();
    let took = health_becomes(&channel, true, Duration::from_secs(90)).await;
    eprintln!("space freed and servers restarted; node SERVING after {took:?} without a restart");
    // The agencies send what was refused again, with the same ids.
    let again: Vec<pb::Envelope> = second
        .iter()
        .filter(|e| {
            !during
                .iter()
                .any(|d| d.event_id == e.event_id && d.outcome.is_ok())
        })
        .cloned()
        .collect();
    let resent = publish(run.cluster.seed_urls(), again, Arc::default()).await;
    assert!(resent.iter().all(|s| s.outcome.is_ok()), "writes did not resume");
    sent.extend(resent);
    caught_up(&channel, &last_positions(&sent)).await;
    assert!(node.try_wait().unwrap().is_none(), "the node exited");
    let n = s.envelopes.len();
    assert_eq!(each_acknowledged_event_once(&run.cluster, &sent).await, n);
    export_equals_rebuild(&run.cluster, node, &run.data(), n);
}

/// The durability check covers every server: a cluster whose servers do not sync every write is refused,
/// and so is a node told of only some servers' monitoring endpoints (it cannot vouch for the others,
/// which hold replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_holding_a_replica_must_sync_every_write() {
    let unsynced = NatsCluster::start_with(ClusterOptions {
        auth: Auth::Deploy,
        sync_always: false,
        ..ClusterOptions::default()
    });
    apply_spec(&unsynced);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let log = refused(
        serve(&unsynced, &unsynced.seed_urls(), &data, free_port()),
        &data,
        "on servers that do not sync every write",
    )
    .await;
    assert!(log.contains("sync_interval: always"), "{log}");
    drop(unsynced);

    let cluster = NatsCluster::start_with(ClusterOptions {
        auth: Auth::Deploy,
        ..ClusterOptions::default()
    });
    apply_spec(&cluster);
    let data = dir.path().join("node2");
    let two = cluster.monitor_urls()[..2].join(",");
    let node = serve_checking(&two, &cluster.seed_urls(), &data, free_port());
    let log = refused(node, &data, "vouching for a server it could not check").await;
    let third = &cluster.server_names()[2];
    assert!(
        log.contains(&format!("{third} (holds")) && log.contains("monitoring endpoints were not given"),
        "the unchecked server is not named: {log}"
    );
}

/// TLS to the cluster with the partnership's CA and a client certificate (servers that verify clients):
/// the node's connection options reach the cluster; without the certificate, or without the CA, they do
/// not, and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_and_a_client_certificate() {
    let cluster = NatsCluster::start_with(ClusterOptions {
        auth: Auth::Deploy,
        tls: true,
        tls_verify_clients: true,
        ..ClusterOptions::default()
    });
    let seeds = cluster
        .urls()
        .iter()
        .map(|u| u.replace("nats://", "tls://"))
        .collect::<Vec<_>>()
        .join(",");
    let with = |cert: bool, ca: bool| Credentials {
        tls: Some(halcyon_bus::ClientTls {
            ca_file: ca.then(|| cluster.ca_file()),
            cert_file: cert.then(|| cluster.client_cert()),
            key_file: cert.then(|| cluster.client_key()),
        }),
        connect_wait: Duration::ZERO,
        ..Credentials::user("operator", "operator-dev-secret")
    };
    let client = connect(&seeds, &with(true, true), "tls test").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let agency: halcyon_schema::AgencyId = "police-sy".parse().unwrap();
    let applied = halcyon_bus::streams::apply(&js, &halcyon_bus::StreamSpec::replicated(3), [&agency])
        .await
        .unwrap();
    assert_eq!(
        applied.len(),
        4,
        "three streams and the nodes bucket: {applied:?}"
    );
    let no_cert = connect(&seeds, &with(false, true), "tls test").await.unwrap_err();
    eprintln!("without a client certificate: {no_cert}");
    assert!(no_cert.to_string().contains("Certificate"), "{no_cert}");
    let no_ca = connect(&seeds, &with(true, false), "tls test").await.unwrap_err();
    eprintln!("without the CA: {no_ca}");
    assert!(
        no_ca.to_string().contains("TLS") || no_ca.to_string().contains("certificate"),
        "{no_ca}"
    );
}

/// Issue 17 on the cluster, with `halcyon serve` processes: two nodes, one started with a different policy
/// file (`halcyon nodes` lists what differs); the checkpoint keeper SIGKILLed mid-session (a client repeats
/// on the other node with its position and gets the same bytes; the other takes the duty); the killed node
/// back, the new keeper SIGSTOPped past its lease (the first takes over) and resumed (it writes nothing
/// more); `halcyon audit verify` finds every stream intact with one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fail_over_hand_over_the_checkpoint_duty_and_fence_a_paused_keeper() {
    use halcyon_bus::nodes::{bucket, duty_holder};
    let run = Run::start(ClusterOptions::default());
    let (seeds, monitors) = (run.cluster.seed_urls(), run.cluster.monitor_urls().join(","));
    // Node y runs with its own copy of the policy file (one more comment: a different file).
    let policy = run.dir.path().join("policy-y.toml");
    let original =
        std::fs::read_to_string(halcyon_testkit::workspace_root().join("deploy/policy/england.toml"))
            .unwrap();
    std::fs::write(&policy, format!("{original}\n# node y's copy\n")).unwrap();
    let ports = BTreeMap::from([("node-x", free_port()), ("node-y", free_port())]);
    let data = |id: &str| run.dir.path().join(id);
    let start = |id: &str| {
        let mut extra = vec!["--checkpoint-every-secs", "1"];
        if id == "node-y" {
            extra.extend(["--policy", policy.to_str().unwrap()]);
        }
        serve_as(&monitors, &seeds, &data(id), ports[id], id, &extra)
    };
    let mut nodes: BTreeMap<&str, Child> =
        BTreeMap::from([("node-x", start("node-x")), ("node-y", start("node-y"))]);
    let mut channels = BTreeMap::new();
    for id in ["node-x", "node-y"] {
        let node = nodes.get_mut(id).unwrap();
        channels.insert(id, channel(ports[id], node, &data(id)).await);
    }
    // Three populations of children, published in turn.
    let (s, s2, s3) = (scenario(6, 1717), scenario(6, 1718), scenario(6, 1719));
    let sent = publish(seeds.clone(), s.envelopes.clone(), Arc::default()).await;
    let wanted = last_positions(&sent);
    for id in ["node-x", "node-y"] {
        caught_up(&channels[id], &wanted).await;
    }

    // 6. `halcyon nodes` lists both, live, and names the part that differs.
    let mut args = vec!["nodes"];
    args.extend(operator_args(&seeds));
    let deadline = Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let out = common::halcyon_ok(&args);
        if out.contains("policy: node-x") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "halcyon nodes did not show the difference: {out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("node-x") && l.contains(" live ")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("node-y") && l.contains(" live ")),
        "{listing}"
    );
    assert!(
        listing.contains("configuration differs between live nodes:"),
        "{listing}"
    );
    assert!(
        !listing.contains("agencies:"),
        "only the policy differs: {listing}"
    );

    let js = operator_js(&run.cluster).await;
    let kv = bucket(&js).await.unwrap();
    let keeper = || async {
        patiently(|| duty_holder(&kv, halcyon_node::chain::DUTY))
            .await
            .unwrap()
            .map(|(h, _, _)| h.node_id)
    };
    // Waits (at most a minute) until `node` holds the duty; how long after `since` it was seen to.
    let duty_passes_to = |node: &'static str, since: Instant| {
        let keeper = &keeper;
        async move {
            while keeper().await.as_deref() != Some(node) {
                assert!(
                    since.elapsed() < Duration::from_secs(60),
                    "the duty did not pass to {node}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            since.elapsed()
        }
    };
    let first = keeper().await.expect("a keeper");
    let (holder, other): (&str, &str) = if first == "node-x" {
        ("node-x", "node-y")
    } else {
        ("node-y", "node-x")
    };

    let by = |node: &'static str| {
        let js = js.clone();
        async move {
            halcyon_bus::checkpoint::read_checkpoints(&js, None)
                .await
                .unwrap()
                .checkpoints
                .iter()
                .filter(|c| c.checkpoint.node_id == node)
                .count()
        }
    };
    // Waits until `node` has written more than `than` checkpoints.
    let wrote_more = |node: &'static str, than: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = by(node).await;
            if n > than {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "{node} wrote no checkpoint within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wrote_more(holder, 0).await;
    assert_eq!(by(other).await, 0, "only the keeper writes checkpoints");

    // 2. The keeper answers, then is SIGKILLed; the client repeats on the other node with its position.
    let nhs = s.children[0].nhs.to_string();
    let context = pb::RequestContext {
        purpose: pb::Purpose::Safeguarding as i32,
        min_positions: wanted
            .iter()
            .map(|(stream, &sequence)| pb::Position {
                stream: stream.clone(),
                sequence,
            })
            .collect(),
        ..Default::default()
    };
    let ask = |channel: Channel, context: pb::RequestContext, nhs: String| async move {
        let mut request = find_child(&nhs, "demo-csc-rotherham");
        request.get_mut().context = Some(context);
        QueryServiceClient::new(channel).find_child(request).await
    };
    let answered = ask(channels[holder].clone(), context.clone(), nhs.clone())
        .await
        .unwrap()
        .into_inner();
    let killed_at = Instant::now();
    nodes.get_mut(holder).unwrap().kill().unwrap();
    nodes.get_mut(holder).unwrap().wait().unwrap();
    let repeated = ask(channels[other].clone(), context.clone(), nhs.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answered.encode_to_vec(),
        repeated.encode_to_vec(),
        "the other node answered otherwise"
    );
    let took = duty_passes_to(other, killed_at).await;
    eprintln!("the checkpoint duty passed from {holder} to {other} {took:?} after the SIGKILL (lease 3 s)");
    // Counted once it is dead (and the duty has passed): it must write nothing more.
    let by_holder = by(holder).await;

    let sent = publish(seeds.clone(), s2.envelopes.clone(), Arc::default()).await;
    let wanted = last_positions(&sent);
    caught_up(&channels[other], &wanted).await;
    let by_other = wrote_more(other, 0).await;
    assert_eq!(
        by(holder).await,
        by_holder,
        "the killed keeper wrote nothing more"
    );

    // The killed node comes back (same id, same data) and stands by; the keeper is paused past its lease.
    nodes.insert(holder, start(holder));
    channels.insert(
        holder,
        channel(ports[holder], nodes.get_mut(holder).unwrap(), &data(holder)).await,
    );
    caught_up(&channels[holder], &wanted).await;
    let paused = nodes[other].id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &paused])
            .status()
            .unwrap()
            .success()
    );
    let stopped_at = Instant::now();
    let took = duty_passes_to(holder, stopped_at).await;
    eprintln!("the duty passed back to {holder} {took:?} after SIGSTOP of {other}");
    // Once the new term has begun, the paused node's checkpoints are refused by the server.
    let before_resume = by(other).await;
    assert!(before_resume >= by_other);
    let sent = publish(seeds.clone(), s3.envelopes.clone(), Arc::default()).await;
    let wanted = last_positions(&sent);
    assert!(
        Command::new("kill")
            .args(["-CONT", &paused])
            .status()
            .unwrap()
            .success()
    );
    caught_up(&channels[holder], &wanted).await;
    caught_up(&channels[other], &wanted).await;
    // Several of its renewal and checkpoint intervals: it must notice it lost the lease and write nothing.
    wrote_more(holder, by_holder).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        by(other).await,
        before_resume,
        "the paused former keeper wrote checkpoints after it lost the lease"
    );
    assert_eq!(keeper().await.as_deref(), Some(holder));
    let log = node_log(&data(other));
    assert!(
        log.contains("lost the checkpoint duty")
            || log.contains("lease ran out")
            || log.contains("keeper term is over"),
        "the paused node did not say it lost the duty: {log}"
    );

    // Everything checkpointed by the keeper, then one unbroken chain per stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for (stream, &seq) in &wanted {
            let last = halcyon_bus::checkpoint::last_checkpoint(&js, stream)
                .await
                .unwrap();
            all &= last.is_some_and(|c| c.checkpoint.to_sequence >= seq);
        }
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "not checkpointed to the end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut args = vec!["audit", "verify", "--keyring", "deploy/keyring-dev.toml"];
    args.extend(operator_args(&seeds));
    let verified = common::halcyon_ok(&args);
    eprintln!("{verified}");
    assert!(!verified.contains("DIVERGES"), "{verified}");
    for stream in wanted.keys() {
        assert!(
            verified.contains(&format!("{stream}: intact up to ")),
            "{verified}"
        );
    }
    for (_, mut node) in nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
}
