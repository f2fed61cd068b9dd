//! Query rows: `FindChild` by NHS number against a real node over gRPC on loopback (bearer token, purpose
//! safeguarding, the audit gate on, the server syncing every write), at 1, 16 and 64 concurrent calls,
//! beside a bare tonic service that returns a pre-built `ChildView` of the same size in the same run.
//!
//! The bare service is stock generated tonic: it clones its message and prost encodes it on every call.
//! The node keeps each decided view encoded (`halcyon_node::reply`) and copies those bytes, so the two differ
//! in that too; every node call still authenticates, decides or reuses the view for the facts it holds, and
//! waits for its own access record to be durable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use halcyon_bus::{StreamSpec, list_event_streams};
use halcyon_grpc::pb;
use halcyon_grpc::pb::query_service_client::QueryServiceClient;
use halcyon_grpc::pb::query_service_server::{QueryService, QueryServiceServer};
use halcyon_node::{Node, NodeConfig, auth::Tokens};
use halcyon_policy::{Policy, Purpose};
use halcyon_schema::Registry;
use halcyon_testkit::{Auth, NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{Report, figure, median};

/// The concurrency levels measured.
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// The caller: a police practitioner (deploy/tokens.toml), asking for safeguarding.
const TOKEN: &str = "demo-police-sy";
/// Concurrent calls per HTTP/2 connection at most (one channel multiplexes, but serialises on one task).
const CALLS_PER_CHANNEL: usize = 16;

pub(super) struct Queries<'a> {
    pub agencies: &'a ScenarioAgencies,
    pub registry: &'a Registry,
    pub window: usize,
    pub rounds: usize,
    /// How long each concurrency level runs, per round and per service.
    pub load: Duration,
    pub children: usize,
}

/// A node serving a projected scenario.
pub(super) struct Loaded {
    /// The bus the node is on.
    pub(super) js: jetstream::Context,
    pub(super) node: Node,
    /// The children the caller may see, by NHS number.
    pub(super) nhs: Arc<Vec<String>>,
    pub(super) views: Vec<pb::ChildView>,
    /// Events published.
    pub(super) events: usize,
}

/// One load run: calls answered per second and latency percentiles in µs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    pub(super) rate: f64,
    pub(super) p50_us: f64,
    p99_us: f64,
}

