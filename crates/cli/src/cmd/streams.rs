//! `halcyon streams apply --spec`: create or reconcile `EVENTS_<AGENCY>` for every registered agency and the
//! AUDIT and CHECKPOINTS streams as the checked-in spec says — the only writer of stream settings (run as
//! the NATS operator user). `halcyon streams check --spec`: what a node checks at start, without changing
//! anything.

use std::path::PathBuf;

use halcyon_bus::streams::{self, Provisioned};
use halcyon_bus::{StreamSpec, connect};

use super::common::{NatsArgs, deploy_path, load_registry};
use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Create missing streams and reconcile changed settings to the spec.
    Apply(SpecArgs),
    /// Check the streams against the spec (as a node does at start); change nothing. Exit 1 on any
    /// difference, each named.
    Check(SpecArgs),
}

#[derive(Debug, clap::Args)]
struct SpecArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    agencies: PathBuf,
    /// The stream spec (deploy/streams.toml on a cluster, deploy/streams-local.toml on one server).
    #[arg(long, env = "HALCYON_STREAMS_SPEC", default_value_os_t = deploy_path("streams.toml"))]
    spec: PathBuf,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let (Action::Apply(a) | Action::Check(a)) = &args.action;
    let registry = load_registry(&a.agencies)?;
    let spec = StreamSpec::load(&a.spec).map_err(crate::config_error)?;
    let client = connect(&a.nats.nats_url, &a.nats.credentials()?, "halcyon streams").await?;
    let js = async_nats::jetstream::new(client);
    let agencies = registry.iter().map(|agency| &agency.id);
    match args.action {
        Action::Apply(_) => {
            for (name, provisioned) in streams::apply(&js, &spec, agencies).await? {
                match provisioned {
                    Provisioned::Created => println!("{name}: created"),
                    Provisioned::Unchanged => println!("{name}: unchanged"),
                    Provisioned::Updated(changes) => println!("{name}: updated ({})", changes.join(", ")),
                }
            }
        }
        Action::Check(_) => {
            let infos = streams::verify(&js, &spec, agencies).await?;
            for info in infos {
                let holders = info
                    .cluster
                    .as_ref()
                    .map(|c| {
                        let mut names: Vec<String> = c.leader.iter().map(|l| format!("{l} leader")).collect();
                        names.extend(c.replicas.iter().map(|p| {
                            let state = if p.offline || p.active > std::time::Duration::from_secs(5) {
                                "unreachable"
                            } else if p.current {
                                "current"
                            } else {
                                "catching up"
                            };
                            format!("{} {state}", p.name)
                        }));
                        names.join(", ")
                    })
                    .unwrap_or_default();
                println!(
                    "{}: ok (replicas {}, {} messages, on {holders})",
                    info.config.name, info.config.num_replicas, info.state.messages
                );
            }
        }
    }
    Ok(())
}
