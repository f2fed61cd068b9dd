//! `halcyon quarantine`: the events a node would not project, and why. An agency lists its own; an
//! operator lists every agency's, and the read-model records the node set aside as unreadable.
//!
//! `halcyon quarantine reapply` (operators, the node stopped): after an upgrade, or once the deployment
//! raised its schema version (`--schema-version-max`), re-checks each event the node's read models hold in
//! quarantine and projects those that now pass at their own place in their streams, without a rebuild. The
//! operator and reason are recorded in the access log first; a second run finds nothing left to do.

use halcyon_grpc::pb;
use halcyon_schema::convert::format_timestamp;

use super::common::{ApiArgs, refused};
use crate::Failure;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    api: Option<ApiArgs>,
    /// Operators: only this agency's.
    #[arg(long)]
    agency: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Re-check the quarantined events of a stopped node's read models and project those that now pass.
    Reapply(super::reapply::Args),
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let api = match (args.action, args.api) {
        (Some(Action::Reapply(reapply)), _) => return super::reapply::run(reapply).await,
        (None, Some(api)) => api,
        (None, None) => {
            return Err(crate::config_error(anyhow::anyhow!(
                "halcyon quarantine needs --token (to list) or the reapply subcommand"
            )));
        }
    };
    let mut client = api.client().await?;
    let request = api.request(pb::ListQuarantineRequest {
        agency_id: args.agency.unwrap_or_default(),
    })?;
    let response = client
        .list_quarantine(request)
        .await
        .map_err(refused)?
        .into_inner();
    let (events, damaged) = (response.events, response.damaged);
    println!("{} quarantined event(s)", events.len());
    for e in events {
        let at = e.stored_at.as_ref().map(format_timestamp).unwrap_or_default();
        println!(
            "{}:{}  {}  {}  event {}",
            e.stream,
            e.sequence,
            at,
            e.subject,
            if e.event_id.is_empty() { "?" } else { &e.event_id }
        );
        for reason in e.reasons {
            println!("    - {reason}");
        }
    }
    if !damaged.is_empty() {
        println!(
            "{} read-model record(s) set aside as unreadable (rebuild the read models to replace them):",
            damaged.len()
        );
        for d in damaged {
            println!("  {} {}  {}", d.kind, d.key, d.reason);
        }
    }
    Ok(())
}
