//! The query service: authenticate, check the purpose, wait for read-your-writes positions, build the view
//! under the policy, write the access record and wait for its acknowledgement, then answer.

use std::sync::Arc;
use std::time::Duration;

use halcyon_bus::AuditWriter;
use halcyon_policy::{BreakGlass, Policy, Purpose, Role};
use halcyon_projector::{Identifier, Projector};
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::pb::{
    self, find_child_request::Identifier as WireIdentifier, query_service_server::QueryService,
};
use halcyon_schema::{ChildId, EventId};
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Tokens};
use crate::error::ApiError;
use crate::view::{Disclosure, child_view};

/// Shared by every call.
#[derive(Debug, Clone)]
pub struct Query {
    pub projector: Arc<Projector>,
    pub policy: Arc<Policy>,
    pub tokens: Arc<Tokens>,
    pub audit: AuditWriter,
    pub node_id: String,
    pub read_wait: Duration,
    pub lag: crate::ingest::Lag,
}

/// A checked request context.
struct Context {
    purpose: Purpose,
    break_glass: Option<BreakGlass>,
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Query {
    async fn context(&self, ctx: Option<&pb::RequestContext>) -> Result<Context, ApiError> {
        let ctx = ctx.ok_or_else(|| ApiError::Invalid("context is required: state a purpose".into()))?;
        let purpose = Purpose::from_pb(ctx.purpose()).ok_or_else(|| {
            ApiError::Invalid(
                "purpose is required: one of safeguarding, direct_care, law_enforcement, statutory_review, audit"
                    .into(),
            )
        })?;
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
            let wanted: Vec<(String, u64)> = ctx
                .min_positions
                .iter()
                .map(|p| (p.stream.clone(), p.sequence))
                .collect();
            self.projector.wait_for(&wanted, self.read_wait).await?;
        }
        Ok(Context { purpose, break_glass })
    }

    /// Builds a view, records the access, and only then returns the view.
    async fn answer(
        &self,
        caller: &Caller,
        ctx: &Context,
        method: &str,
        child: ChildId,
    ) -> Result<pb::ChildView, ApiError> {
        let projector = self.projector.clone();
        let facts = tokio::task::spawn_blocking(move || projector.facts(&child))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        if facts.is_empty() {
            self.record(
                caller,
                ctx,
                method,
                None,
                &Disclosure::default(),
                pb::AccessOutcome::NotFound,
            )
            .await?;
            return Err(ApiError::NotFound(
                "no child with that identifier is known to Halcyon".into(),
            ));
        }
        let (mut view, disclosure) = child_view(
            &self.policy,
            &caller.principal,
            ctx.purpose,
            ctx.break_glass.as_ref(),
            child,
            &facts,
            now_ms(),
        );
        let outcome = if disclosure.facts_disclosed > 0 {
            pb::AccessOutcome::Permitted
        } else {
            pb::AccessOutcome::Denied
        };
        self.record(caller, ctx, method, Some(child), &disclosure, outcome)
            .await?;
        view.positions = self
            .projector
            .checkpoints()
            .into_iter()
            .map(|(stream, sequence)| pb::Position { stream, sequence })
            .collect();
        Ok(view)
    }

    /// The audit gate: no answer leaves before its access record is acknowledged by the AUDIT stream.
    async fn record(
        &self,
        caller: &Caller,
        ctx: &Context,
        method: &str,
        child: Option<ChildId>,
        d: &Disclosure,
        outcome: pb::AccessOutcome,
    ) -> Result<(), ApiError> {
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
        };
        self.audit
            .record(record)
            .await
            .map_err(|e| ApiError::AuditUnavailable(e.to_string()))?;
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

#[tonic::async_trait]
impl QueryService for Query {
    async fn find_child(
        &self,
        request: Request<pb::FindChildRequest>,
    ) -> Result<Response<pb::ChildView>, Status> {
        let caller = self.tokens.authenticate(request.metadata())?;
        let req = request.into_inner();
        let ctx = self.context(req.context.as_ref()).await?;
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
        Ok(Response::new(
            self.answer(&caller, &ctx, "FindChild", child).await?,
        ))
    }

    async fn get_child_view(
        &self,
        request: Request<pb::GetChildViewRequest>,
    ) -> Result<Response<pb::ChildView>, Status> {
        let caller = self.tokens.authenticate(request.metadata())?;
        let req = request.into_inner();
        let ctx = self.context(req.context.as_ref()).await?;
        let child: ChildId = req
            .child_id
            .parse()
            .map_err(|e: halcyon_schema::IdError| ApiError::Invalid(e.to_string()))?;
        Ok(Response::new(
            self.answer(&caller, &ctx, "GetChildView", child).await?,
        ))
    }

    async fn get_positions(
        &self,
        request: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::GetPositionsResponse>, Status> {
        self.tokens.authenticate(request.metadata())?;
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
        let caller = self.tokens.authenticate(request.metadata())?;
        let wanted = request.into_inner().agency_id;
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
        Ok(Response::new(pb::ListQuarantineResponse { events }))
    }
}
