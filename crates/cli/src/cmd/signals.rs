//! `halcyon signals`: the multi-agency signals ("joining the dots") the calling agency receives — rule,
//! when it first fired, the facts that raised it by reference, and the outcome recorded — with `--watch` to
//! follow new ones; `halcyon signals outcome` records what was done with one (a `SignalOutcomeRecorded`
//! event on the recipient agency's own stream).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use futures::StreamExt;
use halcyon_bus::{Credentials, Publisher, PublisherConfig, connect_watching};
use halcyon_grpc::pb::{self, signal_service_client::SignalServiceClient};
use halcyon_schema::convert::{format_timestamp, timestamp_from_millis};
use halcyon_schema::{AgencyId, CaseId, Category, ChildId, EventId, NhsNumber, SCHEMA_VERSION};
use halcyon_signals::SignalRules;

use super::common::{ApiArgs, refused};
use crate::{Failure, config_error};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Box<Command>>,
    #[command(flatten)]
    list: Box<ListArgs>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Record what was done with a signal: a SignalOutcomeRecorded event on your agency's stream.
    Outcome(OutcomeArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// The node's gRPC address.
    #[arg(long, env = "HALCYON_API", default_value = "http://127.0.0.1:50051")]
    api: String,
    /// Bearer token of the calling agency's principal (required; optional here only so that `outcome`
    /// takes its own).
    #[arg(long, env = "HALCYON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only this child's signals (its child id).
    #[arg(long)]
    child: Option<String>,
    /// Only signals without a recorded outcome.
    #[arg(long)]
    open: bool,
    /// Why you are asking: safeguarding, direct_care, law_enforcement, statutory_review, audit.
    #[arg(long, default_value = "safeguarding")]
    purpose: halcyon_policy::Purpose,
    /// Then follow the node's watch stream and print each signal as it fires (until interrupted).
    #[arg(long)]
    watch: bool,
    /// JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

/// What was done.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Outcome {
    Reviewed,
    ActionTaken,
    NoAction,
}

impl Outcome {
    fn to_pb(self) -> pb::SignalOutcome {
        match self {
            Outcome::Reviewed => pb::SignalOutcome::Reviewed,
            Outcome::ActionTaken => pb::SignalOutcome::ActionTaken,
            Outcome::NoAction => pb::SignalOutcome::NoAction,
        }
    }
}

#[derive(Debug, clap::Args)]
struct OutcomeArgs {
    /// The node, asked (with your agency's token) whether your agency receives the signal.
    #[command(flatten)]
    api: ApiArgs,
    /// The signal, as `halcyon signals` lists it (`S02/<event id>`).
    signal: String,
    /// The child's NHS number: the outcome is filed with the child, by the identifier agencies share.
    #[arg(long)]
    nhs: String,
    #[arg(long, value_enum)]
    outcome: Outcome,
    /// Why (required for no-action).
    #[arg(long, default_value = "")]
    reason: String,
    /// Who decided: the practitioner id in your agency.
    #[arg(long)]
    recorded_by: String,
    /// Your agency: the outcome is published on its own stream, as its own NATS user.
    #[arg(long, env = "HALCYON_AGENCY")]
    agency: String,
    /// The NATS password of your agency's user.
    #[arg(long, env = "HALCYON_NATS_PASSWORD", hide_env_values = true)]
    nats_password: String,
    #[arg(long, env = "HALCYON_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The case in your agency's stream that holds signal outcomes.
    #[arg(long, default_value = "signal-outcomes")]
    case: String,
}

/// The signal rules a node (and a rebuild or an export, which must use the same) derives signals with.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SignalArgs {
    /// Signal rules (docs/domain.md §7). Default: the shipped `deploy/signals.toml`.
    #[arg(long = "signals", env = "HALCYON_SIGNALS")]
    pub signals: Option<PathBuf>,
}

impl SignalArgs {
    /// Loads and checks the file; an error names the file, line, column and reason.
    pub fn load(&self) -> anyhow::Result<Arc<SignalRules>> {
        match &self.signals {
            None => Ok(std::sync::Arc::new(halcyon_signals::SignalRules::england())),
            Some(path) => Ok(Arc::new(
                SignalRules::load(path).map_err(|e| anyhow!("signals: {e}"))?,
            )),
        }
    }
}

fn context(purpose: halcyon_policy::Purpose) -> pb::RequestContext {
    pb::RequestContext {
        purpose: purpose.to_pb() as i32,
        ..Default::default()
    }
}

