//! The query service: authenticate, check the purpose, wait for read-your-writes positions, build the view
//! under the policy, write the access record and wait for its acknowledgement, then answer.

use std::sync::Arc;
use std::time::Duration;

use halcyon_bus::AuditWriter;
use halcyon_grpc::pb::{
    self, find_child_request::Identifier as WireIdentifier, query_service_server::QueryService,
};
use halcyon_policy::{BreakGlass, Policy, Purpose, Role};
use halcyon_projector::read::{ChildFacts, FactCache};
use halcyon_projector::{Identifier, Projector};
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::subject::StreamName;
use halcyon_schema::{ChildId, EventId};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::gate::Pass;
use crate::reply::ViewReply;
use crate::view_memo::ViewMemo;
use halcyon_projector::disclose::{Disclosure, child_view, learnable, view_of};

/// Shared by every call.
#[derive(Debug, Clone)]
pub struct Query {
    pub projector: Arc<Projector>,
    pub policy: Arc<Policy>,
    pub auth: Arc<crate::auth::Authenticator>,
    pub audit: AuditWriter,
    pub node_id: String,
    pub read_wait: Duration,
    pub lag: crate::ingest::Lag,
    pub events: crate::events::Events,
    pub registry: Arc<halcyon_schema::Registry>,
    /// Calls answered at once across the node; beyond it, calls are shed with RESOURCE_EXHAUSTED.
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Whole views already decided for the facts in the node's cache (see [`ViewMemo`]).
    pub views: Arc<ViewMemo>,
}

/// Chronology pages hold at most this many facts.
pub const PAGE_SIZE_MAX: u32 = 500;
const PAGE_SIZE_DEFAULT: u32 = 100;

/// A checked request context.
#[derive(Debug, Clone)]
pub struct Context {
    pub purpose: Purpose,
    pub break_glass: Option<BreakGlass>,
}

pub use halcyon_projector::now_ms;

impl Query {
    /// Checks a request's context (purpose, break-glass, read-your-writes) for other services.
    pub async fn checked_context(&self, ctx: Option<&pb::RequestContext>) -> Result<Context, ApiError> {
        self.context(ctx).await
    }

    /// The optional child of a listing call (breaches, signals), once through the gate: a list is never read
    /// under break-glass, and an empty `child_id` means every child.
    pub fn listing(&self, pass: &Pass, child_id: &str, what: &str) -> Result<Option<ChildId>, ApiError> {
        if pass.ctx.break_glass.is_some() {
            return Err(ApiError::Invalid(format!(
                "break-glass is for a single child's view, not a list of {what}"
            )));
        }
        match child_id.trim() {
            "" => Ok(None),
            raw => Ok(Some(Self::child_id(raw)?)),
        }
    }

    /// A child's facts, decoded with their sharing state: from the node's cache while nothing new has been
    /// projected since they were read, otherwise read from sled off the async runtime.
    pub(crate) async fn child_facts(&self, child: ChildId) -> Result<Arc<ChildFacts>, ApiError> {
        let cache = FactCache::of(&self.projector);
        if let Some(hit) = cache.cached(&child) {
            return Ok(hit);
        }
        let projector = self.projector.clone();
        Ok(
            tokio::task::spawn_blocking(move || cache.load(&projector, &child))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??,
        )
    }

    /// Parses a child id from a request.
    fn child_id(raw: &str) -> Result<ChildId, ApiError> {
        raw.parse()
            .map_err(|e: halcyon_schema::IdError| ApiError::Invalid(e.to_string()))
    }

