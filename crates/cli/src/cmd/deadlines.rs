//! `halcyon deadlines`: breaches of statutory timescales the calling agency may know of — its own, and
//! those whose start fact the sharing policy lets it see — with the rule, the start fact, the due time and
//! how late; `--watch` then follows new breaches and late closures as the node notices them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use futures::StreamExt;
use halcyon_grpc::pb::{self, deadline_service_client::DeadlineServiceClient};
use halcyon_schema::convert::format_timestamp;
use halcyon_timescales::{BreachEnd, Calendar, RuleSet, Timescales};

use super::common::{ApiArgs, refused};
use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    api: ApiArgs,
    /// Only this child's breaches (its child id).
    #[arg(long)]
    child: Option<String>,
    /// Only breaches still open.
    #[arg(long)]
    open: bool,
    /// Why you are asking: safeguarding, direct_care, law_enforcement, statutory_review, audit.
    #[arg(long, default_value = "safeguarding")]
    purpose: halcyon_policy::Purpose,
    /// Then follow the node's watch stream and print each breach as it is noticed (until interrupted).
    #[arg(long)]
    watch: bool,
    /// JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

/// The statutory timescales a node (and a rebuild or an export, which must use the same) derives deadlines
/// with: rule tables and a bank-holiday calendar, all data (`deploy/timescales/`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TimescaleArgs {
    /// Timescale rules (docs/domain.md §3): the base table, then local tables merged into it (repeatable, or
    /// comma-separated). Default: the shipped England table.
    #[arg(long = "timescales", env = "HALCYON_TIMESCALES", value_delimiter = ',')]
    pub timescales: Vec<PathBuf>,
    /// The bank-holiday calendar working days are counted on. Default: the shipped England and Wales one.
    #[arg(long, env = "HALCYON_BANK_HOLIDAYS")]
    pub bank_holidays: Option<PathBuf>,
}

impl TimescaleArgs {
    /// Loads and checks the files; an error names the file, line and reason.
    pub fn load(&self) -> anyhow::Result<Arc<Timescales>> {
        let calendar = match &self.bank_holidays {
            Some(path) => Calendar::load(path).map_err(|e| anyhow!("bank_holidays: {e}"))?,
            None => Calendar::england_and_wales(),
        };
        let rules = match self.timescales.split_first() {
            None => RuleSet::england(),
            Some((base, local)) => {
                let mut rules = RuleSet::load(base).map_err(|e| anyhow!("timescales: {e}"))?;
                for path in local {
                    let more = RuleSet::load(path).map_err(|e| anyhow!("timescales: {e}"))?;
                    rules = rules.merge(more).map_err(|e| anyhow!("timescales: {e}"))?;
                }
                rules
            }
        };
        Ok(Arc::new(
            Timescales::new(calendar, rules).map_err(|e| anyhow!("timescales: {e}"))?,
        ))
    }
}

fn context(purpose: halcyon_policy::Purpose) -> pb::RequestContext {
    pb::RequestContext {
        purpose: purpose.to_pb() as i32,
        ..Default::default()
    }
}

/// One line: `T01 referral decision (1 working day) child … started by ReferralReceived … due …: …`.
pub fn line(b: &pb::DeadlineBreach) -> String {
    let start = b.started_by.clone().unwrap_or_default();
    let at =
        |t: &Option<halcyon_schema::convert::Timestamp>| t.as_ref().map(format_timestamp).unwrap_or_default();
    let end = match b.resolution() {
        pb::BreachResolution::MetLate => BreachEnd::Met,
        pb::BreachResolution::Stopped => BreachEnd::Stopped,
        pb::BreachResolution::Superseded => BreachEnd::Superseded,
        _ => BreachEnd::StillOpen,
    };
    // The node words how late (`2 working days`); the line says what that was: `met 2 working days late`.
    let late = if b.late.is_empty() {
        format!("{} ms", b.late_ms)
    } else {
        b.late.clone()
    };
    let mut out = format!(
        "{} {} ({}) child {} started by {} {} ({}, case {}) at {}, due {}: {}",
        b.rule_id,
        b.rule_name,
        b.limit,
        b.child_id,
        start.event_type,
        start.event_id,
        start.agency_id,
        start.case_id,
        at(&start.occurred_at),
        at(&b.due_at),
        end.phrase(&late),
    );
    if let Some(by) = &b.resolved_by {
        out.push_str(&format!(
            " (by {} {} at {})",
            by.event_type,
            by.event_id,
            at(&by.occurred_at)
        ));
    }
    if b.beyond_calendar {
        out.push_str(" [beyond the bank-holiday calendar]");
    }
    out
}

