//! Errors of the projector.

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("read models at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("read models: {0}")]
    Sled(#[from] sled::Error),
    #[error("read models hold a corrupt record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("timed out after {waited_ms} ms waiting for positions {missing}")]
    NotYet { waited_ms: u64, missing: String },
    #[error("stream {stream}: expected sequence {expected} next but got {got}; nothing applied")]
    Gap { stream: String, expected: u64, got: u64 },
    #[error("export: {0}")]
    Io(#[from] std::io::Error),
}
