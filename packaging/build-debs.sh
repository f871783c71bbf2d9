#!/usr/bin/env bash
# Builds the Debian packages ztssh-proxy, ztssh-sidecar and ztssh-ca into
# OUT (default ${CARGO_TARGET_DIR:-target}/debian) with cargo-deb, from
# release binaries (built here unless ZTSSH_DEB_NO_BUILD=1) stripped by
# cargo-deb, and the man pages and bash/zsh/fish completions each binary
# prints (`man`, `completions SHELL`: generated from its clap definitions).
#
# Reproducible: SOURCE_DATE_EPOCH is the commit's time (git log -1 %ct)
# unless set, so every file in a package carries that time, and the man
# pages are gzipped without name or time (-n). Two runs from the same
# commit and binaries give byte-identical packages (tests/packages.sh
# checks it).
#
# Needs cargo-deb (tests/setup-deps.sh installs the pinned version).
# Usage: packaging/build-debs.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${1:-$TARGET/debian}
command -v cargo-deb >/dev/null ||
  { echo "cargo-deb is missing: run tests/setup-deps.sh (it installs the pinned version)" >&2; exit 1; }
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) ||
    { echo "not a git checkout: set SOURCE_DATE_EPOCH" >&2; exit 1; }
fi
export SOURCE_DATE_EPOCH
BINS=(ztssh-proxy ztssh-sidecar ztssh-ca)
if [ "${ZTSSH_DEB_NO_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p ztssh-proxy -p ztssh-sidecar -p ztssh-ca
fi
# The man pages and completions, where the packages' assets name them
# (target/release/debian-assets).
GEN=$TARGET/release/debian-assets
rm -rf "$GEN"
mkdir -p "$GEN" "$OUT"
for b in "${BINS[@]}"; do
  exe=$TARGET/release/$b
  [ -x "$exe" ] || { echo "$exe is missing: cargo build --release --locked first" >&2; exit 1; }
  "$exe" man | gzip -9n >"$GEN/$b.1.gz"
  "$exe" completions bash >"$GEN/$b.bash"
  "$exe" completions zsh >"$GEN/_$b"
  "$exe" completions fish >"$GEN/$b.fish"
done
# Modes and times of the inputs are set by cargo-deb (the assets' modes,
# SOURCE_DATE_EPOCH); the generated files get the same time all the same.
find "$GEN" -type f -exec touch -d "@$SOURCE_DATE_EPOCH" {} +
for b in "${BINS[@]}"; do
  cargo deb --locked --no-build --strip -p "$b" --output "$OUT" >/dev/null
done
ls "$OUT"/*.deb
