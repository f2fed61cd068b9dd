#!/usr/bin/env bash
# The demo: a local single-node NATS JetStream (syncing every write) and one halcyon node with its read
# models in .demo/, a multi-agency scenario published by each agency under its own NATS identity, then
# what each agency may see about the same child. Stops everything it started.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
demo="$root/.demo"
halcyon="${HALCYON_BIN:-$root/target/debug/halcyon}"

nats_server="$(command -v nats-server || true)"
if [ -z "$nats_server" ] || ! "$nats_server" --version | grep -Eq 'v2\.(1[2-9]|[2-9][0-9])'; then
  "$root/deploy/install-nats-server.sh" >/dev/null
  nats_server="$root/.tools/bin/nats-server"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "demo: nothing listening on port $1; see $2" >&2
  return 1
}

rm -rf "$demo"
mkdir -p "$demo"
nats_port=$(free_port); monitor_port=$(free_port); api_port=$(free_port)
cp deploy/nats/accounts.conf "$demo/accounts.conf"
sed -e "s|^listen: .*|listen: 127.0.0.1:$nats_port|" \
    -e "s|^http: .*|http: 127.0.0.1:$monitor_port|" \
    -e "s|store_dir: .*|store_dir: \"$demo/nats\"|" \
    deploy/nats/single.conf > "$demo/nats.conf"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"$nats_server" -c "$demo/nats.conf" >"$demo/nats.log" 2>&1 &
pids+=($!)
wait_port "$nats_port" "$demo/nats.log"

export HALCYON_NATS_URL="nats://127.0.0.1:$nats_port"
export HALCYON_API="http://127.0.0.1:$api_port"

echo "== provisioning streams (as operator)"
HALCYON_LOG=warn HALCYON_NATS_USER=operator HALCYON_NATS_PASSWORD=operator-dev-secret "$halcyon" streams apply | sed 's/^/   /'

HALCYON_NATS_USER=halcyon-node HALCYON_NATS_PASSWORD=node-dev-secret \
HALCYON_NATS_MONITOR_URL="http://127.0.0.1:$monitor_port" \
HALCYON_LOG="${HALCYON_LOG:-info,async_nats=warn}" \
  "$halcyon" serve --data-dir "$demo/data" --listen "127.0.0.1:$api_port" --node-id demo-node \
    --checkpoint-key deploy/checkpoint-dev.key --checkpoint-every-secs 1 \
  >"$demo/node.log" 2>&1 &
pids+=($!)
wait_port "$api_port" "$demo/node.log"

echo "== publishing a scenario: 3 children, each agency under its own NATS identity"
"$halcyon" publish --scenario-children 3 --seed 2026 --credentials deploy/nats/dev-credentials.toml --quiet \
  | tee "$demo/publish.out" | sed 's/^/   /'
after=$(sed -n 's/^position //p' "$demo/publish.out" | sed 's/^/--after /' | tr '\n' ' ')
nhs=$(sed -n 's/^child 1: NHS number //p' "$demo/publish.out")

show() {
  local agency=$1 purpose=$2 title=$3
  echo
  echo "== $title ($agency), purpose $purpose"
  # shellcheck disable=SC2086
  "$halcyon" child --token "demo-$agency" --nhs "$nhs" --purpose "$purpose" $after | sed 's/^/   /'
}
show csc-rotherham safeguarding "Children's social care, the owning authority"
show police-sy safeguarding "Police"
show school-oakwood safeguarding "School designated safeguarding lead"
echo
echo "== A&E (unscheduled care, health-rgh-ed): a CP-IS-style flag check"
# shellcheck disable=SC2086
"$halcyon" flag --token demo-health-rgh-ed --nhs "$nhs" $after | sed 's/^/   /'
show health-rgh-ed direct_care "A&E's full view for direct care"
show mash-rotherham safeguarding "MASH"
show vol-safe-haven safeguarding "Voluntary sector project"

echo
echo "== every one of those answers was recorded in the AUDIT stream before it was sent:"
grep -c 'access recorded' "$demo/node.log" | sed 's/^/   access records written: /'
echo "   (node log: $demo/node.log; NATS log: $demo/nats.log)"

echo
echo "== tamper evidence: each stream's hash chain re-derived against the node's signed checkpoints (dev key)"
for _ in $(seq 1 50); do
  verified=$(HALCYON_LOG=warn HALCYON_NATS_USER=operator HALCYON_NATS_PASSWORD=operator-dev-secret \
    "$halcyon" audit verify --public-key deploy/checkpoint-dev.key.pub) && ! grep -q 'not yet checkpointed' <<<"$verified" && break
  sleep 0.2
done
echo "$verified" | sed 's/^/   /'
