# Sourced by demo.sh and demo-cluster.sh: the repository root as working directory, the halcyon binary, a
# nats-server of 2.12 or later (the pinned one installed into .tools/bin if none is on PATH), a free port.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Where cargo put the binary: $HALCYON_BIN, else $CARGO_TARGET_DIR (relative to the root, as cargo takes
# it), else target/.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
halcyon="${HALCYON_BIN:-$target_dir/debug/halcyon}"
if [ ! -x "$halcyon" ]; then
  echo "demo: no halcyon binary at $halcyon (cargo build -p halcyon-cli, or set HALCYON_BIN)" >&2
  exit 1
fi

nats_server="$(command -v nats-server || true)"
if [ -z "$nats_server" ] || ! "$nats_server" --version | grep -Eq 'v2\.(1[2-9]|[2-9][0-9])'; then
  "$root/deploy/install-nats-server.sh" >/dev/null
  nats_server="$root/.tools/bin/nats-server"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
