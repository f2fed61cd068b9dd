//! The soak row: a `halcyon serve` process of its own under sustained mixed load — a steady stream of new
//! events published while 16 callers ask `FindChild` without pause — with the node's resident memory read
//! from `/proc` at the start, the middle and the end. Every cache the node keeps is bounded (sled's page
//! cache by `--sled-cache-mb`, decoded facts and decided views by count), so its memory must level off:
//! the end within 25% of the middle. The baseline of each figure is the one before it, from the same run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use halcyon_grpc::pb::{self, query_service_client::QueryServiceClient};
use halcyon_testkit::{Auth, NatsServer, Scenario, ScenarioAgencies, ScenarioConfig, workspace_root};
use prost::Message as _;

use super::{Report, figure};

pub(super) struct Soak<'a> {
    pub agencies: &'a ScenarioAgencies,
    /// How long the mixed load runs.
    pub duration: Duration,
    /// New events published per second meanwhile.
    pub rate: usize,
}

/// The node's resident set, MiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Soak<'_> {
    pub async fn rows(&self, report: &mut Report) -> anyhow::Result<()> {
        let nats = NatsServer::start_with(Auth::Open, true);
        let data = tempfile::tempdir().context("a temp dir for the node")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
        halcyon_bus::streams::apply(
            &js,
            &halcyon_bus::StreamSpec::single_server(),
            super::load_registry()?.iter().map(|a| &a.id),
        )
        .await?;
        let node = Serving(
            Command::new(halcyon_binary()?)
                .args([
                    "serve",
                    "--streams-spec",
                    "deploy/streams-local.toml",
                    "--nats-url",
                    &nats.url(),
                    "--nats-monitor-url",
                    &nats.monitor_url(),
                ])
                .args(["--data-dir", data.path().to_str().context("a UTF-8 temp dir")?])
                .args(["--listen", &format!("127.0.0.1:{port}"), "--node-id", "soak"])
                .current_dir(workspace_root())
                .env("HALCYON_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(data.path().join("node.log"))?)
                .spawn()
                .context("starting halcyon serve")?,
        );
        let pid = node.0.id();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the soak node did not start listening");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Enough children for the whole run, published in order: a warm-up share first, then `rate` a second.
        let secs = self.duration.as_secs().max(1) as usize;
        let per_child = 24;
        let scenario = Scenario::generate(
            &ScenarioConfig {
                seed: 11,
                children: (self.rate * secs) / per_child + 500,
                ..Default::default()
            },
            self.agencies,
        );
        let client = async_nats::connect(nats.url()).await?;
        let warm = scenario.envelopes.len().min(500 * per_child);
        super::query::publish(&client, &scenario.envelopes[..warm], 1024).await?;
        // Wait, bounded, for the node to have projected the warm-up, then ask only for the children the
        // caller (police) may learn something of.
        let js = async_nats::jetstream::new(client);
        let mut ends = Vec::new();
        for name in halcyon_bus::list_event_streams(&js).await? {
            let last = js.get_stream(&name).await?.info().await?.state.last_sequence;
            ends.push(pb::Position {
                stream: name,
                sequence: last,
            });
        }
        let mut query = QueryServiceClient::connect(url.clone()).await?;
        let waited = Instant::now();
        loop {
            let mut request = tonic::Request::new(pb::GetPositionsRequest {});
            request
                .metadata_mut()
                .insert("authorization", "Bearer demo-operator".parse().expect("ascii"));
            let have = query.get_positions(request).await?.into_inner().positions;
            // A stream with nothing in it has no position yet.
            let reached = ends.iter().all(|e| {
                e.sequence == 0
                    || have
                        .iter()
                        .any(|p| p.stream == e.stream && p.sequence >= e.sequence)
            });
            if reached {
                break;
            }
            if waited.elapsed() > Duration::from_secs(120) {
                let log = std::fs::read_to_string(data.path().join("node.log")).unwrap_or_default();
                bail!(
                    "the soak node did not project the warm-up in 120 s (wanted {ends:?}, has {have:?}); its log:\n{}",
                    log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let warm_children: Vec<String> = scenario.children[..500.min(scenario.children.len())]
            .iter()
            .map(|c| c.nhs.to_string())
            .collect();
        let nhs: Arc<Vec<String>> = Arc::new(super::query::answered(&url, &warm_children).await?);
        if nhs.is_empty() {
            bail!("the soak caller may see none of the warm-up's children");
        }

        // The publisher: `rate` events a second, in tenths.
        let rest: Vec<Vec<u8>> = scenario.envelopes[warm..]
            .iter()
            .map(|e| e.encode_to_vec())
            .collect();
        let subjects: Vec<String> = scenario.envelopes[warm..].iter().map(Scenario::subject).collect();
        let (rate, duration) = (self.rate, self.duration);
        let publisher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let per_tick = (rate / 10).max(1);
            let mut next = 0;
            let until = Instant::now() + duration;
            let mut published = 0usize;
            while Instant::now() < until && next < rest.len() {
                tick.tick().await;
                let end = (next + per_tick).min(rest.len());
                let mut acks = Vec::with_capacity(end - next);
                for i in next..end {
                    acks.push(js.publish(subjects[i].clone(), rest[i].clone().into()).await?);
                }
                for ack in acks {
                    ack.await?;
                }
                published += end - next;
                next = end;
            }
            anyhow::Ok(published)
        });

        // The callers, in ten-second stretches, with the node's memory read between them.
        let mut samples: Vec<(f64, f64)> = vec![(0.0, rss_mib(pid)?)];
        let load_started = Instant::now();
        let mut answered = 0.0;
        while load_started.elapsed() < self.duration {
            let stretch = Duration::from_secs(10).min(self.duration - load_started.elapsed());
            let load = super::query::load(&url, 16, stretch, nhs.clone()).await?;
            answered += load.rate * stretch.as_secs_f64();
            samples.push((load_started.elapsed().as_secs_f64(), rss_mib(pid)?));
        }
        let published = publisher.await??;
        let at = |fraction: f64| {
            let t = self.duration.as_secs_f64() * fraction;
            samples
                .iter()
                .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
                .map(|s| s.1)
                .unwrap_or_default()
        };
        // "Start" is after the first stretch: the node has warmed its caches on the first calls.
        let (start, middle, end) = (samples.get(1).map_or(0.0, |s| s.1), at(0.5), at(1.0));
        let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
        eprintln!(
            "  soak {} s: {} events published meanwhile, {} FindChild answered (16 callers); node RSS MiB: \
             idle {:.0}, start {start:.0}, middle {middle:.0}, end {end:.0}, peak {peak:.0}",
            self.duration.as_secs(),
            figure(published as f64),
            figure(answered),
            samples[0].1,
        );
        eprintln!(
            "  RSS over time (s, MiB): {}",
            samples
                .iter()
                .map(|(t, m)| format!("{t:.0}:{m:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        report.row("soak.rss.middle", middle, "MiB", "soak.rss.start", start);
        report.row("soak.rss.end", end, "MiB", "soak.rss.middle", middle);
        drop(node);
        Ok(())
    }
}

/// The `halcyon` binary built beside this one (`cargo build --release -p halcyon-cli -p halcyon-bench`).
fn halcyon_binary() -> anyhow::Result<std::path::PathBuf> {
    let beside = std::env::current_exe()?.with_file_name("halcyon");
    anyhow::ensure!(
        beside.exists(),
        "the soak runs the node as its own process: build it beside this binary first \
         (cargo build --release -p halcyon-cli), expected at {}",
        beside.display()
    );
    Ok(beside)
}
