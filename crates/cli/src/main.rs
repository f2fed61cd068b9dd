//! The `halcyon` binary: parses arguments and hands over to the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    halcyon_cli::main()
}
