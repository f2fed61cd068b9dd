//! The query service as the node serves it: `FindChild` and `GetChildView` answer with [`ViewReply`] bytes
//! through [`ViewCodec`] (`reply.rs`), every other method goes to the generated server.

use std::sync::Arc;

use halcyon_grpc::pb::{self, query_service_server::QueryServiceServer};
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::limits::{REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX};
use crate::query::Query;
use crate::reply::{ViewCodec, ViewReply};

/// The query service as the node serves it: `FindChild` and `GetChildView` answer with [`ViewReply`],
/// everything else goes to the generated server.
#[derive(Debug, Clone)]
pub struct QueryRoutes {
    generated: QueryServiceServer<Query>,
    query: Arc<Query>,
}

impl QueryRoutes {
    pub fn new(query: Query) -> Self {
        Self {
            generated: QueryServiceServer::new(query.clone())
                .max_decoding_message_size(REQUEST_BYTES_MAX)
                .max_encoding_message_size(RESPONSE_BYTES_MAX),
            query: Arc::new(query),
        }
    }
}

impl NamedService for QueryRoutes {
    const NAME: &'static str = <QueryServiceServer<Query> as NamedService>::NAME;
}

struct FindChild(Arc<Query>);

impl UnaryService<pb::FindChildRequest> for FindChild {
    type Response = ViewReply;
    type Future = BoxFuture<Response<ViewReply>, Status>;

    fn call(&mut self, request: Request<pb::FindChildRequest>) -> Self::Future {
        let query = self.0.clone();
        Box::pin(async move { query.find_child_reply(request).await })
    }
}

struct GetChildView(Arc<Query>);

impl UnaryService<pb::GetChildViewRequest> for GetChildView {
    type Response = ViewReply;
    type Future = BoxFuture<Response<ViewReply>, Status>;

    fn call(&mut self, request: Request<pb::GetChildViewRequest>) -> Self::Future {
        let query = self.0.clone();
        Box::pin(async move { query.get_child_view_reply(request).await })
    }
}

fn grpc<U: prost::Message + Default + Send + 'static>() -> tonic::server::Grpc<ViewCodec<U>> {
    tonic::server::Grpc::new(ViewCodec::default())
        .apply_max_message_size_config(Some(REQUEST_BYTES_MAX), Some(RESPONSE_BYTES_MAX))
}

impl<B> Service<http::Request<B>> for QueryRoutes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The path is `/<service>/<method>`.
        let method = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(Self::NAME))
            .and_then(|p| p.strip_prefix('/'));
        match method {
            Some("FindChild") => {
                let method = FindChild(self.query.clone());
                Box::pin(async move { Ok(grpc().unary(method, req).await) })
            }
            Some("GetChildView") => {
                let method = GetChildView(self.query.clone());
                Box::pin(async move { Ok(grpc().unary(method, req).await) })
            }
            _ => self.generated.call(req),
        }
    }
}