fn print(b: &pb::DeadlineBreach, json: bool) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string(b)?);
    } else {
        println!("{}", line(b));
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let mut client = DeadlineServiceClient::connect(args.api.api.clone())
        .await
        .map_err(|e| anyhow!("cannot reach the halcyon node at {}: {e}", args.api.api))?;
    // Every page, in order (a listing without a child comes a page at a time).
    let (mut breaches, mut evaluated_at, mut page_token) = (Vec::new(), None, String::new());
    loop {
        let request = args.api.request(pb::ListBreachesRequest {
            context: Some(context(args.purpose)),
            child_id: args.child.clone().unwrap_or_default(),
            open_only: args.open,
            page_size: 0,
            page_token: std::mem::take(&mut page_token),
        })?;
        let listed = client.list_breaches(request).await.map_err(refused)?.into_inner();
        evaluated_at = evaluated_at.or(listed.evaluated_at);
        breaches.extend(listed.breaches);
        if listed.next_page_token.is_empty() {
            break;
        }
        page_token = listed.next_page_token;
    }
    if !args.json {
        let at = evaluated_at.as_ref().map(format_timestamp).unwrap_or_default();
        println!("{} breach(es) as of {at}", breaches.len());
    }
    for b in &breaches {
        print(b, args.json)?;
    }
    if !args.watch {
        return Ok(());
    }
    let mut watch = args
        .api
        .client()
        .await?
        .watch(args.api.request(pb::WatchRequest {
            context: Some(context(args.purpose)),
            ..Default::default()
        })?)
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(event) = watch.next().await {
        let event = event.map_err(refused)?;
        if let Some(pb::watch_event::Kind::Breach(b)) = event.kind {
            let wanted = args.child.as_ref().is_none_or(|c| *c == b.child_id)
                && (!args.open || b.resolution() == pb::BreachResolution::Open);
            if wanted {
                print(&b, args.json)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use halcyon_schema::convert::timestamp_from_millis;

    use super::*;

    #[test]
    fn a_breach_reads_as_rule_start_fact_due_time_and_lateness() {
        let breach = pb::DeadlineBreach {
            child_id: "c-1".into(),
            rule_id: "T01".into(),
            rule_name: "referral decision".into(),
            limit: "1 working day".into(),
            started_by: Some(pb::FactReference {
                event_id: "e-1".into(),
                event_type: "ReferralReceived".into(),
                agency_id: "csc-rotherham".into(),
                case_id: "CASE-8".into(),
                occurred_at: Some(timestamp_from_millis(1_772_445_600_000)),
            }),
            due_at: Some(timestamp_from_millis(1_772_582_399_999)),
            late_ms: 122_400_001,
            late_units: 2,
            late: "2 working days".into(),
            resolution: pb::BreachResolution::MetLate as i32,
            resolved_by: Some(pb::FactReference {
                event_id: "e-2".into(),
                event_type: "ReferralDecisionRecorded".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = line(&breach);
        assert!(
            text.starts_with(
                "T01 referral decision (1 working day) child c-1 started by ReferralReceived e-1"
            ),
            "{text}"
        );
        assert!(
            text.contains(": met 2 working days late (by ReferralDecisionRecorded e-2"),
            "{text}"
        );
        assert!(text.contains("due 2026-03-03T23:59:59"), "{text}");
    }
}
