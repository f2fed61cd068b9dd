//! `halcyon-bench` (`just bench`): Halcyon's hot paths, each beside a baseline measured in the same run on the same
//! machine (absolute figures drift 10–40% between runs on shared machines; ratios much less). Starts its
//! own nats-servers (one syncing every write, one with JetStream's default) on free ports in temp dirs,
//! prints a table and writes the same rows as JSON.
//!
//! Adding a row: measure the figure and its baseline in the same run, then
//! `report.row(name, value, unit, baseline_name, baseline_value)`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::{BatchConfig, BatchPublisher, Publisher, PublisherConfig, StreamSpec};
use halcyon_grpc::pb;
use halcyon_policy::{
    AgencyId, AgencyKind, BreakGlass, Category, ChildState, Fact, Involvement, Policy, Principal, Purpose,
    Request, Role, Stage, decide,
};
use halcyon_schema::{Registry, StreamName};
use halcyon_testkit::{Auth, NatsServer, Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message as _;

use halcyon_cli::Failure;

mod cluster;
mod naming;
mod projection;
mod query;
mod replay;
mod scale;
mod soak;
mod verify;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events per measurement on the server that syncs every write, one event at a time (about 4–5k/s).
    #[arg(long, default_value_t = 15_000)]
    durable_events: usize,
    /// Events per measurement for batches and for the server with JetStream's default sync.
    #[arg(long, default_value_t = 60_000)]
    events: usize,
    /// Publishes awaiting acknowledgement at once, for the publisher and its baseline alike.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Each measurement runs this many times, interleaved with its baseline; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How long each policy measurement runs.
    #[arg(long, default_value_t = 700)]
    policy_ms: u64,
    /// Events in the streams for the projection rows (projection, ordered read, sled batches).
    #[arg(long, default_value_t = 150_000)]
    projection_events: usize,
    /// Events for the rebuild row (issue 5 asks for at least 1,000,000), generated and published in chunks.
    #[arg(long, default_value_t = 1_000_000)]
    rebuild_events: usize,
    /// Events for the replay row (issue 7 asks for at least 1,000,000), generated and published in chunks.
    #[arg(long, default_value_t = 1_000_000)]
    replay_events: usize,
    /// How long each query load runs, per concurrency level, service and round.
    #[arg(long, default_value_t = 2_000)]
    query_ms: u64,
    /// Children in the scenario the query node serves.
    #[arg(long, default_value_t = 500)]
    query_children: usize,
    /// Events in the streams for the verify rows (issue 7 asks for at least 100,000).
    #[arg(long, default_value_t = 120_000)]
    verify_events: usize,
    /// Where to write the rows as JSON.
    #[arg(long, default_value = "target/bench/report.json")]
    out: PathBuf,
    /// How long the soak runs (mixed load on a node process of its own; its memory read at the start,
    /// middle and end).
    #[arg(long, default_value_t = 300)]
    soak_secs: u64,
    /// New events published per second during the soak.
    #[arg(long, default_value_t = 500)]
    soak_rate: usize,
    /// Run only these groups (repeatable); all groups when absent (the scale group only when named).
    #[arg(long, value_enum)]
    only: Vec<Group>,
    /// The scale group alone (issue 19): each answer's cost, the rebuild and the bytes at two sizes of
    /// history (`--scale-sizes`), in the same run.
    #[arg(long)]
    scale: bool,
    /// The sizes of history (events) `--scale` measures at; a third of 10,000,000 is documented but optional.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    scale_sizes: Vec<usize>,
}

/// The benchmark groups, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Group {
    Publish,
    Policy,
    /// Naming a child's signals when its facts arrive out of order, beside one evaluation.
    Signals,
    Query,
    Projection,
    Rebuild,
    Verify,
    Replay,
    Soak,
    /// Durable ingest and child-view queries on a three-server cluster (R3) beside one server.
    Cluster,
    /// Each answer's cost, the rebuild and the bytes at two sizes of history (`--scale`).
    Scale,
}

impl Args {
    fn runs(&self, group: Group) -> bool {
        if self.scale {
            return group == Group::Scale;
        }
        if group == Group::Scale {
            return self.only.contains(&group);
        }
        self.only.is_empty() || self.only.contains(&group)
    }
}

/// One figure beside its baseline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline_name: String,
    pub baseline_value: f64,
    /// `value / baseline_value`.
    pub ratio: f64,
}

