//! Replay rows: `halcyon replay` of at least a million events as JSON lines (every agency stream, merged by
//! stored time, each envelope decoded and written in proto3 JSON to a counting sink), beside the bare
//! ordered-consumer read of the same streams in the same run.

use std::io::Write;
use std::time::Instant;

use async_nats::jetstream;
use halcyon_bus::list_event_streams;
use halcyon_testkit::{Auth, NatsServer, ScenarioAgencies};

use super::projection::{ordered_read, publish_scenario_chunks};
use super::{Publishing, Report, figure, median};
use halcyon_cli::cmd::replay::{Format, Selection, replay};

pub(super) struct ReplayBench<'a> {
    pub agencies: &'a ScenarioAgencies,
    pub window: usize,
    pub rounds: usize,
}

/// Counts what is written and keeps none of it.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
    lines: u64,
}

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ReplayBench<'_> {
    pub async fn rows(&self, report: &mut Report, n_events: usize) -> anyhow::Result<()> {
        let server = NatsServer::start_with(Auth::Open, false);
        let publish = Publishing {
            agencies: self.agencies,
            window: self.window,
        };
        let client = publish.fresh(&server).await?;
        publish_scenario_chunks(&client, self.agencies, self.window, n_events, 7_000).await?;
        let js = jetstream::new(client);
        let selection = Selection {
            streams: list_event_streams(&js).await?,
            ..Default::default()
        };
        let (mut replayed, mut read) = (vec![], vec![]);
        for _ in 0..self.rounds {
            let (n, secs) = ordered_read(&js).await?;
            anyhow::ensure!(n == n_events, "ordered read saw {n} events, expected {n_events}");
            read.push(n as f64 / secs);
            eprintln!("  ordered read: {} msg/s", figure(n as f64 / secs));

            let mut sink = CountingSink::default();
            let started = Instant::now();
            let summary = replay(&js, &selection, Format::Json, &mut sink, &|_, _| {}).await?;
            let secs = started.elapsed().as_secs_f64();
            anyhow::ensure!(
                summary.written == n_events as u64 && sink.lines == n_events as u64,
                "replay wrote {} lines, expected {n_events}",
                sink.lines
            );
            replayed.push(n_events as f64 / secs);
            eprintln!(
                "  replay as JSON lines: {} events/s ({:.0} MB/s of JSON)",
                figure(n_events as f64 / secs),
                sink.bytes as f64 / 1e6 / secs
            );
        }
        let n = figure(n_events as f64);
        report.row(
            &format!("replay.json_lines.{n}"),
            median(replayed),
            "events/s",
            &format!("js_ordered_read.{n}"),
            median(read),
        );
        Ok(())
    }
}