fn outcome_name(value: i32) -> &'static str {
    match pb::SignalOutcome::try_from(value) {
        Ok(pb::SignalOutcome::Reviewed) => "reviewed",
        Ok(pb::SignalOutcome::ActionTaken) => "action taken",
        Ok(pb::SignalOutcome::NoAction) => "no action",
        _ => "unknown",
    }
}

fn reference(f: &pb::SignalFactReference) -> String {
    format!("{} {}#{} {}", f.agency_id, f.stream, f.sequence, f.event_id)
}

/// One line: `S02/… exploitation indicators co-occur (co-occurrence, 42 days) child … fired …: 4 facts […];
/// outcome …`.
pub fn line(s: &pb::Signal) -> String {
    let fired = s.fired_at.as_ref().map(format_timestamp).unwrap_or_default();
    let facts: Vec<String> = s.facts.iter().map(reference).collect();
    let outcome = match &s.outcome {
        None => "no outcome recorded".to_owned(),
        Some(o) => format!(
            "{} by {} ({})",
            outcome_name(o.outcome),
            o.agency_id,
            o.recorded_by
        ),
    };
    let withdrawn = match &s.withdrawn {
        None => String::new(),
        Some(w) => format!(
            "; WITHDRAWN {}: {} was corrected by {}",
            w.withdrawn_at.as_ref().map(format_timestamp).unwrap_or_default(),
            w.withdrawn_event_id,
            w.correction_event_id
        ),
    };
    // Signals a late fact made one with this one: their ids, so an outcome recorded against one is found.
    let replaces = if s.replaces.is_empty() {
        String::new()
    } else {
        format!("; replaces {}", s.replaces.join(", "))
    };
    format!(
        "{} {} ({}, {} days) child {} fired {fired}: {} facts [{}]; {outcome}{withdrawn}{replaces}",
        s.signal_id,
        s.rule_name,
        s.rule_kind,
        s.window_days,
        s.child_id,
        s.facts.len(),
        facts.join(", "),
    )
}

fn print(s: &pb::Signal, json: bool) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!("{}", line(s));
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<(), Failure> {
    match args.command.map(|c| *c) {
        Some(Command::Outcome(outcome)) => record_outcome(outcome).await,
        None => list(*args.list).await,
    }
}

async fn client(api: &ApiArgs) -> Result<SignalServiceClient<tonic::transport::Channel>, Failure> {
    SignalServiceClient::connect(api.api.clone())
        .await
        .map_err(|e| anyhow!("cannot reach the halcyon node at {}: {e}", api.api).into())
}

async fn list(args: ListArgs) -> Result<(), Failure> {
    let api = ApiArgs {
        api: args.api.clone(),
        token: args
            .token
            .clone()
            .ok_or_else(|| config_error(anyhow!("--token: the calling agency's bearer token is required")))?,
        acting_person: None,
        acting_role: None,
    };
    // Every page, in order (a listing without a child comes a page at a time).
    let mut node = client(&api).await?;
    let (mut signals, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = api.request(pb::ListSignalsRequest {
            context: Some(context(args.purpose)),
            child_id: args.child.clone().unwrap_or_default(),
            open_only: args.open,
            page_size: 0,
            page_token: std::mem::take(&mut page_token),
        })?;
        let listed = node.list_signals(request).await.map_err(refused)?.into_inner();
        signals.extend(listed.signals);
        if listed.next_page_token.is_empty() {
            break;
        }
        page_token = listed.next_page_token;
    }
    if !args.json {
        println!("{} signal(s)", signals.len());
    }
    for s in &signals {
        print(s, args.json)?;
    }
    if !args.watch {
        return Ok(());
    }
    let mut watch = api
        .client()
        .await?
        .watch(api.request(pb::WatchRequest {
            context: Some(context(args.purpose)),
            ..Default::default()
        })?)
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(event) = watch.next().await {
        let event = event.map_err(refused)?;
        if let Some(pb::watch_event::Kind::Signal(s)) = event.kind {
            let wanted =
                args.child.as_ref().is_none_or(|c| *c == s.child_id) && (!args.open || s.outcome.is_none());
            if wanted {
                print(&s, args.json)?;
            }
        }
    }
    Ok(())
}

