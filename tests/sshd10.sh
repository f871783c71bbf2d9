#!/usr/bin/env bash
# The zero-standing-keys, sshd-setup and penalty end-to-end tests against a
# real OpenSSH 10 (Debian's bookworm-backports), beside the host's own sshd
# (9.2 on Debian 12) that the rest of the suite uses: %C (9.4+), the
# PerSourcePenalties (9.8+) and sshd-session/sshd-auth (9.8+/10.0) for real.
#
# The sshd comes from an image built with podman from docker/Dockerfile
# (target sshd-backports, on the debootstrap base image of
# tests/containers.sh). Its sshd, sshd-session and sshd-auth are copied out
# of the image and run on the host (ZTSSH_TEST_SSHD; the harness points
# SshdSessionPath and SshdAuthPath at the copies): backports packages are
# built for bookworm's libraries, and the tests need sshd in the host's
# namespaces (its accounts, its loopback, nftables, the proxy's socket and
# sshd's pid for the reload). Needs root and what tests/setup-deps.sh
# installs; where podman cannot build the image the script prints
# "skipped: <why>" and exits 0. Any other failure exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
say() { printf '[sshd10 %3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
skip() { echo "skipped: $*"; exit 0; }
fail() { echo "FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "the sshd 10 tests run rootful podman and sshd, and need root"
for c in podman runc debootstrap; do
  command -v "$c" >/dev/null || skip "$c is not installed (tests/setup-deps.sh installs it)"
done
P=(podman --runtime runc --cgroup-manager=cgroupfs)
BASE=localhost/debian:bookworm
IMAGE=localhost/ztssh-sshd10:latest
WORK=$(mktemp -d /tmp/ztssh-sshd10.XXXXXX)
cid=
cleanup() {
  local rc=$?
  [ -z "$cid" ] || "${P[@]}" rm -f "$cid" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. The base image, made once (as tests/containers.sh makes it).
if ! "${P[@]}" image exists "$BASE"; then
  say "making $BASE with debootstrap (once; kept for later runs)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
  tar -C "$WORK/rootfs" -c . | "${P[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE" >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; fail "podman import failed"; }
  rm -rf "$WORK/rootfs"
fi

# 2. The image, from the repo's Dockerfile (no binaries needed: an empty
# context). apt-get's layers are cached after the first run.
mkdir -p "$WORK/context"
timeout 900 "${P[@]}" build --isolation chroot -f "$ROOT/docker/Dockerfile" --target sshd-backports \
  --build-arg DEBIAN_IMAGE="$BASE" -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1 ||
  { tail -n 30 "$WORK/build.log" >&2; fail "podman build --target sshd-backports failed"; }

# 3. sshd and its helpers, out of the image.
BIN=$WORK/openssh
mkdir -p "$BIN"
cid=$("${P[@]}" create "$IMAGE" true)
for f in /usr/sbin/sshd /usr/lib/openssh/sshd-session /usr/lib/openssh/sshd-auth; do
  "${P[@]}" cp "$cid:$f" "$BIN/" || fail "no $f in $IMAGE"
done
"${P[@]}" rm -f "$cid" >/dev/null
cid=
chmod 0755 "$WORK" "$BIN"
version=$("$BIN/sshd" -V 2>&1 || true)
case $version in
  OpenSSH_9.[89]* | OpenSSH_[1-9][0-9].*) ;;
  *) fail "$IMAGE's sshd does not run on this host, or is older than 9.8: $version" ;;
esac
say "image $IMAGE built; running its sshd: $version"

# 4. The tests, with that sshd.
export ZTSSH_TEST_SSHD=$BIN/sshd
tests=(--test zero_standing_keys --test sshd_setup --test sshd_penalties)
# Left out for now: four tests assert what sshd 9.2's address-only binding
# does (the proxy vouching for a key that sshd then refuses by from=, a
# direct login from a live session's address as the control); with %C the
# proxy refuses earlier and those steps differ. The rollback test's
# post-rollback check is not yet version-aware either.
skip='test(a_key_is_good_only_on_its_own_sessions_connection) | test(after_a_ban_the_sessions_address_gets_no_key) | test(keys_work_only_through_a_live_session_for_mapped_accounts) | test(a_failed_setup_is_rolled_back_and_sshd_still_serves)'
command -v cargo-nextest >/dev/null 2>&1 || cargo nextest --version >/dev/null 2>&1 ||
  fail "cargo nextest is needed to pick the tests that run against sshd 10"
cargo nextest run --release --locked -p ztssh-tests "${tests[@]}" --no-fail-fast -E "not ($skip)"
say "passed against $version"
