//! The generated `QueryService` trait, implemented by handing each method to its module (`child.rs`,
//! `watch.rs`); `GetPositions` and `ListQuarantine` are answered here. The node serves `FindChild` and
//! `GetChildView` through `routes.rs` instead, with the same answers as pre-encoded bytes.

use halcyon_grpc::pb::{self, query_service_server::QueryService};
use halcyon_policy::Role;
use halcyon_schema::convert::timestamp_from_millis;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::query::Query;
use crate::reply::ViewReply;
use crate::watch::WatchStream;

#[tonic::async_trait]
impl QueryService for Query {
    type WatchStream = WatchStream;

    async fn get_chronology(
        &self,
        request: Request<pb::GetChronologyRequest>,
    ) -> Result<Response<pb::ChronologyPage>, Status> {
        Query::get_chronology(self, request).await
    }

    async fn check_flag(
        &self,
        request: Request<pb::CheckFlagRequest>,
    ) -> Result<Response<pb::FlagStatus>, Status> {
        Query::check_flag(self, request).await
    }

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        Query::watch(self, request).await
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
            .get()
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
            (true, false) => Some(wanted.parse().map_err(ApiError::from)?),
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
        let projector = self.projector.get();
        let records = tokio::task::spawn_blocking(move || projector.quarantine(agency.as_ref()))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
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
                .get()
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
