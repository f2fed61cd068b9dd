//! Generates the gRPC stubs of the services in `proto/halcyon/v1/` with `protox` (pure Rust, no `protoc`). The
//! messages are not generated again: they are `halcyon_schema::pb`'s (`extern_path`).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled for one checkout must not read another's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files =
        ["query", "audit", "deadlines", "signals"].map(|name| root.join(format!("halcyon/v1/{name}.proto")));
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(&files, [&root])?;
    let fds = prost_types::FileDescriptorSet::decode(fds.encode_to_vec().as_slice())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".halcyon.v1", "::halcyon_schema::pb")
        .compile_fds(fds)?;
    Ok(())
}
