#!/usr/bin/env bash
# Builds the Debian packages ztssh-proxy, ztssh-sidecar and ztssh-ca into
# OUT (default $TARGET/debian) with cargo-deb: release binaries built here,
# stripped by cargo-deb, and the man pages and bash/zsh/fish completions
# each binary prints (`man`, `completions SHELL`: generated from its clap
# definitions).
#
# Reproducible: two runs from the same commit give byte-identical
# packages, even from two clean target directories (tests/packages.sh
# builds twice and compares). What that takes:
# - The binaries are always built here, with one package selection
#   (-p ztssh-proxy -p ztssh-sidecar -p ztssh-ca), in a target directory
#   of their own (TARGET, default target/deb; ZTSSH_DEB_TARGET_DIR sets
#   it). Cargo unifies dependency features over the packages it builds,
#   so `cargo build --workspace` (the suite's build, which adds the tests
#   crate's features: nix's inotify, getrandom's std, serde's derive...)
#   gives a different ztssh-ca than `-p ztssh-ca`; packaging whichever
#   binary target/release held last made two builds differ.
# - Paths: --remap-path-prefix maps the checkout, the target directory and
#   CARGO_HOME to fixed names (/build/ztssh, /build/target, /cargo), in
#   panic locations and debug info alike.
# - No build id (-Wl,--build-id=none): the linker's id is a hash over the
#   unstripped file, debug info and its paths included; the packages ship
#   stripped binaries and no debug symbols for an id to match.
# - SOURCE_DATE_EPOCH is the commit's time (git log -1 %ct) unless set, so
#   every file in a package carries that time, and the man pages are
#   gzipped without name or time (-n).
#
# Needs cargo-deb (tests/setup-deps.sh installs the pinned version).
# Usage: packaging/build-debs.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${ZTSSH_DEB_TARGET_DIR:-$ROOT/target/deb}
OUT=${1:-$TARGET/debian}
command -v cargo-deb >/dev/null ||
  { echo "cargo-deb is missing: run tests/setup-deps.sh (it installs the pinned version)" >&2; exit 1; }
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) ||
    { echo "not a git checkout: set SOURCE_DATE_EPOCH" >&2; exit 1; }
fi
export SOURCE_DATE_EPOCH
mkdir -p "$TARGET"
TARGET=$(cd "$TARGET" && pwd -P)
CARGO_HOME_DIR=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
# The last matching prefix wins: the target directory may sit inside the
# checkout (target/deb), so it comes after it.
export CARGO_TARGET_DIR=$TARGET
export RUSTFLAGS="--remap-path-prefix=$CARGO_HOME_DIR=/cargo --remap-path-prefix=$ROOT=/build/ztssh --remap-path-prefix=$TARGET=/build/target -C link-arg=-Wl,--build-id=none"
unset CARGO_ENCODED_RUSTFLAGS
BINS=(ztssh-proxy ztssh-sidecar ztssh-ca)
cargo build --release --locked -p ztssh-proxy -p ztssh-sidecar -p ztssh-ca
# The man pages and completions, where the packages' assets name them
# (target/release/debian-assets, which cargo-deb reads from TARGET).
GEN=$TARGET/release/debian-assets
rm -rf "$GEN"
mkdir -p "$GEN" "$OUT"
for b in "${BINS[@]}"; do
  exe=$TARGET/release/$b
  [ -x "$exe" ] || { echo "$exe is missing after the build" >&2; exit 1; }
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
