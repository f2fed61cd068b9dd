# Sourced by demo.sh and demo-cluster.sh: the repository root as working directory, the halcyon binary, a
# nats-server of 2.12 or later (the pinned one installed into .tools/bin if none is on PATH), a free port.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
halcyon="${HALCYON_BIN:-$root/target/debug/halcyon}"

nats_server="$(command -v nats-server || true)"
if [ -z "$nats_server" ] || ! "$nats_server" --version | grep -Eq 'v2\.(1[2-9]|[2-9][0-9])'; then
  "$root/deploy/install-nats-server.sh" >/dev/null
  nats_server="$root/.tools/bin/nats-server"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