async fn record_outcome(args: OutcomeArgs) -> Result<(), Failure> {
    let agency: AgencyId = args
        .agency
        .parse()
        .map_err(|e| config_error(anyhow!("--agency: {e}")))?;
    let case: CaseId = args
        .case
        .parse()
        .map_err(|e| config_error(anyhow!("--case: {e}")))?;
    let nhs: NhsNumber = args
        .nhs
        .parse()
        .map_err(|e| config_error(anyhow!("--nhs: {e}")))?;
    halcyon_schema::review::check_signal_id(&args.signal)
        .map_err(|e| config_error(anyhow!("signal: {e}")))?;
    if args.recorded_by.trim().is_empty() {
        return Err(config_error(anyhow!("--recorded-by: say who decided")));
    }
    let outcome = args.outcome.to_pb();
    if outcome == pb::SignalOutcome::NoAction && args.reason.trim().is_empty() {
        return Err(config_error(anyhow!("--reason: say why no action is taken")));
    }
    // Only a signal the node shows this agency: the outcome is recorded by a recipient, for the right child.
    let child = ChildId::from_nhs(&nhs);
    let request = args.api.request(pb::ListSignalsRequest {
        context: Some(context(halcyon_policy::Purpose::Safeguarding)),
        child_id: child.to_string(),
        ..Default::default()
    })?;
    let listed = client(&args.api)
        .await?
        .list_signals(request)
        .await
        .map_err(refused)?
        .into_inner();
    let signal = listed
        .signals
        .iter()
        .find(|s| s.signal_id == args.signal)
        .ok_or_else(|| {
            anyhow!(
                "no signal {} for this child that your agency receives (see `halcyon signals --child {child}`)",
                args.signal
            )
        })?;
    if let Some(o) = &signal.outcome {
        eprintln!(
            "note: already recorded as {} by {}; recording another outcome",
            outcome_name(o.outcome),
            o.agency_id
        );
    }
    let now = timestamp_from_millis(halcyon_schema::clock::now_ms());
    let envelope = pb::Envelope {
        event_id: EventId::new().to_string(),
        case_id: case.as_str().to_owned(),
        agency_id: agency.as_str().to_owned(),
        occurred_at: Some(now),
        recorded_at: Some(now),
        actor: Some(pb::Actor {
            practitioner_id: args.recorded_by.trim().to_owned(),
            role: String::new(),
            system: "halcyon".into(),
        }),
        child: Some(pb::ChildIdentifiers {
            nhs_number: nhs.to_string(),
            ..Default::default()
        }),
        category: Category::SIGNAL.to_pb() as i32,
        schema_version: SCHEMA_VERSION,
        lawful_basis: pb::LawfulBasis::PublicTask as i32,
        event: Some(pb::Event {
            kind: Some(pb::event::Kind::SignalOutcomeRecorded(
                pb::SignalOutcomeRecorded {
                    signal_id: args.signal.clone(),
                    outcome: outcome as i32,
                    recorded_by: args.recorded_by.trim().to_owned(),
                    reason: args.reason.trim().to_owned(),
                },
            )),
        }),
    };
    if let Err(problems) = halcyon_schema::validate_envelope(envelope.clone()) {
        let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(config_error(anyhow!("{}", reasons.join("; "))));
    }
    let (nats, violations) = connect_watching(
        &args.nats_url,
        &Credentials::agency(agency.as_str(), &args.nats_password),
        "halcyon signals outcome",
    )
    .await?;
    let publisher = Publisher::new(
        nats,
        PublisherConfig {
            agency: Some(agency.clone()),
            ..Default::default()
        },
    )
    .with_violations(violations);
    let published = publisher
        .publish(&envelope, None)
        .await
        .map_err(|e| anyhow!("the outcome was not recorded: {e}"))?;
    println!(
        "signal {}: {} — recorded as event {} at {}",
        args.signal,
        outcome_name(outcome as i32),
        envelope.event_id,
        published.position
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_reads_as_rule_child_firing_time_references_and_outcome() {
        let signal = pb::Signal {
            signal_id: "S02/e-4".into(),
            child_id: "c-1".into(),
            rule_id: "S02".into(),
            rule_name: "exploitation indicators co-occur".into(),
            rule_kind: "co-occurrence".into(),
            window_days: 42,
            fired_at: Some(timestamp_from_millis(1_772_445_600_000)),
            facts: vec![pb::SignalFactReference {
                agency_id: "police-sy".into(),
                stream: "EVENTS_POLICE-SY".into(),
                sequence: 3,
                event_id: "e-1".into(),
                occurred_at: None,
            }],
            outcome: Some(pb::SignalOutcomeRecord {
                outcome: pb::SignalOutcome::ActionTaken as i32,
                agency_id: "mash-rotherham".into(),
                recorded_by: "mash-07".into(),
                fact: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            line(&signal),
            "S02/e-4 exploitation indicators co-occur (co-occurrence, 42 days) child c-1 fired \
             2026-03-02T10:00:00Z: 1 facts [police-sy EVENTS_POLICE-SY#3 e-1]; action taken by \
             mash-rotherham (mash-07)"
        );
    }
}