    /// Admits a call or sheds it when the node is at its concurrency limit.
    pub(crate) fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.admission.clone().try_acquire_owned().map_err(|_| {
            ApiError::Overloaded("the node is at its concurrency limit; retry with backoff".into())
        })
    }

    async fn context(&self, ctx: Option<&pb::RequestContext>) -> Result<Context, ApiError> {
        let ctx = ctx.ok_or_else(|| ApiError::Invalid("context is required: state a purpose".into()))?;
        const PURPOSES: &str = "PURPOSE_SAFEGUARDING, PURPOSE_DIRECT_CARE, PURPOSE_LAW_ENFORCEMENT, PURPOSE_STATUTORY_REVIEW, PURPOSE_AUDIT";
        let purpose = match pb::Purpose::try_from(ctx.purpose) {
            Err(_) => {
                return Err(ApiError::Invalid(format!(
                    "context.purpose: unknown value {} (known: {PURPOSES})",
                    ctx.purpose
                )));
            }
            Ok(p) => Purpose::from_pb(p).ok_or_else(|| {
                ApiError::Invalid(format!("context.purpose is required: one of {PURPOSES}"))
            })?,
        };
        let reason = ctx.break_glass_reason.trim();
        if ctx.break_glass && reason.is_empty() {
            return Err(ApiError::Invalid(
                "break-glass needs a reason: set break_glass_reason".into(),
            ));
        }
        let break_glass = (!reason.is_empty()).then(|| BreakGlass {
            reason: reason.to_owned(),
            started_at_ms: now_ms(),
        });
        if !ctx.min_positions.is_empty() {
            // A position on a stream the node does not project could never be reached: say so at once.
            for p in &ctx.min_positions {
                let known = StreamName::agency_of(&p.stream).is_some_and(|a| self.registry.get(&a).is_some());
                if !known {
                    return Err(ApiError::Invalid(format!(
                        "context.min_positions: no stream named {:?} is projected here (agency streams are EVENTS_<AGENCY>, for the agencies in the registry)",
                        p.stream
                    )));
                }
            }
            let wanted: Vec<(String, u64)> = ctx
                .min_positions
                .iter()
                .map(|p| (p.stream.clone(), p.sequence))
                .collect();
            self.projector.wait_for(&wanted, self.read_wait).await?;
        }
        Ok(Context { purpose, break_glass })
    }

    /// FindChild: the child one identifier names, as the caller may see it.
    pub(crate) async fn find_child_reply(
        &self,
        request: Request<pb::FindChildRequest>,
    ) -> Result<Response<ViewReply>, Status> {
        let (pass, req) = self.gate(request).await?;
        let identifier = match req.identifier {
            Some(WireIdentifier::NhsNumber(n)) => Identifier::Nhs(
                n.parse()
                    .map_err(|e: halcyon_schema::IdError| ApiError::Invalid(e.to_string()))?,
            ),
            Some(WireIdentifier::Upn(u)) => Identifier::Upn(
                u.parse()
                    .map_err(|e: halcyon_schema::IdError| ApiError::Invalid(e.to_string()))?,
            ),
            Some(WireIdentifier::LocalId(l)) => Identifier::Local {
                agency: l
                    .agency_id
                    .parse()
                    .map_err(|e: halcyon_schema::IdError| ApiError::Invalid(e.to_string()))?,
                local_id: l.local_id,
            },
            None => {
                return Err(
                    ApiError::Invalid("identifier is required: nhs_number, upn or local_id".into()).into(),
                );
            }
        };
        let child = self.projector.resolve(&identifier).map_err(ApiError::from)?;
        Ok(Response::new(self.answer(&pass, child).await?))
    }

    /// GetChildView: a child the caller knows the halcyon id of, as the caller may see it.
    pub(crate) async fn get_child_view_reply(
        &self,
        request: Request<pb::GetChildViewRequest>,
    ) -> Result<Response<ViewReply>, Status> {
        let (pass, req) = self.gate(request).await?;
        let child = Self::child_id(&req.child_id)?;
        Ok(Response::new(self.answer(&pass, child).await?))
    }

    /// Builds a view, records the access, and only then returns the view.
    async fn answer(&self, pass: &Pass, child: ChildId) -> Result<ViewReply, ApiError> {
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        // Announced now, so the audit writer can hold its next group open for this call's record.
        let expected = self.audit.expect();
        let facts = self.child_facts(child).await?;
        if facts.facts.is_empty() {
            self.record_expected(
                Some(expected),
                pass,
                None,
                &Disclosure::default(),
                pb::AccessOutcome::NotFound,
            )
            .await?;
            return Err(ApiError::NotFound(
                "no child with that identifier is known to Halcyon".into(),
            ));
        }
        let decision = match &ctx.break_glass {
            None => self.views.view(
                &self.policy,
                &caller.principal,
                ctx.purpose,
                child,
                &facts,
                now_ms(),
            ),
            Some(break_glass) => {
                let (view, disclosure) = view_of(
                    &self.policy,
                    &caller.principal,
                    ctx.purpose,
                    Some(break_glass),
                    child,
                    &facts,
                    0..facts.facts.len(),
                    now_ms(),
                );
                Arc::new((ViewReply::encode_view(&view), disclosure))
            }
        };
        let (view, disclosure) = &*decision;
        let outcome = if disclosure.facts_disclosed > 0 {
            pb::AccessOutcome::Permitted
        } else {
            pb::AccessOutcome::Denied
        };
        self.record_expected(Some(expected), pass, Some(child), disclosure, outcome)
            .await?;
        if !disclosure.reveals_child {
            // Nothing shown, nothing told, no identity: the caller may not learn that Halcyon knows the
            // child, so the answer is the one for a child it does not know.
            return Err(ApiError::NotFound(
                "no child with that identifier is known to Halcyon".into(),
            ));
        }
        Ok(ViewReply {
            view: view.clone(),
            positions: self
                .projector
                .checkpoints()
                .into_iter()
                .map(|(stream, sequence)| pb::Position { stream, sequence })
                .collect(),
        })
    }

    /// Writes an access record of the call through `pass` and waits for the AUDIT stream's acknowledgement:
    /// no answer leaves before it (see [`crate::gate`]).
    pub async fn record(
        &self,
        pass: &Pass,
        child: Option<ChildId>,
        d: &Disclosure,
        outcome: pb::AccessOutcome,
    ) -> Result<(), ApiError> {
        self.record_expected(None, pass, child, d, outcome).await
    }

    /// [`Self::record`] of a record announced to the audit writer beforehand.
    async fn record_expected(
        &self,
        expected: Option<halcyon_bus::audit::Expected>,
        pass: &Pass,
        child: Option<ChildId>,
        d: &Disclosure,
        outcome: pb::AccessOutcome,
    ) -> Result<(), ApiError> {
        let (caller, ctx, method) = (&pass.caller, &pass.ctx, pass.method);
        let record = pb::AccessRecord {
            record_id: EventId::new().to_string(),
            at: Some(timestamp_from_millis(now_ms())),
            agency_id: caller.principal.agency.to_string(),
            role: caller.principal.role.to_string(),
            principal_id: caller.principal_id.clone(),
            purpose: ctx.purpose.to_pb() as i32,
            method: method.to_owned(),
            child_id: child.map(|c| c.to_string()).unwrap_or_default(),
            categories_disclosed: d.categories_disclosed.iter().map(|c| c.to_pb() as i32).collect(),
            categories_withheld: d.categories_withheld.iter().map(|c| c.to_pb() as i32).collect(),
            rules: d.rules.iter().cloned().collect(),
            policy_version: self.policy.version().to_owned(),
            break_glass_reason: ctx
                .break_glass
                .as_ref()
                .map(|b| b.reason.clone())
                .unwrap_or_default(),
            outcome: outcome as i32,
            facts_disclosed: d.facts_disclosed,
            facts_withheld: d.facts_withheld,
            node_id: self.node_id.clone(),
            break_glass_relied_on: d.break_glass,
            redacted: false,
        };
        match expected {
            Some(expected) => expected.record(record).await,
            None => self.audit.record(record).await,
        }
        .map_err(|e| ApiError::AuditUnavailable(e.to_string()))?;
        pass.count_record();
        tracing::info!(
            method,
            agency = %caller.principal.agency,
            outcome = ?outcome,
            disclosed = d.facts_disclosed,
            withheld = d.facts_withheld,
            break_glass = d.break_glass,
            "access recorded"
        );
        Ok(())
    }
}

