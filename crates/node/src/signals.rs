//! Multi-agency signals on a node ("joining the dots", ARCHITECTURE.md): signal notices on the watch stream and
//! `SignalService.ListSignals`. A signal goes to a caller only when both say so (default deny): the rule
//! file names the caller as a recipient (its agency kind, or the child's lead authority), and the sharing
//! policy entitles the caller to the signal's category (`category` in the rule file, D11 by default) for
//! the child, for the stated purpose — decided like a fact recorded by no agency, so no agency's "own
//! records" rule applies. A signal cites facts by reference only; the reader fetches each fact through
//! `GetChildView`, where the policy decides it as always. An access record is written before any signal
//! is shown.

use std::collections::BTreeMap;
use std::sync::Arc;

use halcyon_grpc::pb::{self, signal_service_server::SignalService};
use halcyon_policy::{Fact as PolicyFact, Request, decide};
use halcyon_projector::read::ChildFacts;
use halcyon_projector::signals::{ChildSignals, SignalFact, StoredSignal};
use halcyon_projector::{SignalNotice, SignalSpec};
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::{AgencyId, ChildId};
use halcyon_signals::SignalRules;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tonic::{Request as GrpcRequest, Response, Status};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::events::{Events, NodeEvent};
use crate::gate::Pass;
use crate::query::{Context, Query};
use halcyon_projector::disclose::Disclosure;

