//! API errors and the one place they become gRPC statuses.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown credentials. -> UNAUTHENTICATED
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but this principal may not make this call. -> PERMISSION_DENIED
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed: a missing purpose, a bad identifier. -> INVALID_ARGUMENT
    #[error("{0}")]
    Invalid(String),
    /// No such child, or nothing this principal may know exists. -> NOT_FOUND
    #[error("{0}")]
    NotFound(String),
    /// The node has not projected the requested positions in time. -> DEADLINE_EXCEEDED
    #[error("{0}")]
    NotCaughtUp(String),
    /// The audit record could not be written, so nothing is disclosed. -> UNAVAILABLE
    #[error("audit record not written, nothing disclosed: {0}")]
    AuditUnavailable(String),
    /// Something the call reads from NATS cannot be read now (e.g. the AUDIT stream a watch follows for
    /// notifications); nothing was disclosed. -> UNAVAILABLE
    #[error("unavailable, nothing disclosed: {0}")]
    Unavailable(String),
    /// The node is at its concurrency limit. -> RESOURCE_EXHAUSTED
    #[error("{0}")]
    Overloaded(String),
    /// The read models failed. -> INTERNAL (details logged, not returned)
    #[error("internal error")]
    Internal(String),
}

/// A malformed identifier in a request is the caller's to fix: INVALID_ARGUMENT, naming the identifier.
impl From<halcyon_schema::IdError> for ApiError {
    fn from(e: halcyon_schema::IdError) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Forbidden(_) => Code::PermissionDenied,
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::NotCaughtUp(_) => Code::DeadlineExceeded,
            ApiError::AuditUnavailable(_) | ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Overloaded(_) => Code::ResourceExhausted,
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error answering a call");
                Code::Internal
            }
        };
        Status::new(code, e.to_string())
    }
}

impl From<halcyon_projector::ProjectorError> for ApiError {
    fn from(e: halcyon_projector::ProjectorError) -> Self {
        match e {
            halcyon_projector::ProjectorError::NotYet { .. } => ApiError::NotCaughtUp(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
