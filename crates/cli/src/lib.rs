//! The `halcyon` command line: operators run nodes and provision streams, agencies publish, practitioners'
//! systems (and the demo) query, data-protection officers check and explain the policy.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod cmd;
pub mod render;

/// Exit code for a bad configuration or usage (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "halcyon",
    version,
    about = "Multi-agency safeguarding backbone: events over NATS JetStream, read models in sled, queries over gRPC under the sharing policy."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: the projector and the gRPC API in one process.
    Serve(Box<cmd::serve::Args>),
    /// Publish events: JSON lines from a file, or a generated scenario.
    Publish(cmd::publish::Args),
    /// Ask a node what an agency may see about a child.
    Child(cmd::child::Args),
    /// The CP-IS-style status flag of a child, by NHS number (unscheduled care).
    Flag(cmd::child::FlagArgs),
    /// Project the streams into fresh read models and swap them in (the node must be stopped).
    Rebuild(cmd::rebuild::RebuildArgs),
    /// Dump a node's read models deterministically (the node must be stopped).
    Export(cmd::rebuild::ExportArgs),
    /// List quarantined events and why they were not projected.
    Quarantine(cmd::quarantine::Args),
    /// One agency's data-quality report on its own records: entered in error, corrected, quarantined, links
    /// undone, recorded late
    Quality(cmd::quality::Args),
    /// Breaches of statutory timescales the calling agency may know of (`--watch` to follow new ones).
    Deadlines(cmd::deadlines::Args),
    /// Multi-agency signals the calling agency receives (`--watch` to follow new ones; `outcome` to record
    /// what was done).
    Signals(cmd::signals::Args),
    /// Provision or reconcile the agency streams and the AUDIT stream.
    Streams(cmd::streams::Args),
    /// The nodes of the deployment: live or stopped, duties, clock offset, and how their configurations
    /// differ.
    Nodes(cmd::nodes::Args),
    /// Access notifications of the calling agency's children, from any node (`--resume-after` the last
    /// position to receive those made while not watching).
    Notifications(cmd::notifications::Args),
    /// Check and explain the sharing policy.
    #[command(subcommand)]
    Policy(cmd::policy::Command),
    /// Print the SHA-256 of a bearer token, for the tokens file.
    HashToken { token: String },
    /// Stream events from the agency streams, decoded, as JSON lines or a table.
    Replay(cmd::replay::Args),
    /// Back up every Halcyon stream (JetStream snapshots), the signed checkpoints, the nodes' configuration
    /// fingerprints and the agency registry into a dated folder.
    Backup(cmd::backup::BackupArgs),
    /// Restore a backup into a JetStream without those streams; `--verify` checks every agency stream
    /// against the backup's signed checkpoints before reporting success.
    Restore(cmd::backup::RestoreArgs),
    /// Case-review questions: as-of, chronology, access log, tamper evidence.
    #[command(subcommand)]
    Audit(cmd::audit::Command),
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

pub fn config_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_CONFIG,
        error: e.into(),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HALCYON_LOG")
                .unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false);
    // `HALCYON_LOG_FORMAT=json`: one JSON object per line, with the span a line belongs to (a call's
    // `request_id` and method), for a log shipper.
    match std::env::var("HALCYON_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().with_current_span(true).with_span_list(false).init(),
        Ok("text") | Err(_) => logs.init(),
        Ok(other) => {
            logs.init();
            tracing::warn!(
                format = other,
                "HALCYON_LOG_FORMAT: unknown (json or text); logging text"
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(*args).await,
            Command::Publish(args) => cmd::publish::run(args).await,
            Command::Child(args) => cmd::child::run(args).await,
            Command::Flag(args) => cmd::child::flag(args).await,
            Command::Streams(args) => cmd::streams::run(args).await,
            Command::Nodes(args) => cmd::nodes::run(args).await,
            Command::Notifications(args) => cmd::notifications::run(args).await,
            Command::Quarantine(args) => cmd::quarantine::run(args).await,
            Command::Quality(args) => cmd::quality::run(args).await,
            Command::Deadlines(args) => cmd::deadlines::run(args).await,
            Command::Signals(args) => cmd::signals::run(args).await,
            Command::Rebuild(args) => cmd::rebuild::rebuild(args).await,
            Command::Export(args) => cmd::rebuild::export(args).await,
            Command::Policy(command) => cmd::policy::run(command),
            Command::Replay(args) => cmd::replay::run(args).await,
            Command::Audit(command) => cmd::audit::run(command).await,
            Command::Backup(args) => cmd::backup::backup(args).await,
            Command::Restore(args) => cmd::backup::restore_backup(args).await,
            Command::HashToken { token } => {
                println!("{}", halcyon_node::auth::hash_token(&token));
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
