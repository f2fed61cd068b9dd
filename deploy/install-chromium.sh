#!/usr/bin/env bash
# Installs a pinned headless Chromium into .tools/chromium (project-local, git-ignored), without root, and a
# launcher .tools/bin/halcyon-chromium that sets its library path. The chronology test loads the HTML page in
# it over the DevTools protocol and fails on any script error.
# Source: the npm package @sparticuz/chromium, which ships chrome-headless-shell for x86_64 Linux with the
# NSS libraries and SwiftShader it needs inside its tarball (brotli-compressed; node's zlib unpacks them).
# Pinned by version and by the sha256 of the tarball and of the unpacked binary.
set -euo pipefail

VERSION=153.0.0
TARBALL_SHA256=20e5656fcdcf4118ede85edfb9d6bb9cc1bbb7ffb8b75622fffbcf36a835c3c0
BINARY_SHA256=53a15d6c3a3d27dfb54c4ba60278b1683136f70cf1e67e989da7dfbd3d451ef0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/chromium"
launcher="$root/.tools/bin/halcyon-chromium"

# The fontconfig file and the launcher, written on every run (cheap, and they follow this script).
write_launcher() {
  mkdir -p "$dest/fonts-cache" "$(dirname "$launcher")"
  cat > "$dest/fonts.conf" <<FONTS
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>$dest/fonts/fonts</dir>
  <dir>/usr/share/fonts</dir>
  <cachedir>$dest/fonts-cache</cachedir>
</fontconfig>
FONTS
  cat > "$launcher" <<'LAUNCHER'
#!/usr/bin/env bash
# Headless Chromium from deploy/install-chromium.sh, with its bundled libraries and fonts.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../chromium" && pwd)"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FONTCONFIG_FILE="$here/fonts.conf"
exec "$here/chromium" --headless=shell --no-sandbox --disable-gpu --no-first-run --no-default-browser-check "$@"
LAUNCHER
  chmod 0755 "$launcher"
}

if [ -x "$dest/chromium" ] && echo "$BINARY_SHA256  $dest/chromium" | sha256sum --check --status; then
  write_launcher
  echo "chromium (@sparticuz/chromium $VERSION) already installed at $dest"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-chromium: only Linux x86_64 is pinned here" >&2; exit 1 ;;
esac
for tool in npm node tar; do
  command -v "$tool" >/dev/null || { echo "install-chromium: $tool is needed" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@sparticuz/chromium@$VERSION" >/dev/null)
tarball="$work/sparticuz-chromium-$VERSION.tgz"
echo "$TARBALL_SHA256  $tarball" | sha256sum --check --status || {
  echo "install-chromium: the npm tarball's sha256 does not match the pin" >&2
  exit 1
}
tar -xzf "$tarball" -C "$work"
node -e '
const zlib = require("zlib"), fs = require("fs"), path = require("path");
const [bin, out] = process.argv.slice(1);
for (const f of fs.readdirSync(bin).filter((f) => f.endsWith(".br"))) {
  fs.writeFileSync(path.join(out, f.slice(0, -3)), zlib.brotliDecompressSync(fs.readFileSync(path.join(bin, f))));
}' "$work/package/bin" "$work"
echo "$BINARY_SHA256  $work/chromium" | sha256sum --check --status || {
  echo "install-chromium: the chromium binary's sha256 does not match the pin" >&2
  exit 1
}
rm -rf "$dest"
mkdir -p "$dest/lib"
install -m 0755 "$work/chromium" "$dest/chromium"
# SwiftShader (libEGL, libGLESv2, Vulkan) sits beside the binary; NSS and expat under lib/.
tar -xf "$work/swiftshader.tar" -C "$dest"
tar -xf "$work/al2023.tar" -C "$dest/lib" --strip-components=1
mkdir -p "$dest/fonts" && tar -xf "$work/fonts.tar" -C "$dest/fonts"
write_launcher
echo "installed chromium (@sparticuz/chromium $VERSION) at $dest; launcher $launcher"