/// Watch streams carry at most this many events waiting to be read.
const WATCH_QUEUE_LEN_MAX: usize = 256;

impl Query {
    fn identifier(nhs: &str) -> Result<Identifier, ApiError> {
        Ok(Identifier::Nhs(nhs.parse().map_err(
            |e: halcyon_schema::IdError| ApiError::Invalid(e.to_string()),
        )?))
    }

    /// The flag check: D1 facts only, each decided by the policy, cut to the flag.
    ///
    /// A caller that may see no flag fact of the child — because Halcyon does not know the NHS number, the
    /// child has no flag, or the policy does not entitle the caller — gets one and the same answer: a
    /// status with no flag and no child id. The access record says which it was.
    async fn flag(&self, pass: &Pass, nhs: &str) -> Result<pb::FlagStatus, ApiError> {
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let no_flag = pb::FlagStatus {
            policy_version: self.policy.version().to_owned(),
            ..Default::default()
        };
        let child = self.projector.resolve(&Self::identifier(nhs)?)?;
        let facts = self.child_facts(child).await?;
        if facts.facts.is_empty() {
            self.record(pass, None, &Disclosure::default(), pb::AccessOutcome::NotFound)
                .await?;
            return Ok(no_flag);
        }
        let flag_facts: Vec<_> = facts
            .facts
            .iter()
            .filter(|f| {
                halcyon_schema::Category::from_wire(f.envelope.category)
                    == Some(halcyon_schema::Category::STATUS_FLAG)
            })
            .cloned()
            .collect();
        let (view, disclosure) = child_view(
            &self.policy,
            &caller.principal,
            ctx.purpose,
            ctx.break_glass.as_ref(),
            child,
            &flag_facts,
            now_ms(),
        );
        let sharing = halcyon_projector::SharingState::derive(&flag_facts);
        let mut status = pb::FlagStatus {
            child_id: child.to_string(),
            policy_version: view.policy_version.clone(),
            ..Default::default()
        };
        use pb::event::Kind;
        for fact in &view.facts {
            let at = fact.occurred_at;
            match fact.event.as_ref().and_then(|e| e.kind.as_ref()) {
                Some(Kind::ChildProtectionPlanStarted(p)) => {
                    status.child_protection_plan = !p.unborn;
                    status.unborn_plan = p.unborn;
                    status.plan_started = at;
                    status.plan_ended = None;
                    status.office_hours_phone = p.office_hours_phone.clone();
                    status.out_of_hours_phone = p.out_of_hours_phone.clone();
                    status.owning_agency_id = fact.agency_id.clone();
                }
                Some(Kind::ChildProtectionPlanEnded(_)) => {
                    status.child_protection_plan = false;
                    status.unborn_plan = false;
                    status.plan_ended = at;
                }
                Some(Kind::LookedAfterPeriodStarted(l)) => {
                    status.looked_after = true;
                    status.looked_after_started = at;
                    status.looked_after_ended = None;
                    status.owning_agency_id = fact.agency_id.clone();
                    if status.office_hours_phone.is_empty() {
                        status.office_hours_phone = l.office_hours_phone.clone();
                        status.out_of_hours_phone = l.out_of_hours_phone.clone();
                    }
                }
                Some(Kind::LookedAfterPeriodEnded(_)) => {
                    status.looked_after = false;
                    status.looked_after_ended = at;
                }
                Some(
                    Kind::ContactReceived(_)
                    | Kind::ReferralReceived(_)
                    | Kind::ReferralDecisionRecorded(_)
                    | Kind::ReferralAcknowledged(_)
                    | Kind::AgencyCheckRequested(_)
                    | Kind::AgencyCheckResponded(_)
                    | Kind::AssessmentStarted(_)
                    | Kind::AssessmentCompleted(_)
                    | Kind::StrategyDiscussionHeld(_)
                    | Kind::Section47EnquiryStarted(_)
                    | Kind::Section47EnquiryConcluded(_)
                    | Kind::InitialConferenceHeld(_)
                    | Kind::CategoryChanged(_)
                    | Kind::CoreGroupMeetingHeld(_)
                    | Kind::ReviewConferenceHeld(_)
                    | Kind::LookedAfterReviewHeld(_)
                    | Kind::PoliceProtectionStarted(_)
                    | Kind::PoliceProtectionEnded(_)
                    | Kind::EmergencyProtectionOrderMade(_)
                    | Kind::MissingEpisodeReported(_)
                    | Kind::MissingEpisodeClosed(_)
                    | Kind::ReturnHomeInterviewCompleted(_)
                    | Kind::AttendanceConcernRecorded(_)
                    | Kind::ExclusionRecorded(_)
                    | Kind::HealthAttendanceRecorded(_)
                    | Kind::PoliceIntelligenceRecorded(_)
                    | Kind::ExploitationIndicatorRecorded(_)
                    | Kind::ConcernRecorded(_)
                    | Kind::InvolvementStarted(_)
                    | Kind::InvolvementEnded(_)
                    | Kind::ConsentRecorded(_)
                    | Kind::ConsentWithdrawn(_)
                    | Kind::ConsentExemptionRecorded(_)
                    | Kind::ShareDecisionRecorded(_)
                    | Kind::OriginatorApprovalGranted(_)
                    | Kind::IdentifierLinked(_)
                    | Kind::RecordCorrected(_)
                    | Kind::SeriousIncidentNotified(_)
                    | Kind::RapidReviewCompleted(_)
                    | Kind::BreakGlassReviewed(_)
                    | Kind::SignalOutcomeRecorded(_),
                )
                | None => {}
            }
        }
        if status.owning_agency_id.is_empty()
            && let Some(owner) = &sharing.owner
            && !view.facts.is_empty()
        {
            status.owning_agency_id = owner.to_string();
        }
        if let Some(owner) = status
            .owning_agency_id
            .parse()
            .ok()
            .and_then(|id| self.registry.get(&id))
        {
            status.owning_agency_name = owner.name.clone();
            if status.office_hours_phone.is_empty() {
                status.office_hours_phone = owner.office_hours_phone.clone();
                status.out_of_hours_phone = owner.out_of_hours_phone.clone();
            }
        }
        if disclosure.facts_disclosed == 0 {
            self.record(pass, Some(child), &disclosure, pb::AccessOutcome::Denied)
                .await?;
            return Ok(no_flag);
        }
        self.record(pass, Some(child), &disclosure, pb::AccessOutcome::Permitted)
            .await?;
        status.owner_notified = !disclosure.notify.is_empty();
        for owner in &disclosure.notify {
            let notification = pb::AccessNotification {
                child_id: child.to_string(),
                by_agency_id: caller.principal.agency.to_string(),
                by_agency_name: self
                    .registry
                    .get(&caller.principal.agency)
                    .map(|a| a.name.clone())
                    .unwrap_or_default(),
                by_principal_id: caller.principal_id.clone(),
                role: caller.principal.role.to_string(),
                method: "CheckFlag".into(),
                purpose: ctx.purpose.to_pb() as i32,
                at: Some(timestamp_from_millis(now_ms())),
            };
            let _ = self.events.send(crate::events::NodeEvent::Access {
                owner: owner.clone(),
                notification,
            });
        }
        Ok(status)
    }

