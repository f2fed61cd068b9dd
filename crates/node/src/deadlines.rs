//! Statutory deadlines on a node (ARCHITECTURE.md): the timer that records breaches when the clock passes a
//! deadline's due time (and, on start, those missed while the node was down), breach notices on the watch
//! stream, and `DeadlineService.ListBreaches`. Every breach shown names its start fact by reference and is
//! shown only to a caller the policy lets see that fact (the owning agency, or one entitled to it), after
//! an access record is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use halcyon_grpc::pb::{self, deadline_service_server::DeadlineService};
use halcyon_projector::deadlines::{Ending, StoredDeadline, StoredFactRef, occurrences};
use halcyon_projector::{BreachNotice, Projector, ProjectorError};
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::{Category, ChildId};
use halcyon_timescales::{Status, Timescales, evaluate};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status as GrpcStatus};

use crate::error::ApiError;
use crate::events::{Events, NodeEvent};
use crate::gate::Pass;
use crate::query::Query;
use halcyon_projector::clock::Clock;
use halcyon_projector::disclose::{Asker, Disclosure, view_of};

/// After a failure to read or write the read models, the timer tries again this much later.
pub const RETRY_MS: i64 = 5_000;

/// Runs until `shutdown`: records breaches as the clock passes their due times — at start those missed
/// while the node was down, then at each next due time, re-reading it whenever a derivation indexes a new
/// deadline — and tells watchers of every breach recorded or closed. Before it records anything it checks its
/// clock against NATS time (`guard`): beyond the bound it records nothing until the clock is back, so a
/// clock set ahead records no breach early, and one set back records nothing twice.
pub async fn run(
    projector: Arc<Projector>,
    clock: Clock,
    events: Events,
    guard: Option<Arc<crate::peers::Membership>>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let Some(spec) = projector.deadline_spec() else {
        return;
    };
    let mut due = spec.subscribe_due();
    let mut notices = spec.subscribe_notices();
    loop {
        if let Some(guard) = &guard
            && !guard.clock_in_bounds(&projector).await
        {
            // Nothing is recorded meanwhile; notices of breaches closed by new facts still go out.
            let back = guard.until_clock_in_bounds();
            tokio::pin!(back);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut back => break,
                    notice = notices.recv() => if !forward(notice, &events, &clock) {
                        return;
                    },
                }
            }
            continue;
        }
        let (p, now_ms, to_watchers) = (projector.clone(), clock.now_ms(), events.clone());
        let counted = metrics.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            let n = p.record_all_breaches_announcing(now_ms, |notices| {
                for notice in notices {
                    counted
                        .breaches
                        .with_label_values(&[notice.deadline.rule_id.as_str()])
                        .inc();
                    // No receivers is fine: nobody is watching.
                    let _ = to_watchers.send(NodeEvent::Breach {
                        notice: Arc::new(notice),
                        at_ms: now_ms,
                    });
                }
            })?;
            Ok::<_, ProjectorError>((n, p.next_due_ms()?))
        })
        .await;
        let next_ms = match recorded {
            Ok(Ok((n, next))) => {
                if n > 0 {
                    tracing::info!(breaches = n, "deadlines passed");
                }
                next.map(|due_ms| due_ms.saturating_add(1))
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "recording breaches failed; will retry");
                Some(now_ms.saturating_add(RETRY_MS))
            }
            Err(e) => {
                tracing::error!(error = %e, "the deadline timer panicked; will retry");
                Some(now_ms.saturating_add(RETRY_MS))
            }
        };
        let wake = async {
            match next_ms {
                Some(at_ms) => clock.sleep_until(at_ms).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut wake => break,
                changed = due.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                notice = notices.recv() => if !forward(notice, &events, &clock) {
                    return;
                },
            }
        }
    }
}

/// Passes a breach notice on to watchers (none watching is fine); `false` once the notices have ended.
fn forward(notice: Result<BreachNotice, RecvError>, events: &Events, clock: &Clock) -> bool {
    match notice {
        Ok(notice) => {
            let _ = events.send(NodeEvent::Breach {
                notice: Arc::new(notice),
                at_ms: clock.now_ms(),
            });
            true
        }
        Err(RecvError::Lagged(n)) => {
            tracing::warn!(
                missed = n,
                "breach notices dropped for watchers; the records stand"
            );
            true
        }
        Err(RecvError::Closed) => false,
    }
}

