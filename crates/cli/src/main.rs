//! The `halcyon` binary: parses arguments and hands over to the library.
#![forbid(unsafe_code)]

/// mimalloc rather than glibc's allocator: a query allocates and frees many small buffers (request,
/// view, access record, protobuf encodings) on several threads, and glibc's malloc/free took about a
/// quarter of the node's CPU under 16 concurrent calls.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    halcyon_cli::main()
}
