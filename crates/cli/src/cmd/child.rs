//! `halcyon child`: ask a node what the calling agency may see about a child, as a person reads it.

use anyhow::anyhow;
use halcyon_schema::pb::{self, query_service_client::QueryServiceClient};
use tonic::metadata::MetadataValue;

use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's gRPC address.
    #[arg(long, env = "HALCYON_API", default_value = "http://127.0.0.1:50051")]
    api: String,
    /// Bearer token of the calling agency's principal.
    #[arg(long, env = "HALCYON_TOKEN", hide_env_values = true)]
    token: String,
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
    let mut client = QueryServiceClient::connect(args.api.clone())
        .await
        .map_err(|e| anyhow!("cannot reach the halcyon node at {}: {e}", args.api))?;
    let mut request = tonic::Request::new(pb::FindChildRequest {
        context: Some(pb::RequestContext {
            purpose: args.purpose.to_pb() as i32,
            break_glass: args.break_glass.is_some(),
            break_glass_reason: args.break_glass.clone().unwrap_or_default(),
            min_positions: args
                .after
                .iter()
                .map(|p| pb::Position {
                    stream: p.stream.clone(),
                    sequence: p.sequence,
                })
                .collect(),
        }),
        identifier: Some(identifier),
    });
    let bearer: MetadataValue<_> = format!("Bearer {}", args.token)
        .parse()
        .map_err(|_| config_error(anyhow!("the token is not a valid header value")))?;
    request.metadata_mut().insert("authorization", bearer);
    let view = client
        .find_child(request)
        .await
        .map_err(|s| anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", crate::render::view(&view));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct FlagArgs {
    #[arg(long, env = "HALCYON_API", default_value = "http://127.0.0.1:50051")]
    api: String,
    #[arg(long, env = "HALCYON_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long)]
    nhs: String,
    #[arg(long, default_value = "direct_care")]
    purpose: halcyon_policy::Purpose,
    #[arg(long = "after")]
    after: Vec<halcyon_bus::Position>,
}

/// `halcyon flag`: the CP-IS-style check an unscheduled-care setting makes.
pub async fn flag(args: FlagArgs) -> Result<(), Failure> {
    let mut client = QueryServiceClient::connect(args.api.clone())
        .await
        .map_err(|e| anyhow!("cannot reach the halcyon node at {}: {e}", args.api))?;
    let mut request = tonic::Request::new(pb::CheckFlagRequest {
        context: Some(pb::RequestContext {
            purpose: args.purpose.to_pb() as i32,
            min_positions: args
                .after
                .iter()
                .map(|p| pb::Position {
                    stream: p.stream.clone(),
                    sequence: p.sequence,
                })
                .collect(),
            ..Default::default()
        }),
        nhs_number: args.nhs.clone(),
    });
    let bearer: MetadataValue<_> = format!("Bearer {}", args.token)
        .parse()
        .map_err(|_| config_error(anyhow!("the token is not a valid header value")))?;
    request.metadata_mut().insert("authorization", bearer);
    let flag = client
        .check_flag(request)
        .await
        .map_err(|s| anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    print!("{}", crate::render::flag(&flag));
    Ok(())
}
