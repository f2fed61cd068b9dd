#!/usr/bin/env bash
# The demo: a local single-node NATS JetStream (syncing every write) and one halcyon node with its read
# models in .demo/, a multi-agency scenario published by each agency under its own NATS identity, then
# what each agency may see about the same child; a further child's exploitation pattern across agencies
# (deploy/demo/exploitation.jsonl) raising a multi-agency signal for the MASH, which records an outcome;
# the statutory deadline breaches children's social care may know of; tamper evidence. Stops everything
# it started.
set -euo pipefail

# shellcheck source=deploy/demo-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo-common.sh"
demo="$root/.demo"

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
nats_port=$(free_port); monitor_port=$(free_port); api_port=$(free_port); admin_port=$(free_port)
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

echo "== applying the stream spec (as operator; the node only checks it): deploy/streams-local.toml, one copy on one server"
HALCYON_LOG=warn "$halcyon" streams apply --spec deploy/streams-local.toml \
  --nats-user operator --credentials deploy/nats/dev-credentials.toml \
  | sed 's/^/   /'

HALCYON_NATS_USER=halcyon-node HALCYON_CREDENTIALS=deploy/nats/dev-credentials.toml \
HALCYON_STREAMS_SPEC=deploy/streams-local.toml \
HALCYON_NATS_MONITOR_URL="http://127.0.0.1:$monitor_port" \
HALCYON_LOG="${HALCYON_LOG:-info,async_nats=warn}" \
  "$halcyon" serve --data-dir "$demo/data" --listen "127.0.0.1:$api_port" --node-id demo-node \
    --admin-listen "127.0.0.1:$admin_port" \
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

# Deadlines and signals name a child by its child id: for a child first known by NHS number, the UUIDv5 of
# "nhs:<number>" in Halcyon's namespace (ChildId::from_nhs, crates/schema/src/ids.rs).
child_id() {
  python3 -c 'import sys, uuid; print(uuid.uuid5(uuid.UUID("6a1c7f0e-2b8d-4c3e-9f51-0d2ab7c4e813"), "nhs:" + sys.argv[1]))' "$1"
}
# Signals and deadlines are derived just after the facts are applied, so a listing is asked again (bounded:
# 10 s) until it shows what the facts imply; the demo fails if it never does.
until_shows() {
  local pattern=$1 out=""
  shift
  for _ in $(seq 1 50); do
    out=$("$@") && grep -q -- "$pattern" <<<"$out" && { printf '%s\n' "$out"; return 0; }
    sleep 0.2
  done
  printf 'demo: %s did not show "%s" within 10 s; last answer:\n%s\n' "$*" "$pattern" "$out" >&2
  return 1
}
# One cited fact a line (the CLI prints a signal on one line).
signal_lines() { sed -e 's/: \([0-9]* facts\) \[/: \1:\n      /' -e 's/, \([a-z0-9-]* EVENTS_\)/\n      \1/g' -e 's/\]; /\n    /' -e 's/^/   /'; }
# The start fact and the due time on lines of their own (the CLI prints a breach on one line).
breach_lines() { sed -e 's/ \(started by \)/\n      \1/' -e 's/, \(due \)/\n      \1/' -e 's/^/   /'; }

nhs4=9990000018
child4=$(child_id "$nhs4")
echo
echo "== joining the dots: a fourth child, NHS number $nhs4 (child $child4), with pieces at three agencies"
echo "   within four weeks in autumn 2026: police, two missing episodes; school, an attendance concern; A&E, an"
echo "   intoxication attendance. Nobody has referred her: no referral, no MASH check"
echo "   (deploy/demo/exploitation.jsonl, each agency as its own NATS user)"
"$halcyon" publish --file deploy/demo/exploitation.jsonl --credentials deploy/nats/dev-credentials.toml --quiet \
  | sed 's/^/   /'

echo
echo "== MASH (mash-rotherham): rule S02 fired when the A&E attendance completed the pattern. The MASH of the child's"
echo "   area receives the signal (D14) without any referral; it cites the facts by reference only, each still decided"
echo "   by its own category"
until_shows '^1 signal(s)$' "$halcyon" signals --token demo-mash-rotherham --child "$child4" >"$demo/signals.out"
signal_lines <"$demo/signals.out"
signal=$(sed -n '2s/ .*//p' "$demo/signals.out")
echo
echo "== School (school-oakwood): holds a piece, but deploy/signals.toml sends signals to the MASH and the lead authority only"
"$halcyon" signals --token demo-school-oakwood | sed 's/^/   /'
echo
echo "== MASH records what it did (halcyon signals outcome): a SignalOutcomeRecorded event on its own stream, as its own NATS user"
"$halcyon" signals outcome "$signal" --token demo-mash-rotherham --nhs "$nhs4" --outcome action-taken \
  --reason "referred to children's social care for a strategy discussion" --recorded-by mash-07 \
  --agency mash-rotherham --nats-password mash-rotherham-dev-secret | sed 's/^/   /'
