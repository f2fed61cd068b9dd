//! `halcyon audit as-of` (what an agency could see about a child at a moment, beside what it actually
//! accessed by then) and `halcyon audit access` (the access log of a child or an agency, break-glass uses
//! and their review). Both read the streams themselves with operator credentials, as `rebuild` and
//! `replay` do, so they answer from the log, not from any node's read models. A review is published as an
//! event by the reviewer's agency, under that agency's own NATS identity.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::anyhow;
use halcyon_bus::{Credentials, Publisher, PublisherConfig, connect_watching};
use halcyon_grpc::pb::{self, event::Kind};
use halcyon_policy::{AgencyKind, Policy, PolicyHistory, Principal, Purpose, Role, StageTerm};
use halcyon_projector::Identifier;
use halcyon_review::access_trail::{self, LocatedRecord, Review, ReviewDecision};
use halcyon_review::as_of::{AsOfView, DeadlineThen, Reconstruction, SignalThen, Standing, reconstruct};
use halcyon_schema::convert::{format_timestamp, parse_timestamp, timestamp_from_millis, timestamp_millis};
use halcyon_schema::{AgencyId, CaseId, Category, ChildId, NhsNumber, Registry, Upn};
use serde_json::json;

use super::super::common::{NatsArgs, deploy_path, load_registry};
use crate::{Failure, config_error};

/// Which child: one of its identifiers.
#[derive(Debug, Clone, clap::Args)]
#[group(multiple = false)]
pub struct ChildArgs {
    /// The child's NHS number.
    #[arg(long)]
    nhs: Option<String>,
    /// The child's unique pupil number.
    #[arg(long)]
    upn: Option<String>,
    /// The halcyon child id (as access records and views show it).
    #[arg(long)]
    child_id: Option<String>,
}

/// A child as named on the command line.
#[derive(Debug, Clone)]
enum ChildRef {
    Identifier(Identifier),
    Id(ChildId),
}

impl ChildRef {
    /// The child id the reference derives (links are not followed): what an access record names.
    fn named(&self) -> ChildId {
        match self {
            ChildRef::Identifier(Identifier::Nhs(n)) => ChildId::from_nhs(n),
            ChildRef::Identifier(Identifier::Upn(u)) => ChildId::from_upn(u),
            ChildRef::Identifier(Identifier::Local { agency, local_id }) => {
                ChildId::from_local(agency, local_id)
            }
            ChildRef::Id(id) => *id,
        }
    }
}

impl ChildArgs {
    fn parse(&self) -> Result<Option<ChildRef>, Failure> {
        let bad = |what: &str, e: &dyn std::fmt::Display| config_error(anyhow!("--{what}: {e}"));
        Ok(match (&self.nhs, &self.upn, &self.child_id) {
            (Some(n), _, _) => Some(ChildRef::Identifier(Identifier::Nhs(
                n.parse::<NhsNumber>().map_err(|e| bad("nhs", &e))?,
            ))),
            (_, Some(u), _) => Some(ChildRef::Identifier(Identifier::Upn(
                u.parse::<Upn>().map_err(|e| bad("upn", &e))?,
            ))),
            (_, _, Some(c)) => Some(ChildRef::Id(
                c.parse::<ChildId>().map_err(|e| bad("child-id", &e))?,
            )),
            _ => None,
        })
    }

