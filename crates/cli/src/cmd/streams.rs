//! `halcyon streams apply`: provision or reconcile `EVENTS_<AGENCY>` for every registered agency and the
//! AUDIT and CHECKPOINTS streams. Idempotent; refuses, naming the setting, what it must not change silently.

use std::path::PathBuf;
use std::time::Duration;

use halcyon_bus::streams::Provisioned;
use halcyon_bus::{StreamSettings, connect, ensure_audit_stream, ensure_event_stream};
use halcyon_schema::StreamName;

use super::common::{NatsArgs, deploy_path, load_registry};
use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Create missing streams and reconcile changed settings.
    Apply {
        #[command(flatten)]
        nats: NatsArgs,
        #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
        agencies: PathBuf,
        #[arg(long, default_value_t = 3600)]
        duplicate_window_secs: u64,
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let Action::Apply {
        nats,
        agencies,
        duplicate_window_secs,
        replicas,
    } = args.action;
    let registry = load_registry(&agencies)?;
    let client = connect(&nats.nats_url, &nats.credentials()?, "halcyon streams").await?;
    let js = async_nats::jetstream::new(client);
    let settings = StreamSettings {
        duplicate_window: Duration::from_secs(duplicate_window_secs),
        replicas,
    };
    let show = |name: &str, p: Provisioned| match p {
        Provisioned::Created => println!("{name}: created"),
        Provisioned::Unchanged => println!("{name}: unchanged"),
        Provisioned::Updated(changes) => println!("{name}: updated ({})", changes.join(", ")),
    };
    for agency in registry.iter() {
        show(
            StreamName::for_agency(&agency.id).as_str(),
            ensure_event_stream(&js, &agency.id, &settings).await?,
        );
    }
    show("AUDIT", ensure_audit_stream(&js, &settings).await?);
    show(
        halcyon_bus::checkpoint::CHECKPOINT_STREAM,
        halcyon_bus::streams::ensure_checkpoint_stream(&js, &settings).await?,
    );
    Ok(())
}
