//! `halcyon-bench`: Halcyon's hot paths, each beside a baseline measured in the same run (`just bench`).
//! A binary of its own, so that the shipped `halcyon` binary links no test kit.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use halcyon_cli::Failure;

mod bench;

/// The same allocator as the `halcyon` binary, so that in-process figures match the node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "halcyon-bench",
    version,
    about = "Measure Halcyon's hot paths, each beside a baseline from the same run; writes target/bench/report.json."
)]
struct Cli {
    #[command(flatten)]
    args: bench::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HALCYON_LOG")
                .unwrap_or_else(|_| "warn,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench::run(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