echo
echo "== MASH: the signal now carries its outcome"
until_shows 'action taken by mash-rotherham' "$halcyon" signals --token demo-mash-rotherham --child "$child4" | signal_lines

# No wait needed here: the scenario's facts were all applied (the `--after` reads above) before the fourth
# child was published, and a derivation pass writes its children's deadlines and signals in one batch
# (ingest::derive_views), so the fourth child's signal showing means the scenario's deadlines are derived.
echo
echo "== Statutory deadlines (docs/domain.md §3) children's social care may know of (csc-rotherham): the breaches, with rule,"
echo "   start fact, due time, how late and what closed it"
for i in 1 2 3; do
  n=$(sed -n "s/^child $i: NHS number //p" "$demo/publish.out")
  printf '   child %s: NHS number %s, child %s\n' "$i" "$n" "$(child_id "$n")"
done
"$halcyon" deadlines --token demo-csc-rotherham >"$demo/deadlines.out"
breach_lines <"$demo/deadlines.out"
echo "   still open: $(grep -c ': open, ' "$demo/deadlines.out" || true)"

echo
echo "== putting a record right (docs/corrections.md): A&E finds the intoxication attendance was filed against the"
echo "   wrong patient and withdraws it as entered in error (a RecordCorrected event on its own stream,"
echo "   deploy/demo/correction.jsonl); the facts it published stay in the log, unchanged"
"$halcyon" publish --file deploy/demo/correction.jsonl --credentials deploy/nats/dev-credentials.toml --quiet \
  | sed 's/^/   /'
echo
echo "== MASH: without that attendance the S02 pattern is incomplete, so the signal stands withdrawn (and watchers were told)"
until_shows 'WITHDRAWN' "$halcyon" signals --token demo-mash-rotherham --child "$child4" | signal_lines
echo
echo "== A&E's data-quality report on its own records (an operator's read: recorded in AUDIT first, naming who and why)"
HALCYON_LOG=warn "$halcyon" quality --agency health-rgh-ed --late-days 30 --operator demo-operator-01 \
  --read-reason "demo: data quality review" --nats-user operator --credentials deploy/nats/dev-credentials.toml \
  | sed 's/^/   /'

echo
echo "== tamper evidence: each stream's hash chain re-derived against the node's signed checkpoints (dev key)"
intact=""
for _ in $(seq 1 50); do
  verified=$(HALCYON_LOG=warn "$halcyon" audit verify --public-key deploy/checkpoint-dev.key.pub \
    --nats-user operator --credentials deploy/nats/dev-credentials.toml) && ! grep -q 'not yet checkpointed' <<<"$verified" \
    && { intact=1; break; }
  sleep 0.2
done
echo "$verified" | sed 's/^/   /'
if [ -z "$intact" ]; then
  echo "demo: audit verify did not find every stream intact and checkpointed within 10 s" >&2
  exit 1
fi

echo
echo "== operating it (docs/operations.md): the admin listener on 127.0.0.1:$admin_port"
http_get() {
  python3 -c 'import sys, urllib.request, urllib.error
try: print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode(), end="")
except urllib.error.HTTPError as e: print(e.read().decode(), end="")' "$1"
}
echo "   GET /readyz: $(http_get "http://127.0.0.1:$admin_port/readyz" | head -1)"
echo "   GET /metrics, a few of the families (no child, person or identifier in any of them):"
http_get "http://127.0.0.1:$admin_port/metrics" \
  | grep -E '^halcyon_(grpc_calls_total\{code="[A-Za-z]+",method="QueryService/(FindChild|CheckFlag)"|audit_records_total|stream_lag_seconds\{stream="EVENTS_POLICE_SY"|quarantined_events\{reason="invalid",stream="EVENTS_POLICE_SY"|checkpoint_last_sequence\{stream="EVENTS_POLICE_SY"|build_info)' \
  | sed 's/^/   /'
