//! `halcyon quarantine`: the events a node would not project, and why. An agency lists its own; an
//! operator lists every agency's.

use anyhow::anyhow;
use halcyon_schema::convert::format_timestamp;
use halcyon_schema::pb::{self, query_service_client::QueryServiceClient};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, env = "HALCYON_API", default_value = "http://127.0.0.1:50051")]
    api: String,
    #[arg(long, env = "HALCYON_TOKEN", hide_env_values = true)]
    token: String,
    /// Operators: only this agency's.
    #[arg(long)]
    agency: Option<String>,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let mut client = QueryServiceClient::connect(args.api.clone())
        .await
        .map_err(|e| anyhow!("cannot reach the halcyon node at {}: {e}", args.api))?;
    let mut request = tonic::Request::new(pb::ListQuarantineRequest {
        agency_id: args.agency.unwrap_or_default(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", args.token)
            .parse()
            .map_err(|_| anyhow!("the token is not a valid header value"))?,
    );
    let events = client
        .list_quarantine(request)
        .await
        .map_err(|s| anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner()
        .events;
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
    Ok(())
}
