//! The audit service: the access log (D13) for the people entitled to it. A privacy officer sees every
//! record; any other principal sees the records of its own agency's calls and of accesses to children its
//! agency owns (as CP-IS shows an authority who looked at its children). Reading the log is itself audited.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use halcyon_bus::audit::decode_records;
use halcyon_policy::{Purpose, Role};
use halcyon_projector::{Projector, SharingState};
use halcyon_schema::convert::timestamp_millis;
use halcyon_schema::pb::{self, audit_service_server::AuditService};
use halcyon_schema::subject::AUDIT_STREAM;
use halcyon_schema::{AgencyId, Category, ChildId};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::query::Query;
use crate::view::Disclosure;

/// Records returned at most per call.
pub const ACCESS_PAGE_MAX: u32 = 1000;
const ACCESS_PAGE_DEFAULT: u32 = 100;

#[derive(Debug, Clone)]
pub struct AccessLog {
    pub query: Query,
    pub js: jetstream::Context,
}

impl AccessLog {
    /// Every access record in the AUDIT stream, oldest first.
    async fn records(&self) -> Result<Vec<pb::AccessRecord>, ApiError> {
        let unavailable =
            |e: &dyn std::fmt::Display| ApiError::AuditUnavailable(format!("reading the access log: {e}"));
        let mut stream = self
            .js
            .get_stream(AUDIT_STREAM)
            .await
            .map_err(|e| unavailable(&e))?;
        let last = stream
            .info()
            .await
            .map_err(|e| unavailable(&e))?
            .state
            .last_sequence;
        let mut records = Vec::new();
        if last == 0 {
            return Ok(records);
        }
        let mut messages = halcyon_bus::ordered_messages(&self.js, AUDIT_STREAM, 1)
            .await
            .map_err(|e| unavailable(&e))?;
        while let Some(m) = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| unavailable(&"timed out"))?
        {
            let m = m.map_err(|e| unavailable(&e))?;
            records.extend(decode_records(&m.payload).map_err(|e| ApiError::Internal(e.to_string()))?);
            if m.sequence >= last {
                break;
            }
        }
        Ok(records)
    }
}

/// The owning agency of each child asked about, memoised per call.
struct Owners<'a> {
    projector: &'a Arc<Projector>,
    known: HashMap<String, Option<AgencyId>>,
}

impl Owners<'_> {
    fn of(&mut self, child: &str) -> Option<AgencyId> {
        if let Some(owner) = self.known.get(child) {
            return owner.clone();
        }
        let owner = child
            .parse::<ChildId>()
            .ok()
            .and_then(|c| self.projector.facts(&c).ok())
            .and_then(|facts| SharingState::derive(&facts).owner);
        self.known.insert(child.to_owned(), owner.clone());
        owner
    }
}

#[tonic::async_trait]
impl AuditService for AccessLog {
    async fn list_access(
        &self,
        request: Request<pb::ListAccessRequest>,
    ) -> Result<Response<pb::ListAccessResponse>, Status> {
        let caller = self.query.auth.authenticate(&request)?;
        let req = request.into_inner();
        let ctx = self.query.checked_context(req.context.as_ref()).await?;
        if !matches!(
            ctx.purpose,
            Purpose::Audit | Purpose::StatutoryReview | Purpose::Safeguarding
        ) {
            return Err(ApiError::Invalid(
                "the access log is read for audit, statutory_review or safeguarding".into(),
            )
            .into());
        }
        let page = match req.page_size {
            0 => ACCESS_PAGE_DEFAULT,
            n if n > ACCESS_PAGE_MAX => {
                return Err(
                    ApiError::Invalid(format!("page_size {n} is over the cap of {ACCESS_PAGE_MAX}")).into(),
                );
            }
            n => n,
        } as usize;
        let (from, to) = (
            req.from.as_ref().map(timestamp_millis),
            req.to.as_ref().map(timestamp_millis),
        );
        let governance = caller.principal.role == Role::PrivacyOfficer;
        let mut owners = Owners {
            projector: &self.query.projector,
            known: HashMap::new(),
        };
        let mut records: Vec<pb::AccessRecord> = self
            .records()
            .await?
            .into_iter()
            .filter(|r| req.child_id.is_empty() || r.child_id == req.child_id)
            .filter(|r| req.agency_id.is_empty() || r.agency_id == req.agency_id)
            .filter(|r| {
                let at = r.at.as_ref().map(timestamp_millis).unwrap_or_default();
                from.is_none_or(|f| at >= f) && to.is_none_or(|t| at <= t)
            })
            .filter(|r| {
                governance
                    || r.agency_id == caller.principal.agency.as_str()
                    || owners
                        .of(&r.child_id)
                        .is_some_and(|o| o == caller.principal.agency)
            })
            .collect();
        // The most recent page, oldest first.
        let skip = records.len().saturating_sub(page);
        records.drain(..skip);
        let child = req.child_id.parse::<ChildId>().ok();
        let disclosure = Disclosure {
            categories_disclosed: [Category::ACCESS_LOG].into_iter().collect(),
            rules: [if governance {
                "D13.privacy-officer"
            } else {
                "D13.own-queries-or-owner"
            }
            .to_owned()]
            .into_iter()
            .collect(),
            facts_disclosed: records.len() as u32,
            ..Default::default()
        };
        let outcome = if records.is_empty() {
            pb::AccessOutcome::Denied
        } else {
            pb::AccessOutcome::Permitted
        };
        self.query
            .record_access(&caller, &ctx, "ListAccess", child, &disclosure, outcome)
            .await?;
        Ok(Response::new(pb::ListAccessResponse { records }))
    }
}
