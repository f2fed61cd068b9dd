//! `halcyon notifications`: the access notifications of the calling agency's children (a flag checked from
//! unscheduled care, say), followed live from any node. Each line ends with the notification's position;
//! `--resume-after POSITION` delivers only later ones (those made while nobody watched included), once each.

use anyhow::anyhow;
use futures::StreamExt;
use halcyon_grpc::pb;

use super::common::ApiArgs;
use crate::{Failure, config_error};
use halcyon_schema::convert::format_timestamp;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
    /// The position of the last notification received (printed with each); empty: from now on.
    #[arg(long, default_value = "")]
    resume_after: String,
    /// Stop after this many notifications (0: follow until interrupted).
    #[arg(long, default_value_t = 0)]
    count: usize,
    /// Give up (exit 1) if the notifications wanted have not all come within this many seconds (0: wait).
    #[arg(long, default_value_t = 0)]
    timeout_secs: u64,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let request = args.api.request(pb::WatchRequest {
        context: Some(pb::RequestContext {
            purpose: pb::Purpose::Safeguarding as i32,
            ..Default::default()
        }),
        resume_after: args.resume_after.clone(),
    })?;
    let mut watch = args
        .api
        .client()
        .await?
        .watch(request)
        .await
        .map_err(|s| anyhow!("the node refused the watch: {}", s.message()))?
        .into_inner();
    let mut seen = 0;
    let follow = async {
        while let Some(event) = watch.next().await {
            let event = event.map_err(|s| anyhow!("the watch ended: {}", s.message()))?;
            if let Some(pb::watch_event::Kind::Access(n)) = event.kind {
                let at = n.at.as_ref().map(format_timestamp).unwrap_or_else(|| "-".into());
                println!(
                    "{at}  {} by {} ({}, {}) of child {}  position {}",
                    n.method, n.by_agency_name, n.by_agency_id, n.role, n.child_id, event.position
                );
                seen += 1;
                if args.count > 0 && seen >= args.count {
                    return Ok(());
                }
            }
        }
        Err(anyhow!("the watch ended"))
    };
    if args.timeout_secs == 0 {
        follow.await.map_err(Failure::from)
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(args.timeout_secs), follow).await {
            Ok(r) => r.map_err(Failure::from),
            Err(_) => Err(config_error(anyhow!(
                "{seen} of {} notification(s) within {} s",
                args.count,
                args.timeout_secs
            ))),
        }
    }
}
