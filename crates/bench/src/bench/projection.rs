//! Projection and rebuild rows: what a node does with the agency streams (`project_streams` into fresh sled
//! read models with the views derived), beside a bare JetStream ordered-consumer read of the same streams
//! and a bare sled `apply_batch` of rows of the same sizes; and a rebuild of at least a million events with
//! its peak memory and its size on disk.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::{list_event_streams, ordered_messages};
use halcyon_grpc::pb;
use halcyon_policy::Policy;
use halcyon_projector::{Projector, ViewSpec};
use halcyon_review::rebuild::{Until, project_streams};
use halcyon_schema::Registry;
use halcyon_testkit::{Auth, NatsServer, Scenario, ScenarioAgencies, ScenarioConfig};
use prost::Message as _;

use super::{Publishing, Report, figure, median, scenario_envelopes};

/// Rows per sled batch, as the projector applies them (one batch per ready chunk of up to 1,000).
const SLED_BATCH_LEN: usize = 1000;
/// Children generated at once while filling the rebuild streams (about 24 events each), so a million
/// events never sit in memory together.
const REBUILD_CHUNK_CHILDREN: usize = 2_000;

pub(super) struct Projection<'a> {
    pub agencies: &'a ScenarioAgencies,
    pub registry: &'a Registry,
    pub window: usize,
    pub rounds: usize,
}

impl Projection<'_> {
    /// Projection events/s beside the bare ordered read and the bare sled batch insert, `n_events` events.
    pub async fn rows(&self, report: &mut Report, n_events: usize) -> anyhow::Result<()> {
        let server = NatsServer::start_with(Auth::Open, false);
        let publish = Publishing {
            agencies: self.agencies,
            window: self.window,
        };
        let client = publish.fresh(&server).await?;
        eprintln!(
            "  (projection: project_streams into fresh read models, views and deadlines derived, flushed; it \
             writes one sled row per event (the fact: the payload as published) and, per batch of up to \
             {SLED_BATCH_LEN}, a list of the children to derive and the checkpoint. sled baseline: one row \
             per event of the same value sizes under 40-byte keys, apply_batch of {SLED_BATCH_LEN}, flushed. \
             Both with sled::Config's defaults.)"
        );
        let envelopes = scenario_envelopes(self.agencies, n_events);
        let sizes: Vec<usize> = envelopes.iter().map(|e| e.encoded_len()).collect();
        fill(&client, &envelopes, self.window).await?;
        drop(envelopes);
        let js = jetstream::new(client);
        let (mut projected, mut read, mut inserted) = (vec![], vec![], vec![]);
        for _ in 0..self.rounds {
            let (n, secs) = self.project(&js).await?;
            check_count("projection", n, n_events)?;
            projected.push(n as f64 / secs);
            eprintln!("  projection: {} events/s", figure(n as f64 / secs));
            let (n, secs) = ordered_read(&js).await?;
            check_count("ordered read", n, n_events)?;
            read.push(n as f64 / secs);
            eprintln!("  ordered read: {} msg/s", figure(n as f64 / secs));
            let rate = sled_batches(&sizes)?;
            inserted.push(rate);
            eprintln!("  sled apply_batch: {} rows/s", figure(rate));
        }
        let (projected, read, inserted) = (median(projected), median(read), median(inserted));
        let n = figure(n_events as f64);
        let read_name = format!("js_ordered_read.{n}");
        let sled_name = format!("sled_apply_batch_1000.{n}");
        let (slower, faster) = if read <= inserted {
            ((read_name, read), (sled_name, inserted))
        } else {
            ((sled_name, inserted), (read_name, read))
        };
        let name = format!("projection.streams_to_sled.{n}");
        report.row(&name, projected, "events/s", &slower.0, slower.1);
        report.row(&name, projected, "events/s", &faster.0, faster.1);
        Ok(())
    }

    /// A rebuild of `n_events` events generated and published in chunks: rate beside the bare ordered
    /// read of the same streams, peak memory growth, and sled's size beside the streams' bytes.
    pub async fn rebuild_rows(&self, report: &mut Report, n_events: usize) -> anyhow::Result<()> {
        let server = NatsServer::start_with(Auth::Open, false);
        let publish = Publishing {
            agencies: self.agencies,
            window: self.window,
        };
        let client = publish.fresh(&server).await?;
        publish_scenario_chunks(&client, self.agencies, self.window, n_events, 1_000).await?;
        let js = jetstream::new(client);
        let mut stream_bytes = 0u64;
        for name in list_event_streams(&js).await? {
            let mut stream = js.get_stream(&name).await?;
            stream_bytes += stream.info().await?.state.bytes;
        }

        let (n_read, read_secs) = ordered_read(&js).await?;
        check_count("ordered read", n_read, n_events)?;
        eprintln!("  ordered read: {} msg/s", figure(n_read as f64 / read_secs));

        let peak_reset = reset_peak_rss();
        let rss_before = proc_status_kb("VmRSS")?;
        let dir = tempfile::tempdir().context("a temp dir for the rebuild")?;
        let projector = Arc::new(Projector::open(dir.path())?.with_views(self.views()));
        let started = Instant::now();
        let n = project_streams(&js, &projector, &Until::End, &|_, _| {}).await?;
        projector.flush()?;
        let secs = started.elapsed().as_secs_f64();
        let peak = proc_status_kb("VmHWM")?;
        check_count("rebuild", n as usize, n_events)?;
        let size = projector.size_on_disk()?;
        print_bytes_by_prefix(&projector)?;
        drop(projector);
        eprintln!(
            "  rebuild: {} events in {secs:.1} s ({} events/s)",
            figure(n as f64),
            figure(n as f64 / secs)
        );

        let n = figure(n_events as f64);
        report.row(
            &format!("rebuild.{n}"),
            n_events as f64 / secs,
            "events/s",
            &format!("js_ordered_read.{n}"),
            n_read as f64 / read_secs,
        );
        let mb = |kb: u64| kb as f64 / 1024.0;
        let peak_name = if peak_reset {
            format!("rebuild.{n}.peak_rss_growth(VmHWM after - VmRSS before)")
        } else {
            format!("rebuild.{n}.rss_growth(VmHWM of the whole run - VmRSS before)")
        };
        report.row(
            &peak_name,
            mb(peak.saturating_sub(rss_before)),
            "MiB",
            "VmRSS_before_rebuild",
            mb(rss_before),
        );
        report.row(
            &format!("rebuild.{n}.sled_size_on_disk"),
            size as f64 / 1e6,
            "MB",
            "stream_bytes(state.bytes)",
            stream_bytes as f64 / 1e6,
        );
        Ok(())
    }

    fn views(&self) -> ViewSpec {
        ViewSpec::new(Arc::new(Policy::england()), self.registry)
    }

    /// One node's projection of every stream into fresh read models, flushed; (events, seconds).
    async fn project(&self, js: &jetstream::Context) -> anyhow::Result<(usize, f64)> {
        let dir = tempfile::tempdir().context("a temp dir for the read models")?;
        let projector = Arc::new(Projector::open(dir.path())?.with_views(self.views()));
        let started = Instant::now();
        let n = project_streams(js, &projector, &Until::End, &|_, _| {}).await?;
        projector.flush()?;
        Ok((n as usize, started.elapsed().as_secs_f64()))
    }
}