    /// The watch events for `caller` of one child's newly projected facts: the child's view is derived
    /// once, the facts the policy withholds are dropped, and one access record covering the rest is
    /// written before any of them is sent.
    async fn watched_facts(
        &self,
        pass: &Pass,
        child: ChildId,
        event_ids: &[&str],
    ) -> Result<Vec<pb::WatchEvent>, ApiError> {
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let facts = self.child_facts(child).await?;
        let (view, _) = view_of(
            &self.policy,
            &caller.principal,
            ctx.purpose,
            None,
            child,
            &facts,
            0..facts.facts.len(),
            now_ms(),
        );
        let shown: Vec<pb::VisibleFact> = view
            .facts
            .into_iter()
            .filter(|f| event_ids.contains(&f.event_id.as_str()))
            .collect();
        if shown.is_empty() {
            return Ok(Vec::new());
        }
        let disclosure = Disclosure {
            categories_disclosed: shown
                .iter()
                .filter_map(|f| halcyon_schema::Category::from_wire(f.category))
                .collect(),
            rules: shown.iter().map(|f| f.rule.clone()).collect(),
            facts_disclosed: shown.len() as u32,
            ..Default::default()
        };
        self.record(pass, Some(child), &disclosure, pb::AccessOutcome::Permitted)
            .await?;
        Ok(shown
            .into_iter()
            .map(|fact| pb::WatchEvent {
                child_id: child.to_string(),
                kind: Some(pb::watch_event::Kind::Fact(fact)),
            })
            .collect())
    }

