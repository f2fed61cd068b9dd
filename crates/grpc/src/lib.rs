//! Halcyon's gRPC stubs (`QueryService` and its kin, client and server), generated from `proto/` over the
//! messages of [`halcyon_schema::pb`]. Only the crates that serve or call gRPC depend on this one.
#![forbid(unsafe_code)]

/// The messages of `halcyon.v1` and, beside them, the generated client and server modules.
pub mod pb {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    pub use halcyon_schema::pb::*;
    tonic::include_proto!("halcyon.v1");
}
