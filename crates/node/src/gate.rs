//! The audit gate: the one way into every method of every service, and the one way an answer about a child
//! leaves.
//!
//! In: [`Query::gate`] admits the call (beyond the node's concurrency it is shed with RESOURCE_EXHAUSTED),
//! authenticates the caller (UNAUTHENTICATED), and checks the request's context — purpose, break-glass,
//! read-your-writes positions (INVALID_ARGUMENT) — in that order, the same for every method. It hands back a
//! [`Pass`]: who asks, for what, through which method.
//!
//! Out: every access record is written through the pass ([`Query::record`]: written to the AUDIT stream and
//! acknowledged before the method goes on), and an answer leaves through [`Pass::answer`], which writes the
//! call's record first if the method wrote none (a list with nothing in it is still a recorded question).
//! `Watch` passes the gate once, for its setup, and records each event it sends through the same pass.
//!
//! `GetPositions` and `ListQuarantine` answer no question about a child (stream positions; events a
//! node could not project, by stream and reason): they take no purpose and write no access record, but pass
//! admission and authentication here like every other method ([`Query::gate_operational`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tracing::Instrument as _;

use halcyon_grpc::pb;
use halcyon_schema::convert::timestamp_from_millis;
use halcyon_schema::{ChildId, EventId};
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::query::{Context, Query};
use halcyon_projector::disclose::Disclosure;
use halcyon_schema::clock::now_ms;

/// A request that states its context (purpose, break-glass, positions), and the method it is for.
pub trait Gated {
    /// The method's name in access records.
    const METHOD: &'static str;
    fn context(&self) -> Option<&pb::RequestContext>;
}

macro_rules! gated {
    ($($request:ident => $method:literal),* $(,)?) => {
        $(impl Gated for pb::$request {
            const METHOD: &'static str = $method;
            fn context(&self) -> Option<&pb::RequestContext> {
                self.context.as_ref()
            }
        })*
    };
}

gated! {
    FindChildRequest => "FindChild",
    GetChildViewRequest => "GetChildView",
    GetChronologyRequest => "GetChronology",
    CheckFlagRequest => "CheckFlag",
    WatchRequest => "Watch",
    ListAccessRequest => "ListAccess",
    ListBreachesRequest => "ListBreaches",
    ListSignalsRequest => "ListSignals",
}

/// What the gate established for one call: the caller, the checked context and the method. Access records
/// are written through it ([`Query::record`]), and it counts them.
#[derive(Debug, Clone)]
pub struct Pass {
    pub caller: Caller,
    pub ctx: Context,
    pub method: &'static str,
    /// The call's request id (`crate::metrics::CallLayer` sets it on every call), for its access records.
    pub request_id: String,
    recorded: Arc<AtomicU32>,
    /// Held until the answer leaves (released early by a watch, which lives on).
    permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl Pass {
    /// Access records written for this call so far.
    pub fn recorded(&self) -> u32 {
        self.recorded.load(Ordering::Acquire)
    }

    pub(crate) fn count_record(&self) {
        self.recorded.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives back the call's admission (a watch holds none while it streams).
    pub fn release(mut self) -> Self {
        self.permit = None;
        self
    }

    /// The answer, after the call's access record: if the method wrote none (nothing to show), one is
    /// written now, naming the child asked about if any, before anything leaves.
    pub async fn answer<T>(
        self,
        query: &Query,
        child: Option<ChildId>,
        answer: T,
    ) -> Result<Response<T>, Status> {
        if self.recorded() == 0 {
            query
                .record(&self, child, &Disclosure::default(), pb::AccessOutcome::NotFound)
                .await?;
        }
        Ok(Response::new(answer))
    }
}

impl Query {
    /// The gate of every method that answers about children: admission, authentication, context.
    pub async fn gate<T: Gated>(&self, request: Request<T>) -> Result<(Pass, T), ApiError> {
        let request_id = request
            .metadata()
            .get(crate::metrics::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (caller, permit, request) = self.gate_operational(request)?;
        let ctx = self.context(request.context()).await?;
        Ok((
            Pass {
                caller,
                ctx,
                method: T::METHOD,
                request_id,
                recorded: Arc::new(AtomicU32::new(0)),
                permit: Some(Arc::new(permit)),
            },
            request,
        ))
    }

    /// Admission and authentication, for the operational methods that answer nothing about a child.
    pub fn gate_operational<T>(
        &self,
        request: Request<T>,
    ) -> Result<(Caller, OwnedSemaphorePermit, T), ApiError> {
        let permit = self.admit()?;
        let caller = self.auth.authenticate(&request)?;
        Ok((caller, permit, request.into_inner()))
    }

    /// Writes an access record of the call through `pass` and waits for the AUDIT stream's acknowledgement:
    /// no answer leaves before it (see [`crate::gate`]). The record names the owning agencies the disclosure
    /// must notify (`Disclosure::notify`, from cells with `notify_owner`), whichever method disclosed: once
    /// it is acknowledged, their notification is durable (every node delivers it from AUDIT).
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
    pub(crate) async fn record_expected(
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
            notified_agency_ids: d.notify.iter().map(ToString::to_string).collect(),
            request_id: pass.request_id.clone(),
            reason: String::new(),
            acting_person_id: ctx
                .acting_person
                .as_ref()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
            acting_person_role: ctx
                .acting_person
                .as_ref()
                .map(|(_, role)| role.clone())
                .unwrap_or_default(),
        };
        async {
            match expected {
                Some(expected) => expected.record(record).await,
                None => self.audit.record(record).await,
            }
        }
        .instrument(tracing::debug_span!("audit_write"))
        .await
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
}