/// Runs until `shutdown`: tells watchers of every signal that fires or whose outcome is recorded.
pub async fn run(
    mut notices: broadcast::Receiver<SignalNotice>,
    events: Events,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            notice = notices.recv() => match notice {
                Ok(notice) => {
                    // Rule only: the child and the facts are personal data.
                    tracing::info!(
                        rule = %notice.signal.rule_id,
                        outcome = notice.signal.outcome.is_some(),
                        withdrawn = notice.signal.withdrawn.is_some(),
                        "signal"
                    );
                    metrics.signals.with_label_values(&[notice.signal.rule_id.as_str()]).inc();
                    // No receivers is fine: nobody is watching.
                    let _ = events.send(NodeEvent::Signal { notice: Arc::new(notice) });
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "signal notices dropped for watchers; the records stand");
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

fn fact_pb(f: &SignalFact) -> pb::SignalFactReference {
    pb::SignalFactReference {
        agency_id: f.agency_id.clone(),
        stream: f.stream.clone(),
        sequence: f.sequence,
        event_id: f.event_id.clone(),
        occurred_at: Some(timestamp_from_millis(f.at_ms)),
    }
}

/// A stored signal on the wire: the rule's name, kind, window and source from the rule file.
pub fn signal_pb(rules: &SignalRules, child: ChildId, s: &StoredSignal) -> pb::Signal {
    let rule = rules.get(&s.rule_id);
    pb::Signal {
        signal_id: s.id(),
        child_id: child.to_string(),
        rule_id: s.rule_id.clone(),
        rule_name: rule.map(|r| r.name.clone()).unwrap_or_default(),
        rule_kind: rule.map(|r| r.kind.as_str().to_owned()).unwrap_or_default(),
        window_days: rule.map_or(0, |r| r.window_days),
        source: rule.map(|r| r.source.clone()).unwrap_or_default(),
        fired_at: Some(timestamp_from_millis(s.fired_at_ms)),
        facts: s.facts.iter().map(fact_pb).collect(),
        outcome: s.outcome.as_ref().map(|o| pb::SignalOutcomeRecord {
            outcome: o.outcome,
            agency_id: o.agency_id.clone(),
            recorded_by: o.recorded_by.clone(),
            fact: o.fact.as_ref().map(fact_pb),
        }),
        withdrawn: s.withdrawn.as_ref().map(|w| pb::SignalWithdrawal {
            withdrawn_event_id: w.withdrawn_event_id.clone(),
            correction_event_id: w.correction_event_id.clone(),
            withdrawn_at: Some(timestamp_from_millis(w.withdrawn_at_ms)),
        }),
        replaces: s.replaces.clone(),
    }
}

/// The permit's rule when `caller` receives signals of `rule_id` about a child with these facts: the rule
/// addresses the caller (its kind, or it is the lead authority) and the policy grants the signal category.
fn entitled(
    query: &Query,
    spec: &SignalSpec,
    caller: &Caller,
    ctx: &Context,
    facts: &ChildFacts,
    rule_id: &str,
) -> Option<String> {
    let rule = spec.rules.get(rule_id)?;
    let agency = &caller.principal.agency;
    // The lead authority as the child's facts say now (the same fold the policy decides on).
    let lead = facts.sharing.owner.as_ref() == Some(agency);
    if !rule.addresses(caller.principal.kind, lead) {
        return None;
    }
    let originator: AgencyId = halcyon_projector::signals::SIGNAL_ORIGINATOR
        .parse()
        .expect("a valid agency id");
    let fact = PolicyFact::new(spec.rules.category(), originator);
    let state = spec.state_for(&facts.sharing, agency);
    let decision = decide(
        &query.policy,
        &Request {
            principal: &caller.principal,
            purpose: ctx.purpose,
            fact: &fact,
            state: &state,
            break_glass: None,
            now_ms: halcyon_schema::clock::now_ms(),
        },
    );
    decision.is_permit().then(|| decision.rule().to_owned())
}

/// The signals of one child that `caller` receives. One access record covering them is written before
/// they are returned; none when there is nothing to show.
pub async fn disclosed(
    query: &Query,
    pass: &Pass,
    child: ChildId,
    signals: &[StoredSignal],
) -> Result<Vec<pb::Signal>, ApiError> {
    let projector = query.projector.get();
    let Some(spec) = projector.signal_spec() else {
        return Ok(Vec::new());
    };
    if signals.is_empty() {
        return Ok(Vec::new());
    }
    let facts = query.child_facts(child).await?;
    let mut disclosure = Disclosure::default();
    let mut shown = Vec::new();
    for s in signals {
        let Some(rule) = entitled(query, spec, &pass.caller, &pass.ctx, &facts, &s.rule_id) else {
            continue;
        };
        disclosure.categories_disclosed.insert(spec.rules.category());
        disclosure.rules.insert(rule);
        disclosure.facts_disclosed += 1;
        shown.push(signal_pb(&spec.rules, child, s));
    }
    if shown.is_empty() {
        return Ok(shown);
    }
    query
        .record(pass, Some(child), &disclosure, pb::AccessOutcome::Permitted)
        .await?;
    Ok(shown)
}

/// The watch event `caller` receives for a signal notice, if any.
pub async fn watched_signal(
    query: &Query,
    pass: &Pass,
    notice: &SignalNotice,
) -> Result<Option<pb::WatchEvent>, ApiError> {
    let shown = disclosed(query, pass, notice.child, std::slice::from_ref(&notice.signal)).await?;
    Ok(shown.into_iter().next().map(|signal| pb::WatchEvent {
        child_id: notice.child.to_string(),
        kind: Some(pb::watch_event::Kind::Signal(signal)),
        ..Default::default()
    }))
}

/// `SignalService`: signals for their recipients.
#[derive(Debug, Clone)]
pub struct Signals {
    pub query: Query,
}

/// Children's signal records a listing without a child looks at per call, unless it asks for another size.
const SIGNAL_PAGE_DEFAULT: u32 = 100;
const SIGNAL_PAGE_MAX: u32 = 1000;

#[tonic::async_trait]
impl SignalService for Signals {
    async fn list_signals(
        &self,
        request: GrpcRequest<pb::ListSignalsRequest>,
    ) -> Result<Response<pb::ListSignalsResponse>, Status> {
        let (pass, req) = self.query.gate(request).await?;
        let child = self.query.listing(&pass, &req.child_id, "signals")?;
        let page = match req.page_size {
            0 => SIGNAL_PAGE_DEFAULT,
            n if n > SIGNAL_PAGE_MAX => {
                return Err(
                    ApiError::Invalid(format!("page_size {n} is over the cap of {SIGNAL_PAGE_MAX}")).into(),
                );
            }
            n => n,
        } as usize;
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .parse::<ChildId>()
                    .map_err(|_| ApiError::Invalid("page_token is not one this node issued".into()))?,
            ),
        };
        let projector = self.query.projector.get();
        let (all, next): (Vec<(ChildId, ChildSignals)>, Option<ChildId>) =
            tokio::task::spawn_blocking(move || match child {
                Some(child) => projector.signals(Some(&child)).map(|all| (all, None)),
                None => projector.signals_page(after.as_ref(), page),
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)?;
        let mut by_child: BTreeMap<ChildId, ChildSignals> = BTreeMap::new();
        for (child, mut record) in all {
            if req.open_only {
                record
                    .signals
                    .retain(|s| s.outcome.is_none() && s.withdrawn.is_none());
            }
            if !record.signals.is_empty() {
                by_child.insert(child, record);
            }
        }
        let mut signals = Vec::new();
        for (child, record) in by_child {
            signals.extend(disclosed(&self.query, &pass, child, &record.signals).await?);
        }
        let answer = pb::ListSignalsResponse {
            signals,
            next_page_token: next.map(|c| c.to_string()).unwrap_or_default(),
        };
        pass.answer(&self.query, child, answer).await
    }
}