    /// An access notification for the owner, itself recorded (it discloses who looked at the child).
    async fn notification(
        &self,
        pass: &Pass,
        notification: pb::AccessNotification,
    ) -> Result<pb::WatchEvent, ApiError> {
        let child: Option<ChildId> = notification.child_id.parse().ok();
        let disclosure = Disclosure {
            categories_disclosed: [halcyon_schema::Category::ACCESS_LOG].into_iter().collect(),
            rules: ["access-notification.owner".to_owned()].into_iter().collect(),
            facts_disclosed: 1,
            ..Default::default()
        };
        self.record(pass, child, &disclosure, pb::AccessOutcome::Permitted)
            .await?;
        Ok(pb::WatchEvent {
            child_id: notification.child_id.clone(),
            kind: Some(pb::watch_event::Kind::Access(notification)),
        })
    }
}

type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for Query {
    type WatchStream = WatchStream;

    async fn get_chronology(
        &self,
        request: Request<pb::GetChronologyRequest>,
    ) -> Result<Response<pb::ChronologyPage>, Status> {
        let (pass, req) = self.gate(request).await?;
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let child = Self::child_id(&req.child_id)?;
        let page_size = match req.page_size {
            0 => PAGE_SIZE_DEFAULT,
            n if n > PAGE_SIZE_MAX => {
                return Err(
                    ApiError::Invalid(format!("page_size {n} is over the cap of {PAGE_SIZE_MAX}")).into(),
                );
            }
            n => n,
        } as usize;
        let start: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| ApiError::Invalid("page_token is not one this node issued".into()))?
        };
        let child_facts = self.child_facts(child).await?;
        // Pages are windows on the facts the caller may learn of, in time order; the state comes from every
        // fact.
        let learnable = learnable(
            &self.policy,
            &caller.principal,
            ctx.purpose,
            ctx.break_glass.as_ref(),
            &child_facts,
            now_ms(),
        );
        if learnable.is_empty() {
            // Nothing to show or tell: the answer for a child Halcyon does not know (recorded as it was).
            let outcome = if child_facts.facts.is_empty() {
                pb::AccessOutcome::NotFound
            } else {
                pb::AccessOutcome::Denied
            };
            let child = (!child_facts.facts.is_empty()).then_some(child);
            self.record(&pass, child, &Disclosure::default(), outcome).await?;
            return Err(ApiError::NotFound("no child with that id is known to Halcyon".into()).into());
        }
        let window = &learnable[start.min(learnable.len())..(start + page_size).min(learnable.len())];
        let (view, disclosure) = view_of(
            &self.policy,
            &caller.principal,
            ctx.purpose,
            ctx.break_glass.as_ref(),
            child,
            &child_facts,
            window.iter().copied(),
            now_ms(),
        );
        let outcome = if disclosure.facts_disclosed > 0 {
            pb::AccessOutcome::Permitted
        } else {
            pb::AccessOutcome::Denied
        };
        self.record(&pass, Some(child), &disclosure, outcome).await?;
        let next = start + page_size;
        let page = pb::ChronologyPage {
            child_id: view.child_id,
            facts: view.facts,
            withheld: view.withheld,
            next_page_token: if next < learnable.len() {
                next.to_string()
            } else {
                String::new()
            },
            policy_version: view.policy_version,
        };
        pass.answer(self, Some(child), page).await
    }

    async fn check_flag(
        &self,
        request: Request<pb::CheckFlagRequest>,
    ) -> Result<Response<pb::FlagStatus>, Status> {
        let (pass, req) = self.gate(request).await?;
        let status = self.flag(&pass, &req.nhs_number).await?;
        pass.answer(self, None, status).await
    }

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        use crate::events::NodeEvent;
        use tokio::sync::broadcast::error::RecvError;
        let (pass, _req) = self.gate(request).await?;
        // Admitted for its setup; a watch then streams without holding a place in the admission limit.
        let pass = pass.release();
        if pass.ctx.break_glass.is_some() {
            return Err(ApiError::Invalid(
                "break-glass is for a single look-up, not a standing watch".into(),
            )
            .into());
        }
        let mut events = self.events.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE_LEN_MAX);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let item = match events.recv().await {
                    Ok(NodeEvent::Facts(facts)) => {
                        // One view per child, however many of its facts the batch carried.
                        let mut by_child: std::collections::BTreeMap<ChildId, Vec<&str>> = Default::default();
                        for (child, event_id) in facts.iter() {
                            by_child.entry(*child).or_default().push(event_id);
                        }
                        let mut out = Vec::new();
                        for (child, event_ids) in &by_child {
                            match this.watched_facts(&pass, *child, event_ids).await {
                                Ok(events) => out.extend(events.into_iter().map(Ok)),
                                Err(e) => {
                                    out.push(Err(Status::from(e)));
                                    break;
                                }
                            }
                        }
                        out
                    }
                    Ok(NodeEvent::Access { owner, notification })
                        if owner == pass.caller.principal.agency =>
                    {
                        vec![this.notification(&pass, notification).await.map_err(Status::from)]
                    }
                    Ok(NodeEvent::Access { .. }) => continue,
                    Ok(NodeEvent::Breach { notice, at_ms }) => {
                        match crate::deadlines::watched_breach(&this, &pass, &notice, at_ms).await {
                            Ok(Some(event)) => vec![Ok(event)],
                            Ok(None) => continue,
                            Err(e) => vec![Err(Status::from(e))],
                        }
                    }
                    Ok(NodeEvent::Signal { notice }) => {
                        match crate::signals::watched_signal(&this, &pass, &notice).await {
                            Ok(Some(event)) => vec![Ok(event)],
                            Ok(None) => continue,
                            Err(e) => vec![Err(Status::from(e))],
                        }
                    }
                    Err(RecvError::Lagged(n)) => vec![Err(Status::resource_exhausted(format!(
                        "this watch fell {n} events behind; read the views again and watch anew"
                    )))],
                    Err(RecvError::Closed) => return,
                };
                for item in item {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn find_child(
        &self,
        request: Request<pb::FindChildRequest>,
    ) -> Result<Response<pb::ChildView>, Status> {
        // The node serves this method through `reply::QueryRoutes`; this is the same answer as a message.
        as_message(self.find_child_reply(request).await?)
    }

    async fn get_child_view(
        &self,
        request: Request<pb::GetChildViewRequest>,
    ) -> Result<Response<pb::ChildView>, Status> {
        as_message(self.get_child_view_reply(request).await?)
    }

    async fn get_positions(
        &self,
        request: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::GetPositionsResponse>, Status> {
        let (_caller, _permit, _req) = self.gate_operational(request)?;
        let positions = self
            .projector
            .checkpoints()
            .into_iter()
            .map(|(stream, sequence)| pb::Position { stream, sequence })
            .collect();
        let lag = self
            .lag
            .lock()
            .expect("lag lock")
            .iter()
            .map(|(stream, behind)| pb::StreamLag {
                stream: stream.clone(),
                behind: *behind,
            })
            .collect();
        Ok(Response::new(pb::GetPositionsResponse { positions, lag }))
    }

    async fn list_quarantine(
        &self,
        request: Request<pb::ListQuarantineRequest>,
    ) -> Result<Response<pb::ListQuarantineResponse>, Status> {
        let (caller, _permit, req) = self.gate_operational(request)?;
        let wanted = req.agency_id;
        let operator = caller.principal.role == Role::Operator;
        let agency = match (operator, wanted.is_empty()) {
            (true, true) => None,
            (true, false) => Some(
                wanted
                    .parse()
                    .map_err(|e: halcyon_schema::IdError| ApiError::Invalid(e.to_string()))?,
            ),
            (false, true) => Some(caller.principal.agency.clone()),
            (false, false) if wanted == caller.principal.agency.as_str() => {
                Some(caller.principal.agency.clone())
            }
            (false, false) => {
                return Err(ApiError::Forbidden(format!(
                    "agency {} may list only its own quarantined events",
                    caller.principal.agency
                ))
                .into());
            }
        };
        let records = self
            .projector
            .quarantine(agency.as_ref())
            .map_err(ApiError::from)?;
        let events = records
            .into_iter()
            .map(|r| pb::QuarantinedEvent {
                reasons: r.problems.iter().map(ToString::to_string).collect(),
                stream: r.stream,
                sequence: r.sequence,
                subject: r.subject,
                agency_id: r.agency.unwrap_or_default(),
                event_id: r.event_id.unwrap_or_default(),
                stored_at: Some(timestamp_from_millis(r.stored_at_ms)),
            })
            .collect();
        let damaged = if operator {
            self.projector
                .damaged()
                .into_iter()
                .map(|d| pb::DamagedRecord {
                    kind: d.kind.to_string(),
                    key: d.key,
                    reason: d.reason,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::ListQuarantineResponse { events, damaged }))
    }
}

/// A [`ViewReply`] as the generated service's message.
fn as_message(reply: Response<ViewReply>) -> Result<Response<pb::ChildView>, Status> {
    reply
        .into_inner()
        .to_view()
        .map(Response::new)
        .map_err(|e| Status::internal(format!("a decided view did not decode: {e}")))
}