impl Queries<'_> {
    pub async fn rows(&self, report: &mut Report) -> anyhow::Result<()> {
        let server = NatsServer::start_with(Auth::Open, true);
        let data = tempfile::tempdir().context("a temp dir for the node")?;
        let loaded = self
            .loaded_node(
                &server.url(),
                vec![server.monitor_url()],
                StreamSpec::single_server(),
                data.path(),
            )
            .await?;
        let (js, node, nhs, views, scenario_len) =
            (loaded.js, loaded.node, loaded.nhs, loaded.views, loaded.events);
        let node_url = format!("http://{}", node.addr);
        let mean_len = views.iter().map(|v| v.encoded_len()).sum::<usize>() / views.len();
        let view = views
            .into_iter()
            .min_by_key(|v| v.encoded_len().abs_diff(mean_len))
            .expect("at least one child");
        eprintln!(
            "  {} children, {} events; FindChild responses mean {mean_len} B, the bare service returns {} B",
            nhs.len(),
            figure(scenario_len as f64),
            view.encoded_len()
        );
        let (bare_addr, bare_stop) = serve_bare(view).await?;
        let bare_url = format!("http://{bare_addr}");
        // What one access record's durability costs on its own, in this run: a disk flush, and one
        // acknowledged write to a stream on the same server.
        let flush_us = disk_flush_p50_us(data.path())?;
        let write_us = durable_write_p50_us(&js).await?;
        eprintln!(
            "  one disk flush (300 B append + fdatasync) p50 {flush_us:.0} µs; one acknowledged write of an access record to a stream on this server p50 {write_us:.0} µs"
        );
        let mut flushes = Vec::new();
        let mut writes = Vec::new();

        let mut runs: Vec<(Vec<Load>, Vec<Load>)> = CONCURRENCY.iter().map(|_| (vec![], vec![])).collect();
        for _ in 0..self.rounds {
            flushes.push(disk_flush_p50_us(data.path())?);
            writes.push(durable_write_p50_us(&js).await?);
            for (i, &c) in CONCURRENCY.iter().enumerate() {
                let before = AuditWrites::of(&node);
                let real = load(&node_url, c, self.load, nhs.clone()).await?;
                let audit = AuditWrites::of(&node).since(&before);
                let bare = load(&bare_url, c, self.load, nhs.clone()).await?;
                eprintln!(
                    "  c{c}: node {} req/s (p50 {:.0} µs, p99 {:.0} µs; {:.1} records per AUDIT write, write mean {:.0} µs); bare tonic {} req/s (p50 {:.0} µs, p99 {:.0} µs)",
                    figure(real.rate),
                    real.p50_us,
                    real.p99_us,
                    audit.records / audit.writes,
                    audit.seconds / audit.writes * 1e6,
                    figure(bare.rate),
                    bare.p50_us,
                    bare.p99_us
                );
                runs[i].0.push(real);
                runs[i].1.push(bare);
            }
        }
        let _ = bare_stop.send(());
        node.stop(Duration::from_secs(5)).await;

        let pick = |loads: &[Load], f: fn(&Load) -> f64| median(loads.iter().map(f).collect());
        flushes.push(flush_us);
        writes.push(write_us);
        let (flush_us, write_us) = (median(flushes), median(writes));
        report.row("disk.flush.p50", flush_us, "µs", "durable_write.p50", write_us);
        let bare_c1 = pick(&runs[0].1, |l| l.p50_us);
        // Issue 19: at one call, within one disk flush plus 150 µs of the bare service.
        report.row(
            "query.find_child.c1.p50",
            pick(&runs[0].0, |l| l.p50_us),
            "µs",
            "bare_tonic.c1.p50+flush+150",
            bare_c1 + flush_us + 150.0,
        );
        for (&c, (real, bare)) in CONCURRENCY.iter().zip(&runs) {
            report.row(
                &format!("query.find_child.c{c}"),
                pick(real, |l| l.rate),
                "req/s",
                &format!("bare_tonic.c{c}"),
                pick(bare, |l| l.rate),
            );
        }
        for (&c, (real, bare)) in CONCURRENCY.iter().zip(&runs) {
            report.row(
                &format!("query.find_child.c{c}.p50"),
                pick(real, |l| l.p50_us),
                "µs",
                &format!("bare_tonic.c{c}.p50"),
                pick(bare, |l| l.p50_us),
            );
            report.row(
                &format!("query.find_child.c{c}.p99"),
                pick(real, |l| l.p99_us),
                "µs",
                &format!("bare_tonic.c{c}.p99"),
                pick(bare, |l| l.p99_us),
            );
        }
        Ok(())
    }

    /// A node on the server or cluster at `url` (streams applied as `spec` says), the seeded scenario
    /// published and projected, and the children the caller may see.
    pub(super) async fn loaded_node(
        &self,
        url: &str,
        monitor_urls: Vec<String>,
        spec: StreamSpec,
        data: &std::path::Path,
    ) -> anyhow::Result<Loaded> {
        let mut config = self.node_config_at(url, monitor_urls, data)?;
        config.streams = spec;
        let client = halcyon_bus::connect(url, &Default::default(), "halcyon-bench").await?;
        let js = jetstream::new(client.clone());
        halcyon_bus::streams::apply(&js, &config.streams, config.agencies.iter().map(|a| &a.id)).await?;
        let node = Node::start(config).await?;
        let scenario = Scenario::generate(
            &ScenarioConfig {
                seed: 7,
                children: self.children,
                ..Default::default()
            },
            self.agencies,
        );
        publish(&client, &scenario.envelopes, self.window).await?;
        // Wait, bounded, for the node to have projected everything published.
        let mut ends = Vec::new();
        for name in list_event_streams(&js).await? {
            let last = js.get_stream(&name).await?.info().await?.state.last_sequence;
            ends.push((name, last));
        }
        node.projector()
            .wait_for(&ends, Duration::from_secs(120))
            .await
            .context("waiting for the node to project the scenario")?;
        let node_url = format!("http://{}", node.addr);
        // One pass over every child: every call must answer, and the sizes choose the bare response.
        let mut client = QueryServiceClient::connect(node_url).await?;
        let mut views = Vec::new();
        let mut seen = Vec::new();
        for child in &scenario.children {
            let n = child.nhs.to_string();
            // A child the caller may learn nothing of answers NOT_FOUND: the load asks only for the others.
            match client.find_child(find_child(&n)).await {
                Ok(view) => {
                    views.push(view.into_inner());
                    seen.push(n);
                }
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => return Err(status.into()),
            }
        }
        if views.is_empty() {
            bail!("the caller may see none of the scenario's children");
        }
        Ok(Loaded {
            js,
            node,
            nhs: Arc::new(seen),
            views,
            events: scenario.envelopes.len(),
        })
    }

    /// A node as tests build it (tests/tests/e2e/common), on an open server that syncs every write.
    fn node_config_at(
        &self,
        url: &str,
        monitor_urls: Vec<String>,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<NodeConfig> {
        let mut config = node_config(self.registry, url, data_dir)?;
        config.nats_monitor_urls = monitor_urls;
        Ok(config)
    }
}

