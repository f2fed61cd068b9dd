//! Halcyon's wire contract and domain types: the generated protobuf (`pb`), identifiers that are valid
//! by construction, and envelope validation that reports every problem it finds. No I/O.
#![forbid(unsafe_code)]

pub mod agencies;
pub mod api_docs;
pub mod catalogue;
pub mod clock;
pub mod convert;
pub mod id_error;
pub mod ids;
pub mod nhs;
pub mod review;
pub mod source;
pub mod subject;
pub mod upcast;
pub mod upn;
pub mod validate;

/// Generated protobuf types for `halcyon.v1` (the gRPC stubs are in `halcyon-grpc`).
pub mod pb {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/halcyon.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/halcyon.v1.serde.rs"));

    /// The encoded `FileDescriptorSet`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/halcyon_descriptor.bin"));
}

pub use agencies::{Agency, AgencyKind, Registry};
pub use convert::{Category, EventKindExt};
pub use ids::{AgencyId, CaseId, ChildId, EventId, IdError};
pub use nhs::NhsNumber;
pub use subject::{StreamName, audit_subject, event_subject, parse_event_subject};
pub use upcast::upcast;
pub use upn::Upn;
pub use validate::{Problem, SCHEMA_VERSION, SCHEMA_VERSION_OLDEST, check_envelope, validate_envelope};
