#!/usr/bin/env bash
# The sidecar on the laptops' other systems (README "Systems"):
# - macOS (aarch64-apple-darwin, x86_64-apple-darwin): `cargo check` of the
#   sidecar, proto, keyfile and cli, their tests included. There is no
#   Apple linker here, so type-checking is the bar; cargo-zigbuild gives
#   ring's build script a C compiler with macOS headers (zig).
# - Windows (x86_64-pc-windows-gnu, Debian's mingw-w64): the same crates
#   built, tests included, then their unit tests run under Wine 10 in a
#   Debian 13 container (Debian 12's Wine lacks bcryptprimitives.dll, which
#   Rust's std needs). Where podman cannot run containers, that step prints
#   "skipped: <why>"; the builds still count.
#
# Needs the rustup targets, mingw-w64, ziglang and cargo-zigbuild
# (tests/setup-deps.sh), and for the Wine step root, podman, runc and
# debootstrap. The first run on a machine makes the Debian 13 image with
# Wine (2-5 min); the builds take a few minutes each.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
say() { printf '[cross %3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
CRATES=(-p ztssh-sidecar -p ztssh-proto -p ztssh-keyfile -p ztssh-cli)
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

for t in aarch64-apple-darwin x86_64-apple-darwin x86_64-pc-windows-gnu; do
  rustup target list --installed | grep -qx "$t" || fail "rustup target $t is missing: run tests/setup-deps.sh"
done
command -v cargo-zigbuild >/dev/null || fail "cargo-zigbuild is missing: run tests/setup-deps.sh"
command -v x86_64-w64-mingw32-gcc >/dev/null || fail "mingw-w64 is missing: run tests/setup-deps.sh"

# 1. macOS: type-checked.
for t in aarch64-apple-darwin x86_64-apple-darwin; do
  nice -n 10 cargo-zigbuild check --release --locked --target "$t" "${CRATES[@]}" --all-targets \
    >"$TARGET_DIR/cross-$t.log" 2>&1 || { tail -n 40 "$TARGET_DIR/cross-$t.log" >&2; fail "cargo check for $t"; }
  say "macOS $t: the sidecar, proto, keyfile and cli type-check, tests included"
done

# 2. Windows: built, tests included.
W=x86_64-pc-windows-gnu
nice -n 10 cargo build --release --locked --target "$W" "${CRATES[@]}" --all-targets \
  >"$TARGET_DIR/cross-$W.log" 2>&1 || { tail -n 40 "$TARGET_DIR/cross-$W.log" >&2; fail "cargo build for $W"; }
[ -f "$TARGET_DIR/$W/release/ztssh-sidecar.exe" ] || fail "no ztssh-sidecar.exe after the build"
mapfile -t TESTS < <(cargo test --release --locked --target "$W" "${CRATES[@]}" --lib --bins --no-run \
  --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')
[ "${#TESTS[@]}" -ge 4 ] || fail "expected the unit-test binaries of 4 crates, got: ${TESTS[*]}"
say "Windows $W: ztssh-sidecar.exe and ${#TESTS[@]} unit-test binaries built"

# 3. Windows: the unit tests under Wine 10 (Debian 13), in a container.
skip() { echo "skipped: the Windows unit tests under Wine: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "rootful podman needs root"
for c in podman runc debootstrap; do
  command -v "$c" >/dev/null || skip "$c is not installed (tests/setup-deps.sh installs it)"
done
P=(podman --runtime runc --cgroup-manager=cgroupfs)
BASE=localhost/debian:trixie
IMAGE=localhost/ztssh-wine:trixie
WORK=$(mktemp -d /tmp/ztssh-cross.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if ! "${P[@]}" image exists "$BASE"; then
  say "making $BASE with debootstrap (once)"
  debootstrap --variant=minbase trixie "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; skip "debootstrap of Debian 13 failed"; }
  tar -C "$WORK/rootfs" -c . | "${P[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE" >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; fail "podman import failed"; }
  rm -rf "$WORK/rootfs"
fi
if ! out=$("${P[@]}" run --rm "$BASE" true 2>&1); then
  skip "podman cannot run containers here: $(printf '%s' "$out" | tail -n 1)"
fi
if ! "${P[@]}" image exists "$IMAGE"; then
  say "making $IMAGE (Wine from Debian 13; once)"
  mkdir -p "$WORK/context"
  cat >"$WORK/context/Containerfile" <<'CF'
ARG BASE
FROM $BASE
# wine64 alone: the test binaries are 64-bit. The prefix is made once here
# (wineboot), not at every run.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine wine64 >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && WINEDEBUG=-all wine wineboot --init >/dev/null 2>&1; true
CF
  timeout 1200 "${P[@]}" build --isolation chroot --build-arg BASE="$BASE" -t "$IMAGE" "$WORK/context" \
    >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; fail "building $IMAGE failed"; }
fi
# Each test binary in turn, its output kept; the container sees the target
# directory read-only at the same path.
{
  echo 'set -u; export WINEDEBUG=-all; rc=0'
  for t in "${TESTS[@]}"; do
    printf 'echo "== %s"; timeout 900 wine %q --test-threads=2 || rc=1\n' "$(basename "$t")" "$t"
  done
  echo 'exit $rc'
} >"$WORK/run.sh"
set +e
"${P[@]}" run --rm --network none -v "$TARGET_DIR:$TARGET_DIR:ro" -v "$WORK/run.sh:/run.sh:ro" \
  "$IMAGE" bash /run.sh >"$WORK/wine.log" 2>&1
rc=$?
set -e
sum() { sed -n "s/^test result: .* \([0-9]*\) $1.*/\1/p" "$WORK/wine.log" | awk '{s += $1} END {print s + 0}'; }
passed=$(sum passed)
failed=$(sum failed)
results=$(grep -c '^test result: ' "$WORK/wine.log" || true)
if [ "$results" -eq 0 ]; then
  tail -n 30 "$WORK/wine.log" >&2
  skip "Wine ran none of the test binaries (above: what it said)"
fi
grep -E '^(== |test result: )|FAILED|panicked' "$WORK/wine.log"
[ "$rc" -eq 0 ] && [ "$results" -eq "${#TESTS[@]}" ] ||
  fail "the Windows unit tests under Wine: $results of ${#TESTS[@]} binaries reported, $failed failed (exit $rc)"
say "Windows unit tests under Wine: ${passed:-0} passed, ${failed:-0} failed in ${#TESTS[@]} binaries"