/// A node as tests build it (tests/tests/e2e/common), on the open server at `url`, keeping its read models in
/// `data_dir`.
pub(super) fn node_config(
    registry: &Registry,
    url: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<NodeConfig> {
    let tokens = Tokens::load(&workspace_root().join("deploy/tokens.toml"), registry)
        .map_err(|e| anyhow::anyhow!("deploy/tokens.toml: {e}"))?;
    let policy = Policy::load(&workspace_root().join("deploy/policy/england.toml"))
        .map_err(|e| anyhow::anyhow!("deploy/policy/england.toml: {e}"))?;
    Ok(NodeConfig {
        nats_url: url.to_owned(),
        nats_credentials: Default::default(),
        nats_monitor_urls: Vec::new(),
        allow_unsynced_jetstream: false,
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse().expect("address"),
        admin_listen: None,
        drain_delay: Duration::ZERO,
        drain_grace: Duration::from_secs(10),
        agencies: registry.clone(),
        policy,
        tokens,
        tokens_path: None,
        node_id: "bench-node".into(),
        peers: Default::default(),
        reflection: false,
        read_wait: Duration::from_secs(20),
        streams: StreamSpec::single_server(),
        concurrency_max: 256,
        lag_max: 10_000,
        tls: None,
        checkpoints: None,
        timescales: std::sync::Arc::new(halcyon_timescales::Timescales::england()),
        signals: std::sync::Arc::new(halcyon_signals::SignalRules::england()),
        future_tolerance_ms: halcyon_schema::validate::CLOCK_TOLERANCE_MS,
        sled_cache_bytes: halcyon_projector::store::SLED_CACHE_BYTES_DEFAULT,
        schema_version_max: halcyon_schema::SCHEMA_VERSION,
        clock: halcyon_projector::clock::Clock::system(),
    })
}

/// The node's AUDIT writes so far, from its metrics.
struct AuditWrites {
    writes: f64,
    records: f64,
    seconds: f64,
}

impl AuditWrites {
    fn of(node: &Node) -> Self {
        let m = &node.metrics;
        Self {
            writes: m.audit_records_per_write.get_sample_count() as f64,
            records: m.audit_records_per_write.get_sample_sum(),
            seconds: m.audit_write_seconds.get_sample_sum(),
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            writes: (self.writes - before.writes).max(1.0),
            records: self.records - before.records,
            seconds: self.seconds - before.seconds,
        }
    }
}

/// p50 of a 300-byte append and `fdatasync` in `dir`, 1,000 times: one disk flush on this machine.
fn disk_flush_p50_us(dir: &std::path::Path) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let path = dir.join("flush-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut took = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        file.write_all(&[7u8; 300])?;
        file.sync_data()?;
        took.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(median(took))
}

/// p50 of one acknowledged write of an access-record-sized message (with a message id) to a file stream on
/// the node's server, one at a time, 1,000 times: what the audit gate's write costs before any node work.
async fn durable_write_p50_us(js: &jetstream::Context) -> anyhow::Result<f64> {
    const STREAM: &str = "BENCH_DURABLE_WRITE";
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["bench.durable-write".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![7u8; 400]);
    let mut took = Vec::with_capacity(1000);
    for i in 0..1000 {
        let t = Instant::now();
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("probe-{i}"));
        js.send_publish("bench.durable-write", publish).await?.await?;
        took.push(t.elapsed().as_secs_f64() * 1e6);
    }
    js.delete_stream(STREAM).await?;
    Ok(median(took))
}

fn find_child(nhs: &str) -> Request<pb::FindChildRequest> {
    let mut request = Request::new(pb::FindChildRequest {
        context: Some(pb::RequestContext {
            purpose: Purpose::Safeguarding.to_pb() as i32,
            ..Default::default()
        }),
        identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.to_owned())),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().expect("ascii"));
    request
}