/// The rows of one run, in the order they were added.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    pub fn row(&mut self, name: &str, value: f64, unit: &str, baseline_name: &str, baseline_value: f64) {
        let row = Row {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline_name: baseline_name.to_owned(),
            baseline_value,
            ratio: if baseline_value > 0.0 {
                value / baseline_value
            } else {
                f64::NAN
            },
        };
        eprintln!(
            "  {}: {} {} ({}: {}; ratio {:.2})",
            row.name,
            figure(row.value),
            row.unit,
            row.baseline_name,
            figure(row.baseline_value),
            row.ratio
        );
        self.rows.push(row);
    }

    #[cfg(test)]
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The rows as an aligned text table.
    pub fn table(&self) -> String {
        let header = ["name", "value", "unit", "baseline", "baseline value", "ratio"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.name.clone(),
                    figure(r.value),
                    r.unit.clone(),
                    r.baseline_name.clone(),
                    figure(r.baseline_value),
                    format!("{:.2}", r.ratio),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let numeric = [false, true, false, false, true, true];
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(widths)
                .zip(numeric)
                .map(|((c, w), right)| {
                    if right {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_owned()
        };
        let mut out = line(&header.map(str::to_owned));
        out.push('\n');
        out.push_str(&line(&widths.map(|w| "-".repeat(w))));
        out.push('\n');
        for row in &cells {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(&self.rows)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// A rate with thousands separators; small figures keep two decimals.
fn figure(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value.abs() < 100.0 {
        return format!("{value:.2}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub async fn run(args: Args) -> Result<(), Failure> {
    if args.rounds == 0
        || args.events == 0
        || args.durable_events == 0
        || args.window == 0
        || args.projection_events == 0
        || args.rebuild_events == 0
        || args.replay_events == 0
        || args.verify_events == 0
        || args.query_ms == 0
        || args.query_children == 0
    {
        return Err(halcyon_cli::config_error(anyhow::anyhow!(
            "--rounds, --events, --durable-events, --window, --projection-events, --rebuild-events, \
             --replay-events, --verify-events, --query-ms and --query-children must be at least 1"
        )));
    }
    let mut report = Report::default();
    let agencies = ScenarioAgencies::deploy();
    let envelopes = scenario_envelopes(&agencies, args.events.max(args.durable_events));
    let mean_bytes = envelopes.iter().map(|e| e.encoded_len()).sum::<usize>() / envelopes.len();
    let context = format!(
        "{}; {} scenario envelopes (mean {mean_bytes} B); window {}; median of {} rounds; load {} at start",
        nats_server_version(),
        figure(envelopes.len() as f64),
        args.window,
        args.rounds,
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into()),
    );
    eprintln!("halcyon-bench: {context}");

    let publish = Publishing {
        agencies: &agencies,
        window: args.window,
    };
    let fast = &envelopes[..args.events];
    let durable = &envelopes[..args.durable_events];

    if args.runs(Group::Publish) {
        eprintln!("publishing, server syncing every write:");
        let synced = NatsServer::start_with(Auth::Open, true);
        warn_if_tmpfs(synced.dir());
        let (mut pub_sync, mut raw_sync, mut batch_500, mut batch_1000) = (vec![], vec![], vec![], vec![]);
        for _ in 0..args.rounds {
            pub_sync.push(publish.publisher(&synced, durable).await?);
            raw_sync.push(publish.raw(&synced, durable).await?);
            batch_500.push(publish.batches(&synced, fast, 500).await?);
            batch_1000.push(publish.batches(&synced, fast, 1000).await?);
        }
        drop(synced);

        eprintln!("publishing, JetStream's default sync:");
        let unsynced = NatsServer::start_with(Auth::Open, false);
        let (mut pub_default, mut raw_default) = (vec![], vec![]);
        for _ in 0..args.rounds {
            pub_default.push(publish.publisher(&unsynced, fast).await?);
            raw_default.push(publish.raw(&unsynced, fast).await?);
        }
        drop(unsynced);

        let (pub_sync, raw_sync) = (median(pub_sync), median(raw_sync));
        let (pub_default, raw_default) = (median(pub_default), median(raw_default));
        let (batch_500, batch_1000) = (median(batch_500), median(batch_1000));
        eprintln!("results:");
        report.row(
            "publisher.sync_always",
            pub_sync,
            "events/s",
            "raw_js_publish.sync_always",
            raw_sync,
        );
        report.row(
            "publisher.default_sync",
            pub_default,
            "events/s",
            "raw_js_publish.default_sync",
            raw_default,
        );
        report.row(
            "batch_publisher_500.sync_always",
            batch_500,
            "events/s",
            "publisher.sync_always",
            pub_sync,
        );
        report.row(
            "batch_publisher_1000.sync_always",
            batch_1000,
            "events/s",
            "publisher.sync_always",
            pub_sync,
        );
        report.row(
            "batch_publisher_1000.sync_always",
            batch_1000,
            "events/s",
            "raw_js_publish.default_sync",
            raw_default,
        );
    }

    if args.runs(Group::Policy) {
        eprintln!("policy:");
        let policy_bench = PolicyBench::new(&load_registry()?);
        let budget = Duration::from_millis(args.policy_ms);
        let (mut decided, mut looked_up) = (vec![], vec![]);
        for _ in 0..args.rounds {
            decided.push(policy_bench.decide_rate(budget));
            looked_up.push(policy_bench.lookup_rate(budget));
        }
        report.row(
            "policy.decide",
            median(decided),
            "decisions/s",
            "hashmap_lookup(kind,category)",
            median(looked_up),
        );
    }

    if args.runs(Group::Signals) {
        eprintln!("signals: naming a child's signals (under the writer lock), facts in and out of order:");
        naming::rows(&mut report, args.rounds);
    }

    let registry = load_registry()?;
    let queries = query::Queries {
        agencies: &agencies,
        registry: &registry,
        window: args.window,
        rounds: args.rounds,
        load: Duration::from_millis(args.query_ms),
        children: args.query_children,
    };
    if args.runs(Group::Query) {
        eprintln!("queries, audit gate on, server syncing every write:");
        queries.rows(&mut report).await?;
    }

    if args.runs(Group::Cluster) {
        eprintln!("cluster: R3 on three servers beside one server, both syncing every write:");
        cluster::ClusterBench {
            publishing: &publish,
            queries: &queries,
            durable,
            rounds: args.rounds,
        }
        .rows(&mut report)
        .await?;
    }

    if args.runs(Group::Soak) {
        eprintln!("soak: mixed load on a node process of its own, its memory read as it runs:");
        soak::Soak {
            agencies: &agencies,
            duration: Duration::from_secs(args.soak_secs.max(20)),
            rate: args.soak_rate.max(1),
        }
        .rows(&mut report)
        .await?;
    }

    let projection = projection::Projection {
        agencies: &agencies,
        registry: &registry,
        window: args.window,
        rounds: args.rounds,
    };
    if args.runs(Group::Projection) {
        eprintln!("projection, streams on a server with JetStream's default sync:");
        projection.rows(&mut report, args.projection_events).await?;
    }
    if args.runs(Group::Rebuild) {
        eprintln!("rebuild of {} events:", figure(args.rebuild_events as f64));
        projection.rebuild_rows(&mut report, args.rebuild_events).await?;
    }

    if args.runs(Group::Replay) {
        eprintln!(
            "replay of {} events as JSON lines:",
            figure(args.replay_events as f64)
        );
        replay::ReplayBench {
            agencies: &agencies,
            window: args.window,
            rounds: args.rounds,
        }
        .rows(&mut report, args.replay_events)
        .await?;
    }

    if args.runs(Group::Scale) {
        if args.scale_sizes.is_empty() || args.scale_sizes.contains(&0) {
            return Err(halcyon_cli::config_error(anyhow::anyhow!(
                "--scale-sizes must name sizes of at least 1 event"
            )));
        }
        scale::Scale {
            agencies: &agencies,
            registry: &registry,
            window: args.window,
            sizes: args.scale_sizes.clone(),
        }
        .rows(&mut report)
        .await?;
    }

    if args.runs(Group::Verify) {
        eprintln!("verify, streams on a server with JetStream's default sync:");
        verify::Verify {
            agencies: &agencies,
            window: args.window,
            rounds: args.rounds,
        }
        .rows(&mut report, args.verify_events)
        .await?;
    }

    println!("{context}\n\n{}", report.table());
    report.write_json(&args.out)?;
    eprintln!("rows written to {}", args.out.display());
    Ok(())
}

/// `n` envelopes from the seeded scenario generator (about 20 per child, five agencies).
fn scenario_envelopes(agencies: &ScenarioAgencies, n: usize) -> Vec<pb::Envelope> {
    let mut children = n / 15 + 1;
    loop {
        let mut envelopes = Scenario::generate(
            &ScenarioConfig {
                children,
                ..Default::default()
            },
            agencies,
        )
        .envelopes;
        if envelopes.len() >= n {
            envelopes.truncate(n);
            return envelopes;
        }
        children *= 2;
    }
}

fn load_registry() -> anyhow::Result<Registry> {
    let path = halcyon_testkit::workspace_root().join("deploy/agencies.toml");
    let src = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Registry::from_toml(&src).with_context(|| path.display().to_string())
}

fn nats_server_version() -> String {
    let binary = halcyon_testkit::nats_server_binary();
    std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("{}: {e}", binary.display()))
}

/// fsync costs nothing on tmpfs, which would make the syncing server's figures meaningless.
fn warn_if_tmpfs(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let fs_type = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(mount_point)
                .then_some((mount_point.len(), fs_type))
        })
        .max()
        .map(|(_, t)| t.to_owned());
    if fs_type.as_deref() == Some("tmpfs") {
        eprintln!(
            "warning: {} is on tmpfs, where fsync is free; set TMPDIR to a directory on disk",
            dir.display()
        );
    }
}

/// The publish measurements: each starts from empty agency streams on the given server.
struct Publishing<'a> {
    agencies: &'a ScenarioAgencies,
    window: usize,
}

impl Publishing<'_> {
    /// Deletes and recreates the scenario's agency streams, so every measurement starts from the same
    /// state (an empty store and an empty duplicate window); returns a fresh connection.
    async fn fresh(&self, server: &NatsServer) -> anyhow::Result<async_nats::Client> {
        self.fresh_at(&server.url(), &StreamSpec::single_server()).await
    }

    /// [`Self::fresh`] on any server or cluster (`url`: seed URLs), the streams as `spec` says.
    async fn fresh_at(&self, url: &str, spec: &StreamSpec) -> anyhow::Result<async_nats::Client> {
        let client = halcyon_bus::connect(url, &Default::default(), "halcyon-bench")
            .await
            .context("connecting to the bench server")?;
        let js = jetstream::new(client.clone());
        let a = self.agencies;
        for agency in [&a.csc, &a.police, &a.school, &a.ed, &a.gp] {
            let name = StreamName::for_agency(agency);
            if js.get_stream(name.as_str()).await.is_ok() {
                js.delete_stream(name.as_str())
                    .await
                    .with_context(|| format!("deleting {}", name.as_str()))?;
            }
        }
        let agencies = [&a.csc, &a.police, &a.school, &a.ed, &a.gp];
        halcyon_bus::streams::apply(&js, spec, agencies).await?;
        Ok(client)
    }

    /// Halcyon's per-event publisher: validate, encode, `Nats-Msg-Id`, ack awaited, `window` in flight.
    async fn publisher(&self, server: &NatsServer, envelopes: &[pb::Envelope]) -> anyhow::Result<f64> {
        self.publisher_at(&server.url(), &StreamSpec::single_server(), envelopes)
            .await
    }

    /// [`Self::publisher`] on any server or cluster, the streams as `spec` says.
    async fn publisher_at(
        &self,
        url: &str,
        spec: &StreamSpec,
        envelopes: &[pb::Envelope],
    ) -> anyhow::Result<f64> {
        let client = self.fresh_at(url, spec).await?;
        let publisher = Publisher::new(
            client,
            PublisherConfig {
                window: self.window,
                ..Default::default()
            },
        );
        let input = envelopes.to_vec();
        let started = Instant::now();
        let mut results = std::pin::pin!(publisher.publish_all(input));
        let mut n = 0usize;
        while let Some(result) = results.next().await {
            result.context("publisher")?;
            n += 1;
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        eprintln!("  publisher: {} events/s", figure(rate));
        Ok(rate)
    }

    /// The bare async-nats loop: payloads encoded beforehand, `Nats-Msg-Id`, `window` acks outstanding.
    async fn raw(&self, server: &NatsServer, envelopes: &[pb::Envelope]) -> anyhow::Result<f64> {
        let client = self.fresh(server).await?;
        let js = jetstream::context::ContextBuilder::new()
            .max_ack_inflight(self.window)
            .backpressure_on_inflight(true)
            .build(client);
        let messages: Vec<(String, String, Vec<u8>)> = envelopes
            .iter()
            .map(|e| (Scenario::subject(e), e.event_id.clone(), e.encode_to_vec()))
            .collect();
        let started = Instant::now();
        let mut in_flight = std::collections::VecDeque::with_capacity(self.window);
        for (subject, id, payload) in messages {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(id);
            in_flight.push_back(js.send_publish(subject, message).await?);
            if in_flight.len() >= self.window
                && let Some(ack) = in_flight.pop_front()
            {
                ack.await?;
            }
        }
        for ack in in_flight {
            ack.await?;
        }
        let rate = envelopes.len() as f64 / started.elapsed().as_secs_f64();
        eprintln!("  raw publish loop: {} events/s", figure(rate));
        Ok(rate)
    }

    /// Halcyon's atomic batch publisher, `batch_len` events per batch, one batch at a time.
    async fn batches(
        &self,
        server: &NatsServer,
        envelopes: &[pb::Envelope],
        batch_len: usize,
    ) -> anyhow::Result<f64> {
        let client = self.fresh(server).await?;
        let publisher = BatchPublisher::new(
            client,
            BatchConfig {
                batch_len,
                ..Default::default()
            },
        );
        let input = envelopes.to_vec();
        let started = Instant::now();
        let mut outcomes = std::pin::pin!(publisher.publish_all(input));
        let mut n = 0usize;
        while let Some(outcome) = outcomes.next().await {
            let published = outcome.result.context("batch publisher")?;
            if published.iter().any(|p| p.duplicate) {
                bail!("the batch publisher met duplicates on fresh streams");
            }
            n += published.len();
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        eprintln!(
            "  batch publisher ({batch_len} per batch): {} events/s",
            figure(rate)
        );
        Ok(rate)
    }
}

/// Owned inputs for a realistic mix of policy requests, built before timing.
struct PolicyBench {
    policy: Policy,
    principals: Vec<Principal>,
    facts: Vec<Fact>,
    states: Vec<ChildState>,
    break_glass: Vec<BreakGlass>,
    /// (principal, fact, state, purpose, break-glass) indices.
    mix: Vec<(usize, usize, usize, Purpose, Option<usize>)>,
    /// The baseline's table: (recipient kind, category) → cell mode.
    table: std::collections::HashMap<(AgencyKind, Category), u8>,
}

/// Noon, 1 March 2026 UTC: the time of every benchmarked request.
const NOW_MS: i64 = 1_772_366_400_000;

impl PolicyBench {
    fn new(registry: &Registry) -> Self {
        let policy = Policy::england();
        let mut rng = SplitMix(0x5eed);
        let agencies: Vec<(AgencyId, AgencyKind)> = registry.iter().map(|a| (a.id.clone(), a.kind)).collect();
        // Every agency (every kind), mostly practitioners.
        let mut principals = Vec::new();
        for (agency, kind) in &agencies {
            for role in [
                Role::Practitioner,
                Role::Practitioner,
                Role::MashMember,
                Role::PrivacyOfficer,
            ] {
                principals.push(Principal {
                    agency: agency.clone(),
                    kind: *kind,
                    role,
                });
            }
        }
        // Every category, recorded by every agency; some approved, police intelligence with codes.
        let mut facts = Vec::new();
        for category in Category::all() {
            for (originator, _) in &agencies {
                let mut fact = Fact::new(category, originator.clone());
                fact.originator_approved = rng.chance(10);
                if category == Category::POLICE_INTELLIGENCE {
                    fact.handling_code = Some(["P", "C", "A", "E"][rng.below(4)].to_owned());
                }
                facts.push(fact);
            }
        }
        // Case states from a fresh contact to a plan, with involvements, consent and exemptions.
        let mut states = Vec::new();
        for _ in 0..256 {
            let stage = Stage {
                referral: rng.chance(85),
                s47_started: rng.chance(40),
                plan_active: rng.chance(30),
                plan_ended: rng.chance(10),
                looked_after: rng.chance(10),
                mash_referral: rng.chance(30),
            };
            let involvements = Involvement::ALL
                .iter()
                .copied()
                .filter(|_| rng.chance(35))
                .collect();
            let consented = Category::all().filter(|_| rng.chance(30)).collect();
            let exempted = Category::all().filter(|_| rng.chance(10)).collect();
            states.push(ChildState {
                stage,
                involvements,
                consented,
                exempted,
                in_area: false,
                referral_elsewhere: false,
                lead_authority: false,
            });
        }
        let break_glass = vec![
            BreakGlass {
                reason: "unconscious child in ED, no carer present".into(),
                started_at_ms: NOW_MS - 10 * 60_000,
            },
            BreakGlass {
                reason: "lapsed".into(),
                started_at_ms: NOW_MS - 48 * 3_600_000,
            },
        ];
        let purposes = [
            Purpose::Safeguarding,
            Purpose::Safeguarding,
            Purpose::Safeguarding,
            Purpose::DirectCare,
            Purpose::LawEnforcement,
            Purpose::StatutoryReview,
            Purpose::Audit,
        ];
        let mix = (0..16_384)
            .map(|_| {
                let glass = if rng.chance(3) { Some(rng.below(2)) } else { None };
                (
                    rng.below(principals.len()),
                    rng.below(facts.len()),
                    rng.below(states.len()),
                    purposes[rng.below(purposes.len())],
                    glass,
                )
            })
            .collect();
        let table = policy
            .cells()
            .map(|cell| ((cell.recipient(), cell.category()), cell.mode() as u8))
            .collect();
        Self {
            policy,
            principals,
            facts,
            states,
            break_glass,
            mix,
            table,
        }
    }

    fn requests(&self) -> Vec<Request<'_>> {
        self.mix
            .iter()
            .map(|&(p, f, s, purpose, glass)| Request {
                principal: &self.principals[p],
                purpose,
                fact: &self.facts[f],
                state: &self.states[s],
                break_glass: glass.map(|g| &self.break_glass[g]),
                now_ms: NOW_MS,
            })
            .collect()
    }

    /// `decide` over the mix, repeated until `budget` has passed.
    fn decide_rate(&self, budget: Duration) -> f64 {
        let requests = self.requests();
        let (mut n, mut permits) = (0usize, 0usize);
        let started = Instant::now();
        while started.elapsed() < budget {
            for request in &requests {
                let decision = decide(black_box(&self.policy), black_box(request));
                permits += usize::from(black_box(decision).is_permit());
            }
            n += requests.len();
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        black_box(permits);
        eprintln!(
            "  decide: {} decisions/s ({:.0}% permits)",
            figure(rate),
            100.0 * permits as f64 / n as f64
        );
        rate
    }

    /// The baseline: a `HashMap<(AgencyKind, Category), u8>` lookup over the same requests.
    fn lookup_rate(&self, budget: Duration) -> f64 {
        let requests = self.requests();
        let (mut n, mut sum) = (0usize, 0u64);
        let started = Instant::now();
        while started.elapsed() < budget {
            for request in &requests {
                let request = black_box(request);
                let key = (request.principal.kind, request.fact.category);
                sum += u64::from(black_box(self.table.get(&key)).copied().unwrap_or(0));
            }
            n += requests.len();
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        black_box(sum);
        eprintln!("  hashmap lookup: {} lookups/s", figure(rate));
        rate
    }
}

/// A tiny deterministic generator (SplitMix64), so the mix is the same in every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rows_carry_their_ratio_and_print_aligned() {
        let mut report = Report::default();
        report.row("a", 4_500.0, "events/s", "b", 5_000.0);
        report.row("longer.name", 62_000.0, "events/s", "b", 4_500.0);
        assert!((report.rows()[0].ratio - 0.9).abs() < 1e-9);
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[2].contains("4,500") && lines[2].ends_with("0.90"),
            "{table}"
        );
        assert!(
            lines[3].contains("62,000") && lines[3].ends_with("13.78"),
            "{table}"
        );
        let dir = tempfile_dir();
        let path = dir.join("report.json");
        report.write_json(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json[1]["baseline_value"], 4500.0);
        assert_eq!(json[0]["name"], "a");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("halcyon-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn figures_have_thousands_separators() {
        assert_eq!(figure(1_234_567.4), "1,234,567");
        assert_eq!(figure(999.0), "999");
        assert_eq!(figure(0.8123), "0.81");
    }
}