fn fact_ref(f: &StoredFactRef) -> pb::FactReference {
    pb::FactReference {
        event_id: f.event_id.clone(),
        event_type: f.event_type.clone(),
        agency_id: f.agency_id.clone(),
        case_id: f.case_id.clone(),
        occurred_at: Some(timestamp_from_millis(f.at_ms)),
    }
}

fn resolution(d: &StoredDeadline) -> pb::BreachResolution {
    match d.ending() {
        Ending::Running | Ending::Expiry => pb::BreachResolution::Open,
        Ending::Met => pb::BreachResolution::MetLate,
        Ending::Stopped => pb::BreachResolution::Stopped,
        Ending::Superseded => pb::BreachResolution::Superseded,
    }
}

/// A breach as shown at `at_ms`: how late is measured to the resolving fact, or to `at_ms` while open.
fn breach_pb(
    timescales: &Timescales,
    child: ChildId,
    d: &StoredDeadline,
    occurrences: &[halcyon_timescales::Occurrence],
    at_ms: i64,
    show_resolver: bool,
) -> pb::DeadlineBreach {
    let rule = timescales.rules().get(&d.rule_id);
    let end_ms = d.ended_by.as_ref().map(|f| f.at_ms);
    let moment = end_ms.map_or(at_ms, |end| end.max(at_ms));
    let evaluation = evaluate(timescales, occurrences, moment);
    let key = d.key();
    let late = evaluation
        .deadlines
        .iter()
        .find(|e| e.key() == key)
        .and_then(|e| match &e.status {
            Status::Breached { late, .. } => Some((*late, e.lateness)),
            _ => None,
        });
    // `late` in words as a person counts it in the rule's unit (`2 days`, `1 working day`, `3 hours`).
    let (late_ms, late_units, late_text) = match late {
        Some((m, words)) => (m.ms, m.units, words.map(|w| w.to_string()).unwrap_or_default()),
        None => ((end_ms.unwrap_or(at_ms) - d.due_at_ms).max(0), 0, String::new()),
    };
    pb::DeadlineBreach {
        child_id: child.to_string(),
        rule_id: d.rule_id.clone(),
        rule_name: rule.map(|r| r.name.clone()).unwrap_or_default(),
        limit: rule.map(|r| r.limit_text()).unwrap_or_default(),
        started_by: d.started_by.as_ref().map(fact_ref),
        due_at: Some(timestamp_from_millis(d.due_at_ms)),
        late_ms,
        late_units,
        late: late_text,
        resolution: resolution(d) as i32,
        resolved_by: d.ended_by.as_ref().filter(|_| show_resolver).map(fact_ref),
        beyond_calendar: d.beyond_calendar,
        evaluated_at: Some(timestamp_from_millis(at_ms)),
    }
}

/// The breaches of one child that `caller` may know of: each only if the policy lets the caller see the
/// fact that started it (the resolving fact is named only if it may see that too). One access record
/// covering them is written before they are returned.
pub async fn disclosed(
    query: &Query,
    pass: &Pass,
    child: ChildId,
    deadlines: &[StoredDeadline],
    at_ms: i64,
) -> Result<Vec<pb::DeadlineBreach>, ApiError> {
    let (caller, ctx) = (&pass.caller, &pass.ctx);
    let projector = query.projector.get();
    let Some(spec) = projector.deadline_spec() else {
        return Ok(Vec::new());
    };
    let facts = query.child_facts(child).await?;
    let occurrences = occurrences(&facts.facts);
    let asker = Asker {
        break_glass: None,
        ..query.asker(caller, ctx)
    };
    // Only the facts that started or ended these deadlines are decided (the state comes from all of them).
    let candidates: std::collections::BTreeSet<&str> = deadlines
        .iter()
        .flat_map(|d| d.started_by.iter().chain(&d.ended_by))
        .map(|f| f.event_id.as_str())
        .collect();
    let of = |ids: &std::collections::BTreeSet<&str>| -> Vec<usize> {
        (0..facts.facts.len())
            .filter(|&i| ids.contains(facts.facts[i].envelope.event_id.as_str()))
            .collect()
    };
    let (view, _) = view_of(&asker, child, &facts, of(&candidates));
    let visible: BTreeMap<&str, &pb::VisibleFact> =
        view.facts.iter().map(|f| (f.event_id.as_str(), f)).collect();
    let mut disclosure = Disclosure::default();
    let mut shown = Vec::new();
    // The facts a shown breach discloses (its start, and what ended it).
    let mut cited: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for d in deadlines {
        let Some(start) = d
            .started_by
            .as_ref()
            .and_then(|f| visible.get(f.event_id.as_str()))
            .filter(|f| halcyon_projector::disclose::tells_deadline(f))
        else {
            continue;
        };
        let resolver = d.ended_by.as_ref().and_then(|f| visible.get(f.event_id.as_str()));
        for f in std::iter::once(start).chain(resolver) {
            cited.insert(f.event_id.as_str());
            if let Some(category) = Category::from_wire(f.category) {
                disclosure.categories_disclosed.insert(category);
            }
            disclosure.rules.insert(f.rule.clone());
        }
        disclosure.facts_disclosed += 1;
        shown.push(breach_pb(
            &spec.timescales,
            child,
            d,
            &occurrences,
            at_ms,
            resolver.is_some(),
        ));
    }
    if shown.is_empty() {
        return Ok(shown);
    }
    // The owners those facts' cells say to notify (`notify_owner`), as a view of them would.
    disclosure.notify = view_of(&asker, child, &facts, of(&cited)).1.notify;
    query
        .record(pass, Some(child), &disclosure, pb::AccessOutcome::Permitted)
        .await?;
    Ok(shown)
}

