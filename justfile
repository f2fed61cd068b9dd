# Halcyon's front door. `just demo` and `just test` work on a fresh machine with Rust and just; they install
# the pinned nats-server themselves (deploy/install-nats-server.sh).

set shell := ["bash", "-euo", "pipefail", "-c"]

# Use the project-local nats-server when there is one.
export PATH := justfile_directory() + "/.tools/bin:" + env_var('PATH')

default:
    @just --list

# Install the pinned nats-server into .tools/bin unless a recent one is already on PATH.
nats-server:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v nats-server >/dev/null && nats-server --version | grep -Eq 'v2\.(1[2-9]|[2-9][0-9])'; then
      exit 0
    fi
    ./deploy/install-nats-server.sh

# Install the pinned headless Chromium (.tools/chromium) the chronology test loads its HTML page in.
chromium:
    ./deploy/install-chromium.sh

# A local NATS JetStream and a halcyon node; publish a multi-agency scenario; show what each agency sees.
demo: nats-server
    cargo build --locked -p halcyon-cli
    ./deploy/demo.sh

# Three NATS JetStream servers (TLS, zones, sync always) and a node on R3 streams; a server is killed while
# agencies publish and a caller queries; nothing acknowledged is missing; the server rejoins.
demo-cluster: nats-server
    cargo build --locked -p halcyon-cli
    ./deploy/demo-cluster.sh

# Install the pinned Prometheus server and promtool (.tools/bin) the metrics tests check the node against.
prometheus:
    ./deploy/install-prometheus.sh

# Install the pinned buf CLI (.tools/bin/buf) that checks the wire contract.
buf:
    ./deploy/install-buf.sh

# The wire contract: `buf lint`, and `buf breaking` against the released contract (docs/contract.md).
contract: buf
    buf lint proto
    buf breaking proto --against proto/released/halcyon-v1.binpb

# Make the working tree's contract the released one (a release step, after `just contract` passes).
contract-release: contract
    buf build proto -o proto/released/halcyon-v1.binpb

# Write docs/api.md from the contract's comments (a test fails when it is stale).
api-docs:
    HALCYON_WRITE_API_DOCS=1 cargo test --locked -p halcyon-schema --lib api_docs

# The whole suite: unit, property, and end-to-end tests over real nats-server, sled and gRPC.
test: nats-server chromium prometheus buf
    cargo test --locked --workspace --no-fail-fast

# Hot paths, each beside a baseline from the same run, on its own nats-servers; table + target/bench/report.json.
bench *ARGS: nats-server
    cargo build --locked --release -p halcyon-cli -p halcyon-bench
    HALCYON_LOG="${HALCYON_LOG:-warn}" ./target/release/halcyon-bench {{ARGS}}

# Formatting, clippy (warnings as errors) and the wire contract.
lint: contract
    cargo fmt --all -- --check
    cargo clippy --locked --workspace --all-targets -- -D warnings

fmt:
    cargo fmt --all