/// Prints where the read models' bytes go, one line per key prefix (`Projector::bytes_by_prefix`).
pub(super) fn print_bytes_by_prefix(projector: &Projector) -> anyhow::Result<()> {
    for (what, records, bytes) in projector.bytes_by_prefix()? {
        eprintln!(
            "    {what:<22} {:>12} records {:>10.1} MB ({:.0} B each)",
            figure(records as f64),
            bytes as f64 / 1e6,
            bytes as f64 / records.max(1) as f64
        );
    }
    Ok(())
}

/// Generates and publishes `n_events` scenario events, `REBUILD_CHUNK_CHILDREN` children at a time (seeds
/// from `seed`), so millions of events never sit in memory at once.
pub(super) async fn publish_scenario_chunks(
    client: &async_nats::Client,
    agencies: &ScenarioAgencies,
    window: usize,
    n_events: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut published = 0usize;
    for chunk in 0.. {
        if published >= n_events {
            break;
        }
        let config = ScenarioConfig {
            seed: seed + chunk as u64,
            children: REBUILD_CHUNK_CHILDREN,
            ..Default::default()
        };
        let mut envelopes = Scenario::generate(&config, agencies).envelopes;
        envelopes.truncate(n_events - published);
        fill(client, &envelopes, window).await?;
        published += envelopes.len();
    }
    eprintln!(
        "  generated and published {} events in {:.1} s",
        figure(published as f64),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check_count(what: &str, got: usize, wanted: usize) -> anyhow::Result<()> {
    if got != wanted {
        bail!("{what} saw {got} events, expected {wanted}");
    }
    Ok(())
}

/// Fills the agency streams: encoded envelopes, no `Nats-Msg-Id`, `window` acknowledgements outstanding.
pub(super) async fn fill(
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
        let ack = js
            .publish(Scenario::subject(e), e.encode_to_vec().into())
            .await
            .context("publishing to fill the streams")?;
        in_flight.push_back(ack);
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

/// The baseline read: every agency stream through an ordered consumer, counting messages; (messages,
/// seconds).
pub(super) async fn ordered_read(js: &jetstream::Context) -> anyhow::Result<(usize, f64)> {
    let mut ends = Vec::new();
    for name in list_event_streams(js).await? {
        let last = js.get_stream(&name).await?.info().await?.state.last_sequence;
        ends.push((name, last));
    }
    let started = Instant::now();
    let mut n = 0usize;
    for (name, last) in ends {
        if last == 0 {
            continue;
        }
        let mut messages = std::pin::pin!(ordered_messages(js, &name, 1).await?);
        while let Some(m) = messages.next().await {
            n += 1;
            if m?.sequence >= last {
                break;
            }
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

/// The baseline write: rows of the given value sizes under 40-byte keys, `apply_batch` of 1,000 into a
/// fresh sled in a temp dir, then a flush; rows/s.
fn sled_batches(sizes: &[usize]) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir().context("a temp dir for sled")?;
    let db = sled::open(dir.path())?;
    let values: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| (i + j) as u8).collect())
        .collect();
    let started = Instant::now();
    for (c, chunk) in values.chunks(SLED_BATCH_LEN).enumerate() {
        let mut batch = sled::Batch::default();
        for (i, value) in chunk.iter().enumerate() {
            let row = c * SLED_BATCH_LEN + i;
            // Spread like the projector's child-first keys: a child prefix, then time and sequence.
            let key = format!(
                "f/{:016x}/{:020}",
                (row as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                row
            );
            batch.insert(key.as_bytes(), value.as_slice());
        }
        db.apply_batch(batch)?;
    }
    db.flush()?;
    Ok(sizes.len() as f64 / started.elapsed().as_secs_f64())
}

/// Resets the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0); false if it could not.
pub(super) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` field of /proc/self/status.
pub(super) fn proc_status_kb(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/self/status"))
}