/// The watch event `caller` receives for a breach notice, if any.
pub async fn watched_breach(
    query: &Query,
    pass: &Pass,
    notice: &BreachNotice,
    at_ms: i64,
) -> Result<Option<pb::WatchEvent>, ApiError> {
    let shown = disclosed(
        query,
        pass,
        notice.child,
        std::slice::from_ref(&notice.deadline),
        at_ms,
    )
    .await?;
    Ok(shown.into_iter().next().map(|breach| pb::WatchEvent {
        child_id: notice.child.to_string(),
        kind: Some(pb::watch_event::Kind::Breach(breach)),
        ..Default::default()
    }))
}

/// Breach records a listing without a child looks at per call, unless it asks for another page size.
const BREACH_PAGE_DEFAULT: u32 = 100;
const BREACH_PAGE_MAX: u32 = 1000;

/// `DeadlineService`: breaches for the agencies entitled to them.
#[derive(Debug, Clone)]
pub struct Deadlines {
    pub query: Query,
    /// The moment lateness is measured at (the node's clock).
    pub clock: Clock,
}

#[tonic::async_trait]
impl DeadlineService for Deadlines {
    async fn list_breaches(
        &self,
        request: Request<pb::ListBreachesRequest>,
    ) -> Result<Response<pb::ListBreachesResponse>, GrpcStatus> {
        let (pass, req) = self.query.gate(request).await?;
        let child = self.query.listing(&pass, &req.child_id, "breaches")?;
        let page = match req.page_size {
            0 => BREACH_PAGE_DEFAULT,
            n if n > BREACH_PAGE_MAX => {
                return Err(
                    ApiError::Invalid(format!("page_size {n} is over the cap of {BREACH_PAGE_MAX}")).into(),
                );
            }
            n => n,
        } as usize;
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(
                hex::decode(token)
                    .ok()
                    .filter(|k| k.first() == Some(&halcyon_projector::keys::BREACHES))
                    .ok_or_else(|| ApiError::Invalid("page_token is not one this node issued".into()))?,
            ),
        };
        let projector = self.query.projector.get();
        let (all, next) = tokio::task::spawn_blocking(move || match child {
            // One child's breaches are few: all of them.
            Some(child) => projector.breaches(Some(&child)).map(|all| (all, None)),
            None => projector.breaches_page(after.as_deref(), page),
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)?;
        let mut by_child: BTreeMap<ChildId, Vec<StoredDeadline>> = BTreeMap::new();
        for n in all {
            if !req.open_only || n.deadline.is_running() {
                by_child.entry(n.child).or_default().push(n.deadline);
            }
        }
        let at_ms = self.clock.now_ms();
        let mut breaches = Vec::new();
        for (child, deadlines) in by_child {
            breaches.extend(disclosed(&self.query, &pass, child, &deadlines, at_ms).await?);
        }
        let answer = pb::ListBreachesResponse {
            breaches,
            evaluated_at: Some(timestamp_from_millis(at_ms)),
            next_page_token: next.map(hex::encode).unwrap_or_default(),
        };
        pass.answer(&self.query, child, answer).await
    }
}
