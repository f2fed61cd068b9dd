#!/usr/bin/env bash
# The cluster demo: three NATS JetStream servers (deploy/nats/cluster/n1..n3.conf: routes, zone tags with
# unique_tag, sync_interval always, TLS on client and route listeners with dev certificates made here) and
# two halcyon nodes in front of them. The operator applies deploy/streams.toml (R3: one copy per zone); the
# node checks it. Agencies publish a scenario while a server is SIGKILLed part-way and queries go on; then
# every acknowledged event is shown to be in the streams once, the node to have projected them all, and
# the killed server to rejoin. Stops everything it started.
set -euo pipefail

# shellcheck source=deploy/demo-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo-common.sh"
demo="$root/.demo/cluster"

for port in 4301 4302 4303 6301 6302 6303 8301 8302 8303; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo-cluster: port $port is taken (deploy/nats/cluster/ uses 4301-4303, 6301-6303, 8301-8303)" >&2
    exit 1
  fi
done
healthy() { python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=1).status == 200)
except Exception:
    print(False)
EOF
}
wait_healthy() {
  for _ in $(seq 1 300); do
    [ "$(healthy "$1")" = True ] && return 0
    sleep 0.1
  done
  echo "demo-cluster: the server with monitoring port $1 is not healthy; see $demo/*.log" >&2
  return 1
}

rm -rf "$demo"
mkdir -p "$demo"
echo "== development certificates (never for production): deploy/nats/cluster/certs/"
./deploy/nats/cluster/gen-dev-certs.sh >/dev/null
ls deploy/nats/cluster/certs | sed 's/^/   /'

