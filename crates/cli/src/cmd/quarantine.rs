//! `halcyon quarantine`: the events a node would not project, and why. An agency lists its own; an
//! operator lists every agency's, and the read-model records the node set aside as unreadable.

use halcyon_grpc::pb;
use halcyon_schema::convert::format_timestamp;

use super::common::{ApiArgs, refused};
use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
    /// Operators: only this agency's.
    #[arg(long)]
    agency: Option<String>,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let mut client = args.api.client().await?;
    let request = args.api.request(pb::ListQuarantineRequest {
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
