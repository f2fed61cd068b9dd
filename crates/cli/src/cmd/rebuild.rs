//! `halcyon rebuild` (project the streams into a fresh folder, then swap it in) and `halcyon export` (a
//! deterministic dump of a node's read models, for comparing nodes, rebuilds and crashes). Both need the
//! node stopped: sled allows one process per folder.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use halcyon_policy::Policy;
use halcyon_projector::{Projector, ViewSpec};
use halcyon_review::rebuild::{Until, project_streams, read_models_dir, swap_in};

use super::common::{NatsArgs, deploy_path, load_registry};
use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The node's data folder (the node must be stopped).
    #[arg(long, env = "HALCYON_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// The node's agencies, policy, timescales and signal rules: a rebuild must derive with the same.
    #[command(flatten)]
    models: NodeModelArgs,
    /// Stop at messages stored after this time (RFC 3339 or a date): read models as of then.
    #[arg(long)]
    as_of: Option<String>,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
    /// The node's tolerance for future-dated events: a rebuild must quarantine the same ones.
    #[command(flatten)]
    future: super::common::FutureToleranceArgs,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long, env = "HALCYON_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Where the access log is: the export is recorded there before anything is written.
    #[command(flatten)]
    nats: crate::cmd::replay::OperatorNats,
    /// Who reads and why (recorded in the access log first).
    #[command(flatten)]
    read: crate::cmd::operator_read::OperatorRead,
    /// The node's agencies, policy, timescales and signal rules: views, deadlines and signals a stopped node
    /// left underived are derived before dumping, as the node would.
    #[command(flatten)]
    models: NodeModelArgs,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Record the breaches due before this moment (RFC 3339 or a date) rather than now, so two exports taken
    /// at different times (a node's and a rebuild's) compare at the same evaluation moment. Breaches a node
    /// already recorded stay: give a moment at or after the node last ran.
    #[arg(long)]
    deadlines_at: Option<String>,
}

/// Where the node's read-model specifications are: its agencies, policy, timescales and signal rules.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeModelArgs {
    /// The node's agency registry.
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    pub agencies: PathBuf,
    /// The node's sharing policy.
    #[arg(long, env = "HALCYON_POLICY", default_value_os_t = deploy_path("policy/england.toml"))]
    pub policy: PathBuf,
    #[command(flatten)]
    pub timescales: super::deadlines::TimescaleArgs,
    #[command(flatten)]
    pub signals: super::signals::SignalArgs,
}

/// The node's read-model specifications (views from its agencies and policy, deadlines from its timescales,
/// signals from its rules), loaded once: a rebuild, an export and a reapply must derive as the node does.
pub(crate) struct NodeModels {
    views: ViewSpec,
    deadlines: halcyon_projector::DeadlineSpec,
    signals: halcyon_projector::SignalSpec,
}

impl NodeModels {
    pub(crate) fn load(args: &NodeModelArgs) -> Result<Self, Failure> {
        let NodeModelArgs {
            agencies,
            policy,
            timescales,
            signals,
        } = args;
        let registry = load_registry(agencies)?;
        let policy = Policy::load(policy).map_err(|e| config_error(anyhow!("{e}")))?;
        Ok(Self {
            views: ViewSpec::new(Arc::new(policy), &registry),
            deadlines: halcyon_projector::DeadlineSpec::new(timescales.load().map_err(config_error)?),
            signals: halcyon_projector::SignalSpec::new(signals.load().map_err(config_error)?, &registry),
        })
    }

    /// `projector`, deriving these models.
    pub(crate) fn on(self, projector: Projector) -> Projector {
        projector
            .with_views(self.views)
            .with_deadlines(self.deadlines)
            .with_signals(self.signals)
    }
}

