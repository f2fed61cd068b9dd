//! `halcyon publish`: JSON lines (one envelope per line, proto3 JSON field names) or a generated scenario.
//! Bad lines are reported with their line number and reasons; the good ones are published; the exit code
//! is non-zero if any line failed.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use futures::StreamExt;
use halcyon_bus::{BatchConfig, BatchPublisher, Position, Published, Publisher, PublisherConfig, connect};
use halcyon_grpc::pb;
use halcyon_scenario::{Scenario, ScenarioAgencies, ScenarioConfig};
use halcyon_schema::validate_envelope;

use super::common::{NatsArgs, deploy_path, load_registry};
use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    /// The deployment's tolerance for future-dated events, checked against this machine's clock.
    #[command(flatten)]
    future: super::common::FutureToleranceArgs,
    /// JSON lines to publish (`-` for standard input).
    #[arg(long, conflicts_with = "scenario_children")]
    file: Option<PathBuf>,
    /// Generate and publish a scenario with this many children.
    #[arg(long)]
    scenario_children: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First event of the scenario (RFC 3339 or a date).
    #[arg(long)]
    scenario_start: Option<String>,
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    agencies: PathBuf,
    /// Publishes awaiting acknowledgement at once.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Events per atomic batch (one fsync for the batch, each event still deduplicated by its id); 1 sends
    /// each event on its own.
    #[arg(long, default_value_t = 500)]
    batch_len: usize,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

/// An event to publish and the input line it came from (0 for generated events).
struct Item {
    line: usize,
    envelope: pb::Envelope,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let (items, mut failed) = match (&args.file, args.scenario_children) {
        (Some(path), None) => read_lines(path)?,
        (None, Some(children)) => {
            let registry = load_registry(&args.agencies)?;
            let agencies =
                ScenarioAgencies::from_registry(&registry).map_err(|e| config_error(anyhow!(e)))?;
            let mut config = ScenarioConfig {
                seed: args.seed,
                children,
                ..Default::default()
            };
            if let Some(start) = &args.scenario_start {
                let ts =
                    halcyon_schema::convert::parse_timestamp(start).map_err(|e| config_error(anyhow!(e)))?;
                config.start_ms = halcyon_schema::convert::timestamp_millis(&ts);
            }
            let scenario = Scenario::generate(&config, &agencies);
            for (i, child) in scenario.children.iter().enumerate() {
                println!("child {}: NHS number {}", i + 1, child.nhs);
            }
            (
                scenario
                    .envelopes
                    .into_iter()
                    .map(|envelope| Item { line: 0, envelope })
                    .collect(),
                0,
            )
        }
        _ => {
            return Err(config_error(anyhow!(
                "say what to publish: --file FILE or --scenario-children N"
            )));
        }
    };
    // With --credentials, each agency's events go out as that agency (its password from the file).
    let passwords: Option<BTreeMap<String, String>> = args.nats.passwords()?;

    let mut by_agency: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for item in items {
        by_agency
            .entry(item.envelope.agency_id.clone())
            .or_default()
            .push(item);
    }
    let total: usize = by_agency.values().map(Vec::len).sum();
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .expect("template"),
    );
    let started = std::time::Instant::now();
    let (mut published, mut duplicates) = (0usize, 0usize);
    let mut last: BTreeMap<String, Position> = BTreeMap::new();
    for (agency, items) in by_agency {
        let credentials = match &passwords {
            Some(p) => args.nats.agency_credentials(
                &agency,
                p.get(&agency).ok_or_else(|| {
                    config_error(anyhow!("no password for agency {agency} in --credentials"))
                })?,
            )?,
            None => args.nats.credentials()?,
        };
        let client = connect(
            &args.nats.nats_url,
            &credentials,
            &format!("halcyon publish ({agency})"),
        )
        .await?;
        let speaks_for = passwords.as_ref().and_then(|_| agency.parse().ok());
        let lines: Vec<usize> = items.iter().map(|i| i.line).collect();
        let envelopes = items.into_iter().map(|i| i.envelope);
        // Each result, with the index of its event in this agency's list.
        let mut report = |index: usize, result: Result<Published, String>| {
            match result {
                Ok(p) => {
                    published += 1;
                    duplicates += usize::from(p.duplicate);
                    last.insert(p.position.stream.clone(), p.position);
                }
                Err(e) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("{}: {e}", where_(lines[index])));
                }
            }
            bar.inc(1);
        };
        if args.batch_len > 1 {
            let config = BatchConfig {
                batch_len: args.batch_len,
                window: args.window,
                agency: speaks_for,
                future_tolerance_ms: args.future.ms(),
                ..Default::default()
            };
            let publisher = BatchPublisher::new(client.clone(), config);
            let mut outcomes = std::pin::pin!(publisher.publish_all(envelopes));
            while let Some(outcome) = outcomes.next().await {
                match outcome.result {
                    Ok(published) => {
                        for (index, p) in outcome.indices.into_iter().zip(published) {
                            report(index, Ok(p));
                        }
                    }
                    Err(e) => {
                        for index in outcome.indices {
                            report(index, Err(e.to_string()));
                        }
                    }
                }
            }
        } else {
            let config = PublisherConfig {
                window: args.window,
                agency: speaks_for,
                future_tolerance_ms: args.future.ms(),
                ..Default::default()
            };
            let publisher = Publisher::new(client.clone(), config);
            let mut results = std::pin::pin!(publisher.publish_all(envelopes));
            let mut index = 0;
            while let Some(result) = results.next().await {
                report(index, result.map_err(|e| e.to_string()));
                index += 1;
            }
        }
        client.flush().await.ok();
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published {published} events ({duplicates} already stored) in {secs:.1} s ({:.0}/s); {failed} failed",
        published as f64 / secs.max(1e-9)
    );
    for position in last.values() {
        println!("position {position}");
    }
    if failed > 0 {
        return Err(Failure {
            code: 1,
            error: anyhow!("{failed} event(s) were not published"),
        });
    }
    Ok(())
}

fn where_(line: usize) -> String {
    if line == 0 {
        "generated event".into()
    } else {
        format!("line {line}")
    }
}

/// Reads JSON lines; reports undecodable and invalid lines and returns the rest.
fn read_lines(path: &PathBuf) -> Result<(Vec<Item>, usize), Failure> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))
                .map_err(config_error)?,
        ))
    };
    let (mut items, mut failed) = (Vec::new(), 0);
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading line {n}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<pb::Envelope>(&line) {
            Err(e) => {
                failed += 1;
                eprintln!("line {n}: not an envelope in JSON: {e}");
            }
            Ok(envelope) => match validate_envelope(envelope.clone()) {
                Err(problems) => {
                    failed += 1;
                    let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    eprintln!("line {n}: invalid event: {}", reasons.join("; "));
                }
                Ok(_) => items.push(Item { line: n, envelope }),
            },
        }
    }
    Ok((items, failed))
}
