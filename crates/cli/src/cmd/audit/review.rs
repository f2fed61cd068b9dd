//! `halcyon audit as-of | access`. Being built (issue 7).

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct AsOfArgs {}
#[derive(Debug, clap::Args)]
pub struct AccessArgs {}

pub async fn as_of(_args: AsOfArgs) -> Result<(), Failure> {
    Err(anyhow::anyhow!("audit as-of is not built yet").into())
}
pub async fn access(_args: AccessArgs) -> Result<(), Failure> {
    Err(anyhow::anyhow!("audit access is not built yet").into())
}