    /// How the child was named, for messages.
    fn describe(&self) -> String {
        match (&self.nhs, &self.upn, &self.child_id) {
            (Some(n), _, _) => format!("NHS number {n}"),
            (_, Some(u), _) => format!("UPN {u}"),
            (_, _, Some(c)) => format!("child id {c}"),
            _ => "no child".into(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AsOfArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Who reads and why (recorded in the access log first).
    #[command(flatten)]
    read: crate::cmd::operator_read::OperatorRead,
    /// The agency whose view to reconstruct (an id in the agency registry).
    #[arg(long)]
    agency: String,
    #[command(flatten)]
    child: ChildArgs,
    /// The moment: RFC 3339 (2026-03-01T09:00:00Z) or a date (midnight UTC). Events the server had stored
    /// by then count; later ones do not.
    #[arg(long)]
    at: String,
    /// The principal's role: practitioner, mash-member, privacy-officer, operator (default: mash-member for
    /// a MASH, practitioner otherwise — the agency's standing principal).
    #[arg(long)]
    role: Option<Role>,
    /// The stated purpose: safeguarding, direct_care, law_enforcement, statutory_review, audit.
    #[arg(long, default_value = "safeguarding")]
    purpose: Purpose,
    /// Which policy file was in force when (see the file); the one in force at --at decides.
    #[arg(long, env = "HALCYON_POLICY_HISTORY", default_value_os_t = deploy_path("policy/history.toml"))]
    policy_history: PathBuf,
    /// Decide with this policy file instead, whatever the history says.
    #[arg(long)]
    policy: Option<PathBuf>,
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    agencies: PathBuf,
    /// The statutory timescales the deadlines are derived with (the node's: `--timescales`,
    /// `--bank-holidays`).
    #[command(flatten)]
    timescales: crate::cmd::deadlines::TimescaleArgs,
    /// The signal rules the signals are derived with (the node's: `--signals`).
    #[command(flatten)]
    signals: crate::cmd::signals::SignalArgs,
    /// The nodes' tolerance for future-dated events.
    #[command(flatten)]
    future: crate::cmd::common::FutureToleranceArgs,
    #[command(flatten)]
    review_store: crate::cmd::common::ReviewStoreArgs,
    /// JSON lines (one object per line, `"kind"` says which) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AccessArgs {
    #[command(subcommand)]
    command: Option<Box<AccessCommand>>,
    #[command(flatten)]
    list: Box<ListArgs>,
}

#[derive(Debug, clap::Subcommand)]
enum AccessCommand {
    /// Record a review of a break-glass use: a BreakGlassReviewed event on the reviewer's agency's stream.
    Review(ReviewArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Who reads and why (recorded in the access log first).
    #[command(flatten)]
    read: crate::cmd::operator_read::OperatorRead,
    /// Only reads by this practitioner (the acting person a calling system named, or an operator).
    #[arg(long)]
    person: Option<String>,
    /// Only accesses to this child.
    #[command(flatten)]
    child: ChildArgs,
    /// Only calls made by this agency.
    #[arg(long)]
    agency: Option<String>,
    /// From this moment (RFC 3339 or a date), inclusive.
    #[arg(long)]
    from: Option<String>,
    /// Up to this moment (RFC 3339 or a date), inclusive.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    review_store: crate::cmd::common::ReviewStoreArgs,
    /// The nodes' tolerance for future-dated events (for the review store's read models).
    #[command(flatten)]
    future: crate::cmd::common::FutureToleranceArgs,
    /// Only accesses that relied on break-glass.
    #[arg(long)]
    break_glass: bool,
    /// Only break-glass accesses no review names yet (implies --break-glass).
    #[arg(long)]
    unreviewed: bool,
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    agencies: PathBuf,
    /// JSON lines (one access record per line, with its review) instead of text.
    #[arg(long)]
    json: bool,
}

/// What a reviewer found.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Outcome {
    Justified,
    NotJustified,
    Referred,
}

impl Outcome {
    fn to_pb(self) -> pb::BreakGlassReviewOutcome {
        match self {
            Outcome::Justified => pb::BreakGlassReviewOutcome::Justified,
            Outcome::NotJustified => pb::BreakGlassReviewOutcome::NotJustified,
            Outcome::Referred => pb::BreakGlassReviewOutcome::Referred,
        }
    }
}

#[derive(Debug, clap::Args)]
struct ReviewArgs {
    /// Reads the AUDIT stream and the agency streams (operator credentials).
    #[command(flatten)]
    nats: NatsArgs,
    /// The access record reviewed: its record id, as `halcyon audit access --break-glass` lists it.
    record: String,
    /// The nodes' tolerance for future-dated events.
    #[command(flatten)]
    future: crate::cmd::common::FutureToleranceArgs,
    #[arg(long, value_enum)]
    outcome: Outcome,
    /// Why: recorded with the review.
    #[arg(long)]
    reason: String,
    /// The reviewer's practitioner id.
    #[arg(long)]
    reviewer: String,
    /// The reviewer's agency: publishes the review on its own stream, as its own NATS user.
    #[arg(long, env = "HALCYON_REVIEWER_AGENCY")]
    reviewer_agency: String,
    /// The NATS password of the reviewer's agency user.
    #[arg(long, env = "HALCYON_REVIEWER_NATS_PASSWORD", hide_env_values = true)]
    reviewer_password: String,
    /// The case in the reviewer's agency stream that holds its reviews.
    #[arg(long, default_value = "access-reviews")]
    case: String,
    #[arg(long, env = "HALCYON_AGENCIES", default_value_os_t = deploy_path("agencies.toml"))]
    agencies: PathBuf,
}

fn moment(flag: &str, value: &str) -> Result<i64, Failure> {
    parse_timestamp(value)
        .map(|t| timestamp_millis(&t))
        .map_err(|e| config_error(anyhow!("--{flag}: {e}")))
}

fn at_text(ms: i64) -> String {
    format_timestamp(&timestamp_from_millis(ms))
}

fn registered(registry: &Registry, flag: &str, agency: &str) -> Result<(AgencyId, AgencyKind), Failure> {
    let known = || {
        registry
            .iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let id: AgencyId = agency
        .parse()
        .map_err(|e| config_error(anyhow!("--{flag}: {e} (registered: {})", known())))?;
    let entry = registry.get(&id).ok_or_else(|| {
        config_error(anyhow!(
            "--{flag}: unknown agency {agency:?} (registered: {})",
            known()
        ))
    })?;
    Ok((id, entry.kind))
}

async fn jetstream(nats: &NatsArgs, name: &str) -> Result<async_nats::jetstream::Context, Failure> {
    let client = halcyon_bus::connect(&nats.nats_url, &nats.credentials()?, name).await?;
    Ok(async_nats::jetstream::new(client))
}

fn categories(values: &[i32]) -> Vec<String> {
    values
        .iter()
        .filter_map(|v| Category::from_wire(*v))
        .map(|c| c.to_string())
        .collect()
}

fn projection_name(value: i32) -> String {
    pb::Projection::try_from(value)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("PROJECTION_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| value.to_string())
}

fn purpose_name(value: i32) -> String {
    pb::Purpose::try_from(value)
        .ok()
        .and_then(Purpose::from_pb)
        .map_or_else(|| "unspecified".to_owned(), |p| p.to_string())
}

fn outcome_name(value: i32) -> String {
    pb::AccessOutcome::try_from(value)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("ACCESS_OUTCOME_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| value.to_string())
}

fn review_outcome_name(value: i32) -> String {
    pb::BreakGlassReviewOutcome::try_from(value)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("BREAK_GLASS_REVIEW_OUTCOME_")
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| value.to_string())
}

fn record_ms(r: &pb::AccessRecord) -> i64 {
    r.at.as_ref().map(timestamp_millis).unwrap_or_default()
}

/// An access record as a JSON object.
fn record_json(kind: &str, located: &LocatedRecord, reviews: Option<&Vec<Review>>) -> serde_json::Value {
    let r = &located.record;
    let mut v = json!({
        "kind": kind,
        "record_id": r.record_id,
        "audit_sequence": located.sequence,
        "at": r.at.as_ref().map(format_timestamp),
        "agency_id": r.agency_id,
        "role": r.role,
        "principal_id": r.principal_id,
        "purpose": purpose_name(r.purpose),
        "method": r.method,
        "child_id": r.child_id,
        "outcome": outcome_name(r.outcome),
        "categories_disclosed": categories(&r.categories_disclosed),
        "categories_withheld": categories(&r.categories_withheld),
        "rules": r.rules,
        "policy_version": r.policy_version,
        "facts_disclosed": r.facts_disclosed,
        "facts_withheld": r.facts_withheld,
        "break_glass_reason": r.break_glass_reason,
        "break_glass_relied_on": r.break_glass_relied_on,
        "node_id": r.node_id,
        "request_id": r.request_id,
        "acting_person_id": r.acting_person_id,
        "acting_person_role": r.acting_person_role,
        "reason": r.reason,
    });
    if r.break_glass_relied_on {
        v["reviews"] = json!(
            reviews
                .map(|rs| rs.iter().map(review_json).collect::<Vec<_>>())
                .unwrap_or_default()
        );
    }
    v
}

fn review_json(r: &Review) -> serde_json::Value {
    json!({
        "agency_id": r.agency.as_str(),
        "reviewer_id": r.review.reviewer_id,
        "outcome": review_outcome_name(r.review.outcome),
        "reason": r.review.reason,
        "at": at_text(r.occurred_at_ms),
        "event_id": r.event_id,
        "position": r.position.to_string(),
    })
}

/// One line per access record, for people.
fn record_line(located: &LocatedRecord) -> String {
    let r = &located.record;
    let disclosed = categories(&r.categories_disclosed).join(" ");
    let withheld = categories(&r.categories_withheld).join(" ");
    let person = match (r.acting_person_id.as_str(), r.acting_person_role.as_str()) {
        ("", _) => String::new(),
        (id, "") => format!(" for {id}"),
        (id, role) => format!(" for {id} ({role})"),
    };
    let reason = if r.reason.is_empty() {
        String::new()
    } else {
        format!("  reason {:?}", r.reason)
    };
    format!(
        "{}  {}/{} ({}){person}  {}  {}  {}  shown [{}] withheld [{}]  rules {}  policy {}{reason}  record {} (AUDIT:{})",
        r.at.as_ref().map(format_timestamp).unwrap_or_default(),
        r.agency_id,
        r.principal_id,
        r.role,
        purpose_name(r.purpose),
        r.method,
        outcome_name(r.outcome),
        disclosed,
        withheld,
        r.rules.join(","),
        r.policy_version,
        r.record_id,
        located.sequence,
    )
}

/// A fact a deadline names, as a JSON object.
fn fact_ref_json(f: &halcyon_projector::deadlines::StoredFactRef) -> serde_json::Value {
    json!({
        "event_id": f.event_id,
        "event_type": f.event_type,
        "agency_id": f.agency_id,
        "case_id": f.case_id,
        "occurred_at": at_text(f.at_ms),
    })
}

/// A deadline as it stood then, as a JSON object: `margin` is how long was left (open), how early (met)
/// or how late (breached; to the moment, or to the fact that closed it); `late` is how late a breach was
/// as a person counts it in the rule's unit (`2 days`, `1 working day`, `3 hours`).
fn deadline_json(d: &DeadlineThen) -> serde_json::Value {
    let s = &d.deadline;
    json!({
        "kind": "deadline",
        "rule_id": s.rule_id,
        "rule_name": d.rule_name,
        "limit": d.limit,
        "state": d.standing.as_str(),
        "ending": ending_word(d),
        "started_by": s.started_by.as_ref().map(fact_ref_json),
        "due_at": at_text(s.due_at_ms),
        "first_breached_at": d.first_breached_ms.map(at_text),
        "margin": d.margin.map(|m| m.to_string()),
        "margin_units": d.margin.map(|m| m.units),
        "margin_ms": d.margin.map(|m| m.ms),
        "unit": d.margin.map(|m| m.unit.as_str()),
        "late": d.lateness.map(|l| l.to_string()),
        "ended_by": s.ended_by.as_ref().map(fact_ref_json),
        "beyond_calendar": s.beyond_calendar,
    })
}

/// `stopped` or `superseded` for a deadline a stop or a further start ended; else the state.
fn ending_word(d: &DeadlineThen) -> &'static str {
    use halcyon_projector::deadlines::Ending;
    match (d.standing, d.ending()) {
        (Standing::Stopped, Ending::Superseded) => "superseded",
        (Standing::StoppedLate, Ending::Superseded) => "superseded late",
        (standing, _) => standing.as_str(),
    }
}

/// One line per deadline, for people.
fn deadline_line(d: &DeadlineThen) -> String {
    let s = &d.deadline;
    let start = s.started_by.clone().unwrap_or_default();
    let margin = d.margin.map(|m| m.to_string()).unwrap_or_default();
    // `overdue by 1 working day`, `met 2 days late`.
    let late = d.late_phrase().unwrap_or_else(|| ending_word(d).to_owned());
    let state = match d.standing {
        Standing::Open => format!("open, {margin} left"),
        Standing::Met => format!("met, {margin} early"),
        Standing::Breached => format!(
            "BREACHED since {}, {late}",
            d.first_breached_ms.map(at_text).unwrap_or_default()
        ),
        Standing::MetLate | Standing::StoppedLate => format!(
            "BREACHED since {}; {late}",
            d.first_breached_ms.map(at_text).unwrap_or_default()
        ),
        Standing::Stopped => ending_word(d).to_owned(),
        Standing::Expiry => "expiry clock (never a breach)".to_owned(),
    };
    let mut out = format!(
        "{} {} ({})  started by {} {} ({}, case {}) at {}, due {}: {state}",
        s.rule_id,
        d.rule_name,
        d.limit,
        start.event_type,
        start.event_id,
        start.agency_id,
        start.case_id,
        at_text(start.at_ms),
        at_text(s.due_at_ms),
    );
    if let Some(by) = &s.ended_by {
        out.push_str(&format!(
            " (by {} {} at {})",
            by.event_type,
            by.event_id,
            at_text(by.at_ms)
        ));
    }
    if s.beyond_calendar {
        out.push_str(" [beyond the bank-holiday calendar]");
    }
    out
}

/// A fact a signal cites, as a JSON object.
fn signal_fact_json(f: &halcyon_projector::signals::SignalFact) -> serde_json::Value {
    json!({
        "event_id": f.event_id,
        "agency_id": f.agency_id,
        "occurred_at": at_text(f.at_ms),
        "position": format!("{}:{}", f.stream, f.sequence),
    })
}

fn signal_outcome_name(value: i32) -> String {
    pb::SignalOutcome::try_from(value)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("SIGNAL_OUTCOME_")
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| value.to_string())
}

/// A signal as it stood then, as a JSON object: `cited` are the references to every fact it cites, as the
/// agency was given them; `cited_unreadable` how many of those facts its view did not show then.
fn signal_json(s: &SignalThen) -> serde_json::Value {
    json!({
        "kind": "signal",
        "signal_id": s.id,
        "rule_id": s.signal.rule_id,
        "rule_name": s.rule_name,
        "rule_kind": s.rule_kind,
        "window_days": s.window_days,
        "first_fired_at": at_text(s.signal.fired_at_ms),
        "cited": s.signal.facts.iter().map(signal_fact_json).collect::<Vec<_>>(),
        "cited_unreadable": s.facts_withheld,
        "outcome": s.signal.outcome.as_ref().map(|o| json!({
            "outcome": signal_outcome_name(o.outcome),
            "agency_id": o.agency_id,
            "recorded_by": o.recorded_by,
            "fact": o.fact.as_ref().map(signal_fact_json),
        })),
        "permitted_by": s.permitted_by,
    })
}

/// One line per signal, for people.
fn signal_line(s: &SignalThen) -> String {
    let cited: Vec<String> = s
        .signal
        .facts
        .iter()
        .map(|f| format!("{} ({}, {})", f.event_id, f.agency_id, at_text(f.at_ms)))
        .collect();
    let mut out = format!(
        "{} {} ({}, {} days)  first fired {}; cites {}",
        s.signal.rule_id,
        s.rule_name,
        s.rule_kind,
        s.window_days,
        at_text(s.signal.fired_at_ms),
        cited.join(", ")
    );
    if s.facts_withheld > 0 {
        out.push_str(&format!(" ({} of them it could not read)", s.facts_withheld));
    }
    if let Some(o) = &s.signal.outcome {
        out.push_str(&format!(
            "; outcome {} by {}",
            signal_outcome_name(o.outcome),
            o.agency_id
        ));
    }
    out
}

pub async fn as_of(args: AsOfArgs) -> Result<(), Failure> {
    let at_ms = moment("at", &args.at)?;
    let timescales = args.timescales.load().map_err(config_error)?;
    let signal_rules = args.signals.load().map_err(config_error)?;
    let registry = load_registry(&args.agencies)?;
    let (agency, kind) = registered(&registry, "agency", &args.agency)?;
    let child_ref = args
        .child
        .parse()?
        .ok_or_else(|| config_error(anyhow!("say which child: --nhs, --upn or --child-id")))?;
    let (history, policy_source) = match &args.policy {
        Some(path) => (
            PolicyHistory::single(Policy::load(path).map_err(|e| config_error(anyhow!("{e}")))?),
            path.display().to_string(),
        ),
        None => (
            PolicyHistory::load(&args.policy_history).map_err(|e| config_error(anyhow!("{e}")))?,
            args.policy_history.display().to_string(),
        ),
    };
    let in_force = history
        .in_force_at(at_ms)
        .map_err(|e| config_error(anyhow!("{e} (per {policy_source})")))?;
    let role = args.role.unwrap_or(if kind == AgencyKind::Mash {
        Role::MashMember
    } else {
        Role::Practitioner
    });
    let principal = Principal {
        agency: agency.clone(),
        kind,
        role,
    };

    let js = jetstream(&args.nats, "halcyon audit as-of").await?;
    args.read
        .record(
            &js,
            "halcyon audit as-of",
            halcyon_policy::Purpose::StatutoryReview,
            Some(child_ref.named()),
        )
        .await?;
    let held = args
        .review_store
        .current(&js, args.future.ms(), &|_, _| {})
        .await?;
    let then = match &held {
        Some(store) => Reconstruction::held(store.clone(), at_ms),
        None => reconstruct(&js, at_ms, args.future.ms())
            .await
            .map_err(|e| anyhow!("{e}"))?,
    };
    let child = match &child_ref {
        ChildRef::Identifier(id) => then.child(id)?,
        ChildRef::Id(id) => (!then.facts(id)?.is_empty()).then_some(*id),
    }
    .ok_or_else(|| {
        anyhow!(
            "no event about the child with {} had been stored by {}",
            args.child.describe(),
            at_text(at_ms)
        )
    })?;
    let seen: AsOfView = then
        .could_see(&in_force.policy, &registry, &principal, args.purpose, child)?
        .expect("the child has facts");
    let deadlines = then.deadlines(&timescales, &seen)?;
    let signal_spec = halcyon_projector::SignalSpec::new(signal_rules, &registry);
    let signals = then.signals(&signal_spec, &in_force.policy, &principal, args.purpose, &seen)?;
    let accessed: Vec<LocatedRecord> = match &held {
        Some(store) => access_trail::indexed_records(
            store,
            &halcyon_projector::access_index::AccessSelection {
                child: Some(child),
                agency: Some(agency.to_string()),
                to_ms: Some(at_ms),
                ..Default::default()
            },
        )?,
        None => access_trail::access_records(&js)
            .await?
            .into_iter()
            .filter(|l| {
                l.record.agency_id == agency.as_str()
                    && l.record.child_id == child.to_string()
                    && record_ms(&l.record) <= at_ms
            })
            .collect(),
    };

    let stage: Vec<String> = StageTerm::ALL
        .iter()
        .filter(|t| t.holds(&seen.state.stage))
        .map(|t| t.to_string())
        .collect();
    let involvements: Vec<String> = seen.state.involvements.iter().map(|i| i.to_string()).collect();
    let in_force_from = if in_force.in_force_from_ms == i64::MIN {
        "always (--policy)".to_owned()
    } else {
        in_force.in_force_from()
    };
    if args.json {
        let mut lines = vec![json!({
            "kind": "as_of",
            "at": at_text(at_ms),
            "agency_id": agency.as_str(),
            "agency_kind": kind.as_str(),
            "role": role.as_str(),
            "purpose": args.purpose.as_str(),
            "child_id": child.to_string(),
            "policy_version": in_force.policy.version(),
            "policy_in_force_from": in_force_from,
            "policy_file": in_force.policy.file_name(),
            "events_stored": then.messages,
            "facts_held": seen.facts_held,
            "stage": stage,
            "involvements": involvements,
        })];
        for f in &seen.view.facts {
            lines.push(json!({
                "kind": "could_see",
                "event_id": f.event_id,
                "event_type": f.event_type,
                "agency_id": f.agency_id,
                "occurred_at": f.occurred_at.as_ref().map(format_timestamp),
                "category": categories(&[f.category]).first(),
                "projection": projection_name(f.projection),
                "rule": f.rule,
                "position": f.position.as_ref().map(|p| format!("{}:{}", p.stream, p.sequence)),
            }));
        }
        // Everything withheld, for the auditor; `told`: whether the agency was told such facts exist.
        for ((rule, category), (count, told)) in &seen.disclosure.withheld_all {
            lines.push(json!({
                "kind": "withheld",
                "rule": rule,
                "category": category.to_string(),
                "count": count,
                "told": told,
            }));
        }
        lines.extend(deadlines.iter().map(deadline_json));
        lines.extend(signals.iter().map(signal_json));
        for l in &accessed {
            lines.push(record_json("accessed", l, None));
        }
        for line in lines {
            println!("{line}");
        }
        return Ok(());
    }
    println!(
        "As of {}: what {agency} ({kind}, {role}) could see about child {child} for {}",
        at_text(at_ms),
        args.purpose
    );
    println!(
        "policy {} in force from {in_force_from} ({})",
        in_force.policy.version(),
        in_force.policy.file_name()
    );
    println!(
        "case stage then: {}; {agency}'s involvements: {}",
        if stage.is_empty() {
            "none".into()
        } else {
            stage.join(", ")
        },
        if involvements.is_empty() {
            "none".into()
        } else {
            involvements.join(", ")
        }
    );
    println!();
    println!(
        "could see {} of the {} facts held then:",
        seen.view.facts.len(),
        seen.facts_held
    );
    for f in &seen.view.facts {
        println!(
            "  {}  {:<32} {:<18} {:<4} {:<8} {}",
            f.occurred_at.as_ref().map(format_timestamp).unwrap_or_default(),
            f.event_type,
            f.agency_id,
            categories(&[f.category]).join(""),
            projection_name(f.projection),
            f.rule
        );
    }
    let withheld: u32 = seen.disclosure.withheld_all.values().map(|(n, _)| n).sum();
    println!(
        "withheld {withheld} (* the agency was told such facts exist; the others it could not know of):"
    );
    for ((rule, category), (count, told)) in &seen.disclosure.withheld_all {
        let mark = if *told { "*" } else { " " };
        println!("  {mark}{count} × {rule} ({category})");
    }
    println!();
    println!(
        "deadlines as they stood then ({}; those whose start fact {agency} could see, from the facts that had occurred by then):",
        deadlines.len()
    );
    for d in &deadlines {
        println!("  {}", deadline_line(d));
    }
    println!();
    println!(
        "signals as they stood then ({}; those the rules addressed to {agency} and the policy let it receive, with every cited fact's reference, as it was given them):",
        signals.len()
    );
    for s in &signals {
        println!("  {}", signal_line(s));
    }
    println!();
    println!(
        "accessed by {}: {} call(s) by {agency} about this child",
        at_text(at_ms),
        accessed.len()
    );
    for l in &accessed {
        println!("  {}", record_line(l));
        if l.record.break_glass_relied_on {
            println!("      break-glass: {:?}", l.record.break_glass_reason);
        }
    }
    Ok(())
}

pub async fn access(args: AccessArgs) -> Result<(), Failure> {
    match args.command.map(|c| *c) {
        Some(AccessCommand::Review(review)) => record_review(review).await,
        None => list(*args.list).await,
    }
}

async fn list(args: ListArgs) -> Result<(), Failure> {
    let from = args.from.as_deref().map(|t| moment("from", t)).transpose()?;
    let to = args.to.as_deref().map(|t| moment("to", t)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(config_error(anyhow!("--from is after --to")));
    }
    let agency = match &args.agency {
        Some(a) => {
            let registry = load_registry(&args.agencies)?;
            Some(registered(&registry, "agency", a)?.0)
        }
        None => None,
    };
    // Access records name the child by the id its identifier denoted when the call was made.
    let child = args.child.parse()?.map(|c| match c {
        ChildRef::Identifier(Identifier::Nhs(n)) => ChildId::from_nhs(&n),
        ChildRef::Identifier(Identifier::Upn(u)) => ChildId::from_upn(&u),
        ChildRef::Identifier(Identifier::Local { agency, local_id }) => {
            ChildId::from_local(&agency, &local_id)
        }
        ChildRef::Id(id) => id,
    });
    let break_glass_only = args.break_glass || args.unreviewed;

    let js = jetstream(&args.nats, "halcyon audit access").await?;
    args.read
        .record(&js, "halcyon audit access", halcyon_policy::Purpose::Audit, child)
        .await?;
    // From a review store's index of AUDIT when one is named (the selection's records only), else the
    // whole stream.
    let records = match args
        .review_store
        .current(&js, args.future.ms(), &|_, _| {})
        .await?
    {
        Some(store) => access_trail::indexed_records(
            &store,
            &halcyon_projector::access_index::AccessSelection {
                child,
                agency: agency.as_ref().map(ToString::to_string),
                from_ms: from,
                to_ms: to,
                ..Default::default()
            },
        )?,
        None => access_trail::access_records(&js).await?,
    };
    let reviews = if break_glass_only || records.iter().any(|r| r.record.break_glass_relied_on) {
        access_trail::reviews(&js).await?
    } else {
        BTreeMap::new()
    };
    let selected: Vec<&LocatedRecord> = records
        .iter()
        .filter(|l| child.is_none_or(|c| l.record.child_id == c.to_string()))
        .filter(|l| agency.as_ref().is_none_or(|a| l.record.agency_id == a.as_str()))
        .filter(|l| {
            args.person
                .as_ref()
                .is_none_or(|p| l.record.acting_person_id == p.trim())
        })
        .filter(|l| {
            let at = record_ms(&l.record);
            from.is_none_or(|f| at >= f) && to.is_none_or(|t| at <= t)
        })
        .filter(|l| !break_glass_only || l.record.break_glass_relied_on)
        .filter(|l| !args.unreviewed || !reviews.contains_key(&l.record.record_id))
        .collect();

    if args.json {
        for l in &selected {
            println!("{}", record_json("access", l, reviews.get(&l.record.record_id)));
        }
        return Ok(());
    }
    let flagged = selected.iter().filter(|l| l.record.break_glass_relied_on).count();
    let unreviewed = selected
        .iter()
        .filter(|l| l.record.break_glass_relied_on && !reviews.contains_key(&l.record.record_id))
        .count();
    let denied = selected
        .iter()
        .filter(|l| l.record.outcome != pb::AccessOutcome::Permitted as i32)
        .count();
    let mut scope = Vec::new();
    if let Some(c) = &child {
        scope.push(format!("child {c}"));
    }
    if let Some(a) = &agency {
        scope.push(format!("calls by {a}"));
    }
    if let Some(f) = from {
        scope.push(format!("from {}", at_text(f)));
    }
    if let Some(t) = to {
        scope.push(format!("to {}", at_text(t)));
    }
    println!(
        "access log{}: {} record(s), {denied} with nothing disclosed; {flagged} break-glass, {unreviewed} unreviewed",
        if scope.is_empty() {
            String::new()
        } else {
            format!(" ({})", scope.join(", "))
        },
        selected.len()
    );
    for l in &selected {
        println!("{}", record_line(l));
        if l.record.break_glass_relied_on {
            match reviews.get(&l.record.record_id) {
                None => println!(
                    "    ! BREAK-GLASS, unreviewed: {:?}  (review: halcyon audit access review {} --outcome … --reason …)",
                    l.record.break_glass_reason, l.record.record_id
                ),
                Some(rs) => {
                    println!("    ! BREAK-GLASS: {:?}", l.record.break_glass_reason);
                    for r in rs {
                        println!(
                            "      reviewed {} by {}/{}: {} — {:?}",
                            at_text(r.occurred_at_ms),
                            r.agency,
                            r.review.reviewer_id,
                            review_outcome_name(r.review.outcome),
                            r.review.reason
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

async fn record_review(args: ReviewArgs) -> Result<(), Failure> {
    let registry = load_registry(&args.agencies)?;
    let (reviewer_agency, _) = registered(&registry, "reviewer-agency", &args.reviewer_agency)?;
    let case: CaseId = args
        .case
        .parse()
        .map_err(|e| config_error(anyhow!("--case: {e}")))?;
    if args.reason.trim().is_empty() {
        return Err(config_error(anyhow!("--reason: say why")));
    }
    if args.reviewer.trim().is_empty() {
        return Err(config_error(anyhow!("--reviewer: say who reviews")));
    }
    let js = jetstream(&args.nats, "halcyon audit access review").await?;
    let record = access_trail::access_records(&js)
        .await?
        .into_iter()
        .find(|l| l.record.record_id == args.record)
        .ok_or_else(|| anyhow!("no access record {} in the AUDIT stream", args.record))?;
    if !record.record.break_glass_relied_on {
        return Err(anyhow!(
            "access record {} ({} {} by {}) did not rely on break-glass: only break-glass uses are reviewed",
            args.record,
            record.record.method,
            record
                .record
                .at
                .as_ref()
                .map(format_timestamp)
                .unwrap_or_default(),
            record.record.agency_id
        )
        .into());
    }
    // The review is filed with the child the access concerned, by an identifier every agency shares.
    let child: ChildId = record
        .record
        .child_id
        .parse()
        .map_err(|e| anyhow!("access record {} names no child: {e}", args.record))?;
    let now = reconstruct(&js, i64::MAX, args.future.ms())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let facts = now.facts(&child)?;
    let identifiers = facts
        .iter()
        .filter_map(|f| f.envelope.child.as_ref())
        .find(|c| !c.nhs_number.is_empty())
        .or_else(|| {
            facts
                .iter()
                .filter_map(|f| f.envelope.child.as_ref())
                .find(|c| !c.upn.is_empty())
        })
        .cloned()
        .ok_or_else(|| {
            anyhow!("child {child} has no NHS number or UPN on record, so the review cannot be filed with it")
        })?;
    let earlier: Vec<&halcyon_projector::Fact> = facts
        .iter()
        .filter(|f| {
            matches!(f.kind(), Some(Kind::BreakGlassReviewed(r)) if r.access_record_id == record.record.record_id)
        })
        .collect();
    for f in &earlier {
        eprintln!(
            "note: already reviewed by {} on {}; recording another review",
            f.envelope.agency_id,
            at_text(f.occurred_ms())
        );
    }
    let decision = ReviewDecision {
        agency: reviewer_agency.clone(),
        case,
        reviewer_id: args.reviewer.trim().to_owned(),
        outcome: args.outcome.to_pb(),
        reason: args.reason.trim().to_owned(),
    };
    let envelope =
        access_trail::review_envelope(&record, identifiers, &decision, halcyon_schema::clock::now_ms());
    let (client, violations) = connect_watching(
        &args.nats.nats_url,
        &Credentials::agency(reviewer_agency.as_str(), &args.reviewer_password),
        "halcyon audit access review",
    )
    .await?;
    let publisher = Publisher::new(
        client,
        PublisherConfig {
            agency: Some(reviewer_agency.clone()),
            ..Default::default()
        },
    )
    .with_violations(violations);
    let published = publisher
        .publish(&envelope, None)
        .await
        .map_err(|e| anyhow!("the review was not recorded: {e}"))?;
    println!(
        "reviewed access record {} (break-glass by {} at {}): {} — recorded as event {} at {}",
        record.record.record_id,
        record.record.agency_id,
        record
            .record
            .at
            .as_ref()
            .map(format_timestamp)
            .unwrap_or_default(),
        review_outcome_name(decision.outcome as i32),
        envelope.event_id,
        published.position
    );
    Ok(())
}