pub async fn rebuild(args: RebuildArgs) -> Result<(), Failure> {
    let models = NodeModels::load(&args.models)?;
    let live = read_models_dir(&args.data_dir).map_err(|e| config_error(anyhow!("{e}")))?;
    let mut replaced_damage = 0;
    if live.exists() {
        // sled's lock tells whether a node is using the folder. A store sled itself cannot open is what
        // a rebuild is for: it is replaced, not read.
        match Projector::open(&live) {
            Ok(old) => {
                // Records the old read models cannot read back: reported, and replaced by the rebuild.
                replaced_damage = old.check_records().unwrap_or(0);
            }
            Err(halcyon_projector::ProjectorError::Open { source, .. })
                if source.to_string().contains("lock") || source.to_string().contains("WouldBlock") =>
            {
                return Err(anyhow!(
                    "{source} (is a node still running on {}? stop it first)",
                    live.display()
                )
                .into());
            }
            Err(e) => eprintln!(
                "the read models at {} cannot be opened ({e}); rebuilding them",
                live.display()
            ),
        }
    }
    let until = match &args.as_of {
        Some(t) => Until::StoredAt(halcyon_schema::convert::timestamp_millis(
            &halcyon_schema::convert::parse_timestamp(t).map_err(|e| config_error(anyhow!(e)))?,
        )),
        None => Until::End,
    };
    std::fs::create_dir_all(&args.data_dir).with_context(|| args.data_dir.display().to_string())?;
    let fresh = args
        .data_dir
        .join(format!("read-models.rebuild-{}", halcyon_schema::clock::now_ms()));
    let projector = Arc::new(
        models.on(Projector::open(&fresh)?
            .with_future_tolerance_ms(args.future.ms())
            .with_schema_version_max(args.future.schema_version_max()?)),
    );
    let client =
        halcyon_bus::connect(&args.nats.nats_url, &args.nats.credentials()?, "halcyon rebuild").await?;
    let js = async_nats::jetstream::new(client);
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .expect("template"),
    );
    let started = std::time::Instant::now();
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let applied = project_streams(&js, &projector, &until, &progress)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    bar.finish_and_clear();
    // Stamped as a node with this configuration stamps its store, so a node started on it keeps it.
    let policy = Policy::load(&args.models.policy).map_err(|e| config_error(anyhow!("policy: {e}")))?;
    let parts = super::serve::config_fingerprint(
        &policy,
        &args.models.policy,
        &args.models.agencies,
        &args.models.timescales,
        &args.models.signals,
    )
    .map_err(config_error)?;
    projector.set_stamp(&halcyon_projector::location::Stamp::current(
        &halcyon_node::read_models::fingerprint_of(&parts, args.future.ms()),
    ))?;
    projector.flush()?;
    let size = projector.size_on_disk()?;
    drop(projector);
    swap_in(&args.data_dir, &fresh).map_err(|e| anyhow!("{e}"))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} from {applied} events in {secs:.1} s ({:.0} events/s); {} MB on disk",
        live.display(),
        applied as f64 / secs.max(1e-9),
        size / 1_000_000
    );
    if replaced_damage > 0 {
        println!(
            "the read models replaced held {replaced_damage} record(s) that could not be read back; the rebuild replaced them"
        );
    }
    Ok(())
}

pub async fn export(args: ExportArgs) -> Result<(), Failure> {
    let dir = read_models_dir(&args.data_dir).map_err(|e| config_error(anyhow!("{e}")))?;
    if !dir.exists() {
        return Err(config_error(anyhow!("no read models at {}", dir.display())));
    }
    let js = args.nats.jetstream("halcyon export").await?;
    args.read
        .record(&js, "halcyon export", halcyon_policy::Purpose::Audit, None)
        .await?;
    let at_ms = match &args.deadlines_at {
        Some(t) => halcyon_schema::convert::timestamp_millis(
            &halcyon_schema::convert::parse_timestamp(t)
                .map_err(|e| config_error(anyhow!("deadlines_at: {e}")))?,
        ),
        None => halcyon_schema::clock::now_ms(),
    };
    let projector = NodeModels::load(&args.models)?
        .on(Projector::open(&dir).map_err(|e| anyhow!("{e} (is a node still running? stop it first)"))?);
    // A node stopped (or killed) before deriving its last views leaves markers; derive them first, so the
    // dump depends only on the events applied.
    let derived = projector.derive_all_views()?;
    if derived > 0 {
        eprintln!("derived the views of {derived} children the node had not derived yet");
    }
    // Every record read once: those that cannot be read back are reported (and dumped as stored).
    let damaged = projector.check_records()?;
    if damaged > 0 {
        eprintln!("{damaged} record(s) cannot be read back (rebuild the read models to replace them):");
        for d in projector.damaged() {
            eprintln!("  {} {}  {}", d.kind, d.key, d.reason);
        }
    }
    // Deadlines are evaluated now (or at --deadlines-at), as a running node's timer would: breaches due
    // before that moment are recorded.
    projector.record_all_breaches(at_ms)?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| path.display().to_string())?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    projector.export(&mut out)?;
    out.flush()?;
    Ok(())
}
