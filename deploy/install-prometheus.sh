#!/usr/bin/env bash
# Installs a pinned Prometheus server and promtool into .tools/bin (project-local, git-ignored), without
# root: Debian's `prometheus` package is downloaded (apt-get download needs no root), checked against its
# pinned sha256 and unpacked with dpkg-deb; nothing is installed system-wide. The metrics tests run
# `promtool check metrics` on a node's /metrics, `promtool check rules` on deploy/monitoring/alerts.yml,
# and a real Prometheus server that scrapes a node.
set -euo pipefail

VERSION=2.42.0+ds-5+b6
DEB_SHA256=3b0e0255b059a7696bd4a139a4a4eb24d71df067936a61ece5093559cbc7991c

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.tools/bin"
stamp="$root/.tools/prometheus.version"

if [ -x "$bin/promtool" ] && [ -x "$bin/prometheus" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSION" ]; then
  echo "prometheus $VERSION already installed in $bin"
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  echo "install-prometheus: apt-get and dpkg-deb are needed (Debian); or put promtool and prometheus on PATH" >&2
  exit 1
}
work="$(mktemp -d)"
chmod 0777 "$work"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "prometheus=$VERSION" 2>&1 | grep -v "unsandboxed" || true)
deb="$(ls "$work"/prometheus_*.deb 2>/dev/null | head -1)"
[ -n "$deb" ] || {
  echo "install-prometheus: apt-get download prometheus=$VERSION fetched nothing (run apt-get update?)" >&2
  exit 1
}
echo "$DEB_SHA256  $deb" | sha256sum --check --status || {
  echo "install-prometheus: $deb does not match the pinned sha256" >&2
  exit 1
}
dpkg-deb -x "$deb" "$work/root"
mkdir -p "$bin"
install -m 0755 "$work/root/usr/bin/promtool" "$bin/promtool"
install -m 0755 "$work/root/usr/bin/prometheus" "$bin/prometheus"
echo "$VERSION" > "$stamp"
echo "installed prometheus and promtool $VERSION in $bin"