pids=()
declare -A server_pid
cleanup() {
  for pid in "${pids[@]}" "${server_pid[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" "${server_pid[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

start_server() {
  "$nats_server" -c "deploy/nats/cluster/$1.conf" >>"$demo/$1.log" 2>&1 &
  server_pid[$1]=$!
}
echo
echo "== three servers, one per zone (az:zone-a/b/c), routes and clients over TLS"
for n in n1 n2 n3; do start_server $n; done
for port in 8301 8302 8303; do wait_healthy $port; done
echo "   n1, n2, n3 healthy with a JetStream meta leader"

seeds="tls://127.0.0.1:4301,tls://127.0.0.1:4302,tls://127.0.0.1:4303"
monitors="http://127.0.0.1:8301,http://127.0.0.1:8302,http://127.0.0.1:8303"
certs=deploy/nats/cluster/certs
export HALCYON_NATS_URL="$seeds" HALCYON_NATS_CA="$certs/ca.pem"
export HALCYON_CREDENTIALS=deploy/nats/dev-credentials.toml
api_port=$(free_port)
api_port2=$(free_port)
export HALCYON_API="http://127.0.0.1:$api_port"
api2="http://127.0.0.1:$api_port2"

echo
echo "== the operator applies the stream spec deploy/streams.toml (three replicas, one per zone)"
HALCYON_LOG=warn "$halcyon" streams apply --spec deploy/streams.toml --nats-user operator | sed 's/^/   /'

echo
echo "== two halcyon nodes: every server a seed and a monitoring endpoint; TLS with the partnership's CA and"
echo "   its client certificate; each checks the streams against the spec and every server for sync, claims"
echo "   its node id in the nodes bucket and writes a heartbeat; one holds the checkpoint duty at a time"
start_node() { # id port log
  HALCYON_NATS_USER=halcyon-node HALCYON_NATS_CERT="$certs/client.pem" HALCYON_NATS_KEY="$certs/client-key.pem" \
  HALCYON_LOG="${HALCYON_LOG:-info,async_nats=warn}" HALCYON_HEARTBEAT_SECS=1 HALCYON_LEASE_SECS=5 \
    "$halcyon" serve --streams-spec deploy/streams.toml --nats-monitor-url "$monitors" \
      --data-dir "$demo/data-$1" --listen "127.0.0.1:$2" --node-id "$1" \
      --checkpoint-key deploy/checkpoint-dev.key --keyring deploy/keyring-dev.toml --checkpoint-every-secs 1 \
    >"$3" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -q "halcyon node serving" "$3" && return 0
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then cat "$3" >&2; exit 1; fi
    sleep 0.1
  done
}
start_node demo-node-1 "$api_port" "$demo/node.log"
start_node demo-node-2 "$api_port2" "$demo/node2.log"
grep -o 'every server holding a stream syncs each write.*' "$demo/node.log" | head -1 | sed 's/^/   /'

echo
echo "== agencies publish 600 children's events; n2 is SIGKILLed part-way while a caller keeps asking"
"$halcyon" publish --scenario-children 600 --seed 2027 --quiet >"$demo/publish.out" 2>"$demo/publish.err" &
publisher=$!
nhs=""
for _ in $(seq 1 100); do
  nhs=$(sed -n 's/^child 1: NHS number //p' "$demo/publish.out")
  [ -n "$nhs" ] && break
  sleep 0.05
done
asked=0; answered=0; refused=0; unknown=0
ask() {
  asked=$((asked + 1))
  if "$halcyon" child --token demo-csc-rotherham --nhs "$nhs" --purpose safeguarding >/dev/null 2>"$demo/query.err"; then
    answered=$((answered + 1))
  elif grep -qi unavailable "$demo/query.err"; then
    refused=$((refused + 1))
  else
    unknown=$((unknown + 1))
  fi
  cat "$demo/query.err" >>"$demo/queries.err"
}
ask
kill -KILL "${server_pid[n2]}"
wait "${server_pid[n2]}" 2>/dev/null || true
unset 'server_pid[n2]'
echo "   n2 killed"
while kill -0 "$publisher" 2>/dev/null; do ask; sleep 0.2; done
wait "$publisher"
grep -v '^child ' "$demo/publish.out" | sed 's/^/   /'
ask
echo "   queries meanwhile: $asked asked, $answered answered, $refused refused as UNAVAILABLE (fail closed), $unknown before the child was projected"

echo
echo "== nothing acknowledged is missing: the streams (on n1 and n3) hold every published event once"
after=$(sed -n 's/^position //p' "$demo/publish.out" | sed 's/^/--after /' | tr '\n' ' ')
published=$(sed -n 's/^published \([0-9]*\) events.*/\1/p' "$demo/publish.out")
HALCYON_LOG=warn "$halcyon" streams check --spec deploy/streams.toml --nats-user operator \
  | tee "$demo/check.out" | sed 's/^/   /'
stored=$(grep '^EVENTS_' "$demo/check.out" | sed -n 's/.*, \([0-9]*\) messages.*/\1/p' | awk '{s += $1} END {print s}')
echo "   published (acknowledged): $published; stored in the agency streams: $stored"
[ "$published" = "$stored" ] || { echo "demo-cluster: acknowledged events missing" >&2; exit 1; }

echo
echo "== answers continue: children's social care asks about child 1 after everything published"
# The node may still be catching up: a consumer that stalled when n2 died is noticed after two quiet
# checks (10 s) and recreated; each ask waits up to 5 s for the positions.
for attempt in $(seq 1 12); do
  # shellcheck disable=SC2086
  if "$halcyon" child --token demo-csc-rotherham --nhs "$nhs" --purpose safeguarding $after >"$demo/child.out" 2>"$demo/child.err"; then
    break
  fi
  [ "$attempt" = 12 ] && { cat "$demo/child.err" >&2; exit 1; }
done
head -4 "$demo/child.out" | sed 's/^/   /'

echo
echo "== n2 restarted: it rejoins and catches up"
start_server n2
wait_healthy 8302
for _ in $(seq 1 100); do
  HALCYON_LOG=warn "$halcyon" streams check --spec deploy/streams.toml --nats-user operator >"$demo/check2.out" 2>&1 || true
  grep '^AUDIT' "$demo/check2.out" | grep -q "n2 current" && break
  sleep 0.2
done
grep '^AUDIT' "$demo/check2.out" | sed 's/^/   /'

echo
echo "== two nodes: A&E checks a flag on node 1; the owning authority, watching on node 2, is notified"
flagged=""
for n in $(sed -n 's/^child [0-9]*: NHS number //p' "$demo/publish.out"); do
  # shellcheck disable=SC2086
  if HALCYON_API="$api2" "$halcyon" flag --token demo-health-rgh-ed --nhs "$n" $after 2>/dev/null | grep -q "owning authority:"; then
    flagged=$n; break
  fi
done
[ -n "$flagged" ] || { echo "demo-cluster: no published child has a flag" >&2; exit 1; }
HALCYON_API="$api2" "$halcyon" notifications --token demo-csc-rotherham --count 1 --timeout-secs 30 >"$demo/notified.out" &
watcher=$!
sleep 2
# shellcheck disable=SC2086
"$halcyon" flag --token demo-health-rgh-ed --nhs "$flagged" $after | sed 's/^/   node 1 answers: /'
wait "$watcher" || { echo "demo-cluster: the owner watching on node 2 was not notified" >&2; exit 1; }
sed 's/^/   node 2 delivers: /' "$demo/notified.out"
position=$(sed -n 's/.*position //p' "$demo/notified.out")
echo "   the owner stops watching; A&E checks again on node 1; the owner resumes on node 2 from $position:"
# shellcheck disable=SC2086
"$halcyon" flag --token demo-health-rgh-ed --nhs "$flagged" $after >/dev/null
HALCYON_API="$api2" "$halcyon" notifications --token demo-csc-rotherham --resume-after "$position" --count 1 \
  --timeout-secs 30 | sed 's/^/   node 2 delivers (resumed): /'

echo
echo "== the nodes, from their heartbeats (halcyon nodes)"
HALCYON_LOG=warn "$halcyon" nodes --nats-user operator | sed 's/^/   /'
echo "   (logs: $demo/*.log)"
