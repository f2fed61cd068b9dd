//! `halcyon quarantine reapply`: re-check a stopped node's quarantined events with what this build and the
//! deployment's acceptance know now, and project those that pass, each at its own place in its stream,
//! without a rebuild (docs/contract.md, "Schema evolution"; docs/operations.md).
//!
//! Each quarantined message is read again from its stream by sequence (the bytes exactly as published),
//! checked as a node checks it, and either projected (its quarantine record removed, its child's views
//! derived) or left in quarantine with today's reasons. The operator and reason are recorded in the access
//! log before the read models are touched, and the command fails closed if that record cannot be written.
//! Idempotent: what was projected has no quarantine record left, so a second run finds nothing to do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use halcyon_projector::{Incoming, Projector, Reapplied};
use halcyon_review::rebuild::read_models_dir;

use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's data folder (the node must be stopped: sled allows one process per folder).
    #[arg(long, env = "HALCYON_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Where the streams and the access log are, as the operator.
    #[command(flatten)]
    nats: crate::cmd::replay::OperatorNats,
    /// Who does this and why (recorded in the access log first).
    #[command(flatten)]
    read: crate::cmd::operator_read::OperatorRead,
    /// The node's agencies, policy, timescales and signal rules: the views, deadlines and signals of the
    /// children concerned are derived as the node derives them.
    #[command(flatten)]
    models: super::rebuild::NodeModelArgs,
    /// What the node accepts (future-dated tolerance, newest schema version): the deployment's values.
    #[command(flatten)]
    future: super::common::FutureToleranceArgs,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let dir = read_models_dir(&args.data_dir).map_err(|e| config_error(anyhow!("{e}")))?;
    if !dir.exists() {
        return Err(config_error(anyhow!("no read models at {}", dir.display())));
    }
    let models = super::rebuild::NodeModels::load(&args.models)?;
    let schema_version_max = args.future.schema_version_max()?;
    let projector = match Projector::open(&dir) {
        Ok(p) => p,
        Err(e) => {
            return Err(anyhow!(
                "{e} (is a node still running on {}? stop it first)",
                dir.display()
            )
            .into());
        }
    };
    let projector = Arc::new(
        models.on(projector
            .with_future_tolerance_ms(args.future.ms())
            .with_schema_version_max(schema_version_max)),
    );
    let js = args.nats.jetstream("halcyon quarantine reapply").await?;
    let quarantined = projector.quarantine(None)?;
    args.read
        .record(
            &js,
            "halcyon quarantine reapply",
            halcyon_policy::Purpose::Audit,
            None,
        )
        .await?;
    let mut by_stream: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for q in &quarantined {
        by_stream.entry(q.stream.clone()).or_default().push(q.sequence);
    }
    let (mut projected, mut duplicates, mut refused) = (0usize, 0usize, 0usize);
    for (stream, sequences) in by_stream {
        let handle = js
            .get_stream(&stream)
            .await
            .with_context(|| format!("stream {stream}"))?;
        let mut messages = Vec::with_capacity(sequences.len());
        for sequence in sequences {
            let m = handle
                .get_raw_message(sequence)
                .await
                .with_context(|| format!("{stream}:{sequence} cannot be read from its stream"))?;
            messages.push(Incoming {
                sequence,
                subject: m.subject.to_string(),
                payload: m.payload,
                stored_at_ms: i64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
            });
        }
        let applying = projector.clone();
        let name = stream.clone();
        let results = tokio::task::spawn_blocking(move || applying.reapply(&name, &messages))
            .await
            .map_err(|e| anyhow!("{e}"))??;
        for (sequence, result) in results {
            match result {
                Reapplied::Projected => {
                    projected += 1;
                    println!("{stream}:{sequence}  projected");
                }
                Reapplied::Duplicate => {
                    duplicates += 1;
                    println!("{stream}:{sequence}  a duplicate of an event already projected");
                }
                Reapplied::StillRefused(problems) => {
                    refused += 1;
                    println!("{stream}:{sequence}  still quarantined");
                    for p in problems {
                        println!("    - {p}");
                    }
                }
                Reapplied::NotQuarantined => {}
            }
        }
    }
    let deriving = projector.clone();
    tokio::task::spawn_blocking(move || {
        deriving.derive_all_views()?;
        deriving.flush()
    })
    .await
    .map_err(|e| anyhow!("{e}"))??;
    println!(
        "{} quarantined event(s) re-checked: {projected} projected, {duplicates} duplicate(s), {refused} still quarantined",
        quarantined.len()
    );
    Ok(())
}
