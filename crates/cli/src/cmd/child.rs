//! `halcyon child`: ask a node what the calling agency may see about a child, as a person reads it.

use anyhow::anyhow;
use halcyon_grpc::pb;

use super::common::{ApiArgs, refused, wire_positions};
use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long, group = "id")]
    nhs: Option<String>,
    #[arg(long, group = "id")]
    upn: Option<String>,
    /// An agency-local id, as AGENCY:ID.
    #[arg(long, group = "id")]
    local: Option<String>,
    /// Why you are asking: safeguarding, direct_care, law_enforcement, statutory_review, audit.
    #[arg(long)]
    purpose: halcyon_policy::Purpose,
    /// Break-glass (vital interests): the reason, recorded and reviewed.
    #[arg(long)]
    break_glass: Option<String>,
    /// Answer only once the node has projected this position (STREAM:SEQUENCE, from `halcyon publish`).
    #[arg(long = "after")]
    after: Vec<halcyon_bus::Position>,
    /// Print the view as JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let identifier = match (&args.nhs, &args.upn, &args.local) {
        (Some(n), _, _) => pb::find_child_request::Identifier::NhsNumber(n.clone()),
        (_, Some(u), _) => pb::find_child_request::Identifier::Upn(u.clone()),
        (_, _, Some(l)) => {
            let (agency_id, local_id) = l
                .split_once(':')
                .ok_or_else(|| config_error(anyhow!("--local must be AGENCY:ID")))?;
            pb::find_child_request::Identifier::LocalId(pb::LocalId {
                agency_id: agency_id.into(),
                local_id: local_id.into(),
            })
        }
        _ => return Err(config_error(anyhow!("say which child: --nhs, --upn or --local"))),
    };
    let mut client = args.api.client().await?;
    let request = args.api.request(pb::FindChildRequest {
        context: Some(args.api.acting(pb::RequestContext {
            purpose: args.purpose.to_pb() as i32,
            break_glass: args.break_glass.is_some(),
            break_glass_reason: args.break_glass.clone().unwrap_or_default(),
            min_positions: wire_positions(&args.after),
            ..Default::default()
        })),
        identifier: Some(identifier),
    })?;
    let view = client.find_child(request).await.map_err(refused)?.into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", crate::render::view(&view));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct FlagArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long)]
    nhs: String,
    #[arg(long, default_value = "direct_care")]
    purpose: halcyon_policy::Purpose,
    #[arg(long = "after")]
    after: Vec<halcyon_bus::Position>,
}

/// `halcyon flag`: the CP-IS-style check an unscheduled-care setting makes.
pub async fn flag(args: FlagArgs) -> Result<(), Failure> {
    let mut client = args.api.client().await?;
    let request = args.api.request(pb::CheckFlagRequest {
        context: Some(args.api.acting(pb::RequestContext {
            purpose: args.purpose.to_pb() as i32,
            min_positions: wire_positions(&args.after),
            ..Default::default()
        })),
        nhs_number: args.nhs.clone(),
    })?;
    let flag = client.check_flag(request).await.map_err(refused)?.into_inner();
    print!("{}", crate::render::flag(&flag));
    Ok(())
}