/// `concurrency` callers, each calling FindChild in a loop over the children for `duration`, spread over
/// channels of at most `CALLS_PER_CHANNEL` calls; every call must succeed.
pub(super) async fn load(
    url: &str,
    concurrency: usize,
    duration: Duration,
    nhs: Arc<Vec<String>>,
) -> anyhow::Result<Load> {
    let mut channels = Vec::new();
    for _ in 0..concurrency.div_ceil(CALLS_PER_CHANNEL) {
        channels.push(
            Channel::from_shared(url.to_owned())?
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut callers = Vec::with_capacity(concurrency);
    for caller in 0..concurrency {
        let mut client = QueryServiceClient::new(channels[caller % channels.len()].clone());
        let nhs = nhs.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut i = caller * 7919;
            while Instant::now() < deadline {
                let n = &nhs[i % nhs.len()];
                i += 1;
                let sent = Instant::now();
                client.find_child(find_child(n)).await?;
                latencies_us.push(sent.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, Status>(latencies_us)
        }));
    }
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await?.context("a FindChild call failed")?);
    }
    let secs = started.elapsed().as_secs_f64();
    if latencies.is_empty() {
        bail!("no call completed in {duration:?}");
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok(Load {
        rate: latencies.len() as f64 / secs,
        p50_us: at(0.50),
        p99_us: at(0.99),
    })
}

/// The children of `nhs` the bench's caller may learn something of (the others answer NOT_FOUND).
pub(super) async fn answered(url: &str, nhs: &[String]) -> anyhow::Result<Vec<String>> {
    let mut client = QueryServiceClient::connect(url.to_owned()).await?;
    let mut seen = Vec::new();
    for n in nhs {
        match client.find_child(find_child(n)).await {
            Ok(_) => seen.push(n.clone()),
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status.into()),
        }
    }
    Ok(seen)
}

/// Publishes the scenario without `Nats-Msg-Id`, `window` acknowledgements outstanding.
pub(super) async fn publish(
    client: &async_nats::Client,
    envelopes: &[pb::Envelope],
    window: usize,
) -> anyhow::Result<()> {
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(window)
        .backpressure_on_inflight(true)
        .build(client.clone());
    let mut in_flight = VecDeque::with_capacity(window);
    for e in envelopes {
        in_flight.push_back(js.publish(Scenario::subject(e), e.encode_to_vec().into()).await?);
        if in_flight.len() >= window
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await?;
        }
    }
    for ack in in_flight {
        ack.await?;
    }
    Ok(())
}

/// The baseline service: answers FindChild with a pre-built view, nothing else (a benchmark baseline).
struct BareQuery {
    view: pb::ChildView,
}

type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for BareQuery {
    type WatchStream = WatchStream;

    async fn find_child(&self, _: Request<pb::FindChildRequest>) -> Result<Response<pb::ChildView>, Status> {
        Ok(Response::new(self.view.clone()))
    }

    async fn get_child_view(
        &self,
        _: Request<pb::GetChildViewRequest>,
    ) -> Result<Response<pb::ChildView>, Status> {
        Err(Status::unimplemented("bench baseline"))
    }

    async fn get_chronology(
        &self,
        _: Request<pb::GetChronologyRequest>,
    ) -> Result<Response<pb::ChronologyPage>, Status> {
        Err(Status::unimplemented("bench baseline"))
    }

    async fn check_flag(&self, _: Request<pb::CheckFlagRequest>) -> Result<Response<pb::FlagStatus>, Status> {
        Err(Status::unimplemented("bench baseline"))
    }

    async fn watch(&self, _: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        Err(Status::unimplemented("bench baseline"))
    }

    async fn get_positions(
        &self,
        _: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::GetPositionsResponse>, Status> {
        Err(Status::unimplemented("bench baseline"))
    }

    async fn list_quarantine(
        &self,
        _: Request<pb::ListQuarantineRequest>,
    ) -> Result<Response<pb::ListQuarantineResponse>, Status> {
        Err(Status::unimplemented("bench baseline"))
    }
}

/// Serves the bare service on a free loopback port until the sender is used or dropped.
async fn serve_bare(
    view: pb::ChildView,
) -> anyhow::Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cancelled = async move {
        let _ = stopped.await;
    };
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(QueryServiceServer::new(BareQuery { view }))
            .serve_with_incoming_shutdown(incoming, cancelled)
            .await
        {
            eprintln!("bare tonic server failed: {e}");
        }
    });
    Ok((addr, stop))
}
