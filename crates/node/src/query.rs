//! What every call shares (`Query`): the node's read models, policy, authenticator, audit writer and
//! admission, and the checks of a request's context (purpose, break-glass, read-your-writes positions).
//! The methods are in `child.rs` (a child's record), `watch.rs`, `service.rs` (the generated trait),
//! `access_log.rs`, `deadlines.rs` and `signals.rs`; each enters through `gate.rs`.

use std::sync::Arc;
use std::time::Duration;

use halcyon_bus::AuditWriter;
use halcyon_grpc::pb;
use halcyon_policy::{BreakGlass, Policy, Purpose};
use halcyon_projector::Identifier;
use halcyon_projector::read::{ChildFacts, FactCache};
use halcyon_schema::ChildId;
use halcyon_schema::clock::now_ms;
use halcyon_schema::subject::StreamName;

use crate::error::ApiError;
use crate::view_memo::ViewMemo;

/// Shared by every call.
#[derive(Debug, Clone)]
pub struct Query {
    /// The read models in use (`get` per call: an online rebuild switches them).
    pub projector: Arc<crate::read_models::Live>,
    pub policy: Arc<Policy>,
    pub auth: Arc<crate::auth::Authenticator>,
    pub audit: AuditWriter,
    /// JetStream, for what a call reads from the streams themselves (access notifications from AUDIT).
    pub js: async_nats::jetstream::Context,
    pub node_id: String,
    pub read_wait: Duration,
    pub lag: crate::ingest::Lag,
    pub events: crate::events::Events,
    pub registry: Arc<halcyon_schema::Registry>,
    /// Calls answered at once across the node; beyond it, calls are shed with RESOURCE_EXHAUSTED.
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Whole views already decided for the facts in the node's cache (see [`ViewMemo`]).
    pub views: Arc<ViewMemo>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cancelled when the node begins to drain: open watches end UNAVAILABLE.
    pub draining: tokio_util::sync::CancellationToken,
    /// Cancelled when the node stops taking calls: new ones are refused UNAVAILABLE.
    pub closing: tokio_util::sync::CancellationToken,
    /// Calls refused so since (the drain waits for a quiet moment before it closes the connections).
    pub refused_closing: Arc<std::sync::atomic::AtomicU64>,
}

/// A checked request context.
#[derive(Debug, Clone)]
pub struct Context {
    pub purpose: Purpose,
    pub break_glass: Option<BreakGlass>,
    /// The practitioner the calling system says is acting, and their role (empty when it names none).
    pub acting_person: Option<(String, String)>,
}

/// The longest acting-person id or role a request may assert.
const ACTING_PERSON_MAX: usize = 64;

impl Query {
    /// Who asks, as the disclosure rules take it: the caller's principal, the checked context's purpose and
    /// break-glass, now.
    pub(crate) fn asker<'a>(
        &'a self,
        caller: &'a crate::auth::Caller,
        ctx: &'a Context,
    ) -> halcyon_projector::disclose::Asker<'a> {
        halcyon_projector::disclose::Asker {
            policy: &self.policy,
            registry: &self.registry,
            principal: &caller.principal,
            purpose: ctx.purpose,
            break_glass: ctx.break_glass.as_ref(),
            now_ms: halcyon_schema::clock::now_ms(),
        }
    }

    /// A child's facts, decoded with their sharing state: from the node's cache while nothing new has been
    /// projected since they were read, otherwise read from sled off the async runtime.
    pub(crate) async fn child_facts(&self, child: ChildId) -> Result<Arc<ChildFacts>, ApiError> {
        let projector = self.projector.get();
        let cache = FactCache::of(&projector);
        if let Some(hit) = cache.cached(&child) {
            return Ok(hit);
        }
        Ok(
            tokio::task::spawn_blocking(move || cache.load(&projector, &child))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??,
        )
    }

    /// The child an identifier names: from the node's cache while nothing new has been projected since it
    /// was resolved (a batch can link identifiers), otherwise read from sled off the async runtime.
    pub(crate) async fn resolve(&self, identifier: Identifier) -> Result<ChildId, ApiError> {
        let projector = self.projector.get();
        let cache = FactCache::of(&projector);
        if let Some(hit) = cache.resolved(&identifier) {
            return Ok(hit);
        }
        Ok(
            tokio::task::spawn_blocking(move || cache.resolve(&projector, &identifier))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??,
        )
    }

    /// Parses a child id from a request.
    pub(crate) fn child_id(raw: &str) -> Result<ChildId, ApiError> {
        raw.parse().map_err(ApiError::from)
    }

    /// Admits a call or sheds it when the node is at its concurrency limit.
    pub(crate) fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        if self.closing.is_cancelled() {
            self.refused_closing
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ApiError::Unavailable(
                "this node is shutting down; retry on another node".into(),
            ));
        }
        self.admission.clone().try_acquire_owned().map_err(|_| {
            self.metrics.calls_shed.inc();
            ApiError::Overloaded("the node is at its concurrency limit; retry with backoff".into())
        })
    }

    /// Checks a request's context: purpose, break-glass, read-your-writes positions (`Query::gate` calls it).
    pub(crate) async fn context(&self, ctx: Option<&pb::RequestContext>) -> Result<Context, ApiError> {
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
            self.projector
                .get()
                .wait_for_derived(&wanted, self.read_wait)
                .await?;
        }
        let acting_person = acting_person(ctx)?;
        Ok(Context {
            purpose,
            break_glass,
            acting_person,
        })
    }

    pub(crate) fn identifier(nhs: &str) -> Result<Identifier, ApiError> {
        Ok(Identifier::Nhs(nhs.parse().map_err(ApiError::from)?))
    }
}

/// The acting practitioner a request asserts: an identifier and a role, each at most
/// [`ACTING_PERSON_MAX`] printable characters (an identifier within the calling agency, not a name); a role
/// without an identifier is refused.
fn acting_person(ctx: &pb::RequestContext) -> Result<Option<(String, String)>, ApiError> {
    let (id, role) = (ctx.acting_person_id.trim(), ctx.acting_person_role.trim());
    for (field, value) in [("acting_person_id", id), ("acting_person_role", role)] {
        if value.chars().count() > ACTING_PERSON_MAX || value.chars().any(char::is_control) {
            return Err(ApiError::Invalid(format!(
                "context.{field}: at most {ACTING_PERSON_MAX} printable characters"
            )));
        }
    }
    match (id.is_empty(), role.is_empty()) {
        (true, true) => Ok(None),
        (true, false) => Err(ApiError::Invalid(
            "context.acting_person_role without context.acting_person_id: name the practitioner".into(),
        )),
        (false, _) => Ok(Some((id.to_owned(), role.to_owned()))),
    }
}
