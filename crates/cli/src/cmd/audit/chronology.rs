//! `halcyon audit chronology`. Being built (issue 7).

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> Result<(), Failure> {
    Err(anyhow::anyhow!("audit chronology is not built yet").into())
}
