//! Generates the wire types from `proto/` with `protox` (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled for one checkout must not read another's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "categories",
        "envelope",
        "events",
        "common",
        "deadlines",
        "signals",
        "query",
        "audit",
    ]
    .map(|name| root.join(format!("halcyon/v1/{name}.proto")));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    // Re-decode through our own prost-types so the build does not depend on protox's prost version.
    let fds = prost_types::FileDescriptorSet::decode(fds.encode_to_vec().as_slice())?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("halcyon_descriptor.bin"), fds.encode_to_vec())?;
    // Well-known types come from pbjson-types so that every message has proto3 JSON (serde) too.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds.clone())?;
    pbjson_build::Builder::new()
        .register_descriptors(&fds.encode_to_vec())?
        .preserve_proto_field_names()
        .build(&[".halcyon"])?;
    Ok(())
}
