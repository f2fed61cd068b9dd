//! Halcyon on a three-server JetStream cluster (R3 streams, every server syncing each write) beside one
//! server, measured in the same run, interleaved round by round: durable ingest with the per-event
//! publisher, and child-view queries (FindChild through the audit gate) at 16 and 64 concurrent calls.

use std::time::Duration;

use anyhow::Context as _;
use halcyon_bus::StreamSpec;
use halcyon_grpc::pb;
use halcyon_testkit::{Auth, ClusterOptions, NatsCluster, NatsServer};

use super::query::{Load, Queries, load};
use super::{Publishing, Report, figure, median};

/// The concurrency levels measured.
const CONCURRENCY: [usize; 2] = [16, 64];

/// Messages in the AUDIT stream: one per write of the audit writer.
async fn writes(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    Ok(halcyon_bus::streams::stream_info(js, "AUDIT")
        .await?
        .context("the AUDIT stream")?
        .state
        .messages)
}

pub(super) struct ClusterBench<'a> {
    pub publishing: &'a Publishing<'a>,
    pub queries: &'a Queries<'a>,
    pub durable: &'a [pb::Envelope],
    pub rounds: usize,
}

impl ClusterBench<'_> {
    pub async fn rows(&self, report: &mut Report) -> anyhow::Result<()> {
        let single = NatsServer::start_with(Auth::Open, true);
        let cluster = NatsCluster::start_with(ClusterOptions::default());
        let (one, three) = (StreamSpec::single_server(), StreamSpec::replicated(3));

        let (mut ingest_one, mut ingest_three) = (vec![], vec![]);
        for _ in 0..self.rounds {
            ingest_one.push(
                self.publishing
                    .publisher_at(&single.url(), &one, self.durable)
                    .await?,
            );
            ingest_three.push(
                self.publishing
                    .publisher_at(&cluster.seed_urls(), &three, self.durable)
                    .await?,
            );
        }
        report.row(
            "publisher.sync_always.r3_cluster",
            median(ingest_three),
            "events/s",
            "publisher.sync_always.one_server",
            median(ingest_one),
        );

        // Fresh servers for the queries: the ingest runs above left their streams full.
        drop((single, cluster));
        let single = NatsServer::start_with(Auth::Open, true);
        let cluster = NatsCluster::start_with(ClusterOptions::default());
        let (d1, d3) = (
            tempfile::tempdir().context("a temp dir")?,
            tempfile::tempdir().context("a temp dir")?,
        );
        let node_one = self
            .queries
            .loaded_node(&single.url(), vec![single.monitor_url()], one, d1.path())
            .await?;
        let node_three = self
            .queries
            .loaded_node(&cluster.seed_urls(), cluster.monitor_urls(), three, d3.path())
            .await?;
        let (url_one, url_three) = (
            format!("http://{}", node_one.node.addr),
            format!("http://{}", node_three.node.addr),
        );
        let mut runs: Vec<(Vec<Load>, Vec<Load>)> = CONCURRENCY.iter().map(|_| (vec![], vec![])).collect();
        for _ in 0..self.rounds {
            for (i, &c) in CONCURRENCY.iter().enumerate() {
                let (w3, w1) = (writes(&node_three.js).await?, writes(&node_one.js).await?);
                let on_three = load(&url_three, c, self.queries.load, node_three.nhs.clone()).await?;
                let w3 = writes(&node_three.js).await? - w3;
                let on_one = load(&url_one, c, self.queries.load, node_one.nhs.clone()).await?;
                let w1 = writes(&node_one.js).await? - w1;
                let per_write = |l: &Load, w: u64| l.rate * self.queries.load.as_secs_f64() / w.max(1) as f64;
                eprintln!(
                    "  c{c}: R3 cluster {} req/s (p50 {:.0} µs, {:.1} records per AUDIT write); one server {} req/s (p50 {:.0} µs, {:.1} per write)",
                    figure(on_three.rate),
                    on_three.p50_us,
                    per_write(&on_three, w3),
                    figure(on_one.rate),
                    on_one.p50_us,
                    per_write(&on_one, w1),
                );
                runs[i].0.push(on_three);
                runs[i].1.push(on_one);
            }
        }
        node_one.node.stop(Duration::from_secs(5)).await;
        node_three.node.stop(Duration::from_secs(5)).await;
        let pick = |loads: &[Load], f: fn(&Load) -> f64| median(loads.iter().map(f).collect());
        for (&c, (three, one)) in CONCURRENCY.iter().zip(&runs) {
            report.row(
                &format!("query.find_child.c{c}.r3_cluster"),
                pick(three, |l| l.rate),
                "req/s",
                &format!("query.find_child.c{c}.one_server"),
                pick(one, |l| l.rate),
            );
        }
        for (&c, (three, one)) in CONCURRENCY.iter().zip(&runs) {
            report.row(
                &format!("query.find_child.c{c}.r3_cluster.p50"),
                pick(three, |l| l.p50_us),
                "µs",
                &format!("query.find_child.c{c}.one_server.p50"),
                pick(one, |l| l.p50_us),
            );
        }
        Ok(())
    }
}
