//! `halcyon audit …`: the questions every case review asks, answered from the event history.
//! One module per subcommand.

use clap::Subcommand;

use crate::Failure;

pub mod chronology;
pub mod review;
pub mod verify;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tamper evidence: re-derive each stream's hash chain and check every signed checkpoint.
    Verify(verify::Args),
    /// Checkpoint keys and safekeeping: export the signed checkpoints as JSON lines; make a key pair.
    #[command(subcommand)]
    Checkpoints(verify::CheckpointsCommand),
    /// What could an agency see about a child at a moment, beside what it actually accessed.
    AsOf(review::AsOfArgs),
    /// The integrated multi-agency chronology of a child (text, CSV or self-contained HTML).
    Chronology(chronology::Args),
    /// The access log for a child or an agency; break-glass uses and their review.
    Access(review::AccessArgs),
}

pub async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Verify(args) => verify::run(args).await,
        Command::Checkpoints(command) => verify::checkpoints(command).await,
        Command::AsOf(args) => review::as_of(args).await,
        Command::Chronology(args) => chronology::run(args).await,
        Command::Access(args) => review::access(args).await,
    }
}
