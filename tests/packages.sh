#!/usr/bin/env bash
# The Debian packages, for real: builds ztssh-proxy, ztssh-sidecar and
# ztssh-ca .debs twice with packaging/build-debs.sh, each from a clean
# target directory of its own (two full release builds at two paths), and
# requires them byte-identical (SOURCE_DATE_EPOCH from the commit, paths
# remapped, one feature set, no build id: see build-debs.sh), checks that the
# binaries in them are stripped, then installs them with apt-get into the
# clean Debian image tests/containers.sh makes (localhost/debian:bookworm)
# and runs the proxy from the package's own unit and config: the unit's
# ExecStartPre and ExecStart, as the unit's User=, with what systemd would
# set up (StateDirectory, RuntimeDirectory, LoadCredential's directory)
# made by hand, because systemd cannot run as PID 1 here (gVisor, and no
# systemd in the image). Then a real ssh session through the packaged
# sidecar, into the packaged proxy, to a real sshd, all inside the container.
#
# Needs root, podman, runc, debootstrap and cargo-deb (tests/setup-deps.sh).
# The two builds take most of its time (ZTSSH_DEB_JOBS caps their jobs,
# default: cargo's). Where podman
# cannot run containers, the package checks still run and the install test
# prints "skipped: <why>"; any other failure exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
say() { printf '[packages %3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
skip() { echo "skipped: $*"; exit 0; }
fail() { echo "FAILED: $*" >&2; exit 1; }

command -v cargo-deb >/dev/null || fail "cargo-deb is missing: run tests/setup-deps.sh"
WORK=$(mktemp -d /tmp/ztssh-packages.XXXXXX)
cleanup() {
  local rc=$?
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Two full builds from the same commit, each in a clean target
# directory at its own path: byte-identical packages.
[ -z "${ZTSSH_DEB_JOBS:-}" ] || export CARGO_BUILD_JOBS=$ZTSSH_DEB_JOBS
for run in a b; do
  ZTSSH_DEB_TARGET_DIR=$WORK/target-$run nice -n 10 bash packaging/build-debs.sh "$WORK/$run" \
    >"$WORK/build-$run.log" 2>&1 || { tail -n 30 "$WORK/build-$run.log" >&2; fail "build $run of the packages failed"; }
  say "build $run done (clean target directory $WORK/target-$run)"
done
for d in "$WORK"/a/*.deb; do
  n=$(basename "$d")
  if ! cmp -s "$d" "$WORK/b/$n"; then
    mkdir -p "$WORK/diff/a" "$WORK/diff/b"
    dpkg-deb -x "$d" "$WORK/diff/a" && dpkg-deb -x "$WORK/b/$n" "$WORK/diff/b"
    diff -rq "$WORK/diff/a" "$WORK/diff/b" >&2 || true
    fail "two builds of $n from the same commit differ (not reproducible)"
  fi
done
n=$(ls "$WORK"/a/*.deb | wc -l)
[ "$n" -eq 3 ] || fail "expected 3 packages, got $n: $(ls "$WORK/a")"
rm -rf "$WORK/target-a" "$WORK/target-b"
say "3 packages, byte-identical across two clean builds: $(cd "$WORK/a" && ls *.deb | tr '\n' ' ')"

# 2. What is in them: stripped binaries, the unit, conffiles, man pages,
# completions, the sysusers entry.
for d in "$WORK"/a/*.deb; do
  x=$WORK/x/$(basename "$d" .deb)
  mkdir -p "$x"
  dpkg-deb -x "$d" "$x"
  for exe in "$x"/usr/bin/*; do
    if readelf -S "$exe" | grep -q '\.debug_info\|\.debug_line\|\.symtab'; then
      fail "$(basename "$exe") in $(basename "$d") is not stripped"
    fi
  done
done
px=$(echo "$WORK"/x/ztssh-proxy_*)
for f in usr/bin/ztssh-proxy usr/lib/systemd/system/ztssh-proxy.service usr/lib/sysusers.d/ztssh-proxy.conf \
  usr/lib/systemd/system/ztssh-sshd-guard-check.service usr/lib/systemd/system/ztssh-sshd-guard-check.timer \
  etc/ztssh/proxy.toml etc/ztssh/policy.toml usr/share/man/man1/ztssh-proxy.1.gz \
  usr/share/bash-completion/completions/ztssh-proxy usr/share/zsh/vendor-completions/_ztssh-proxy \
  usr/share/fish/vendor_completions.d/ztssh-proxy.fish usr/share/doc/ztssh-proxy/OPERATOR.md; do
  [ -e "$px/$f" ] || fail "ztssh-proxy's package has no /$f"
done
conffiles=$(dpkg-deb -I "$WORK"/a/ztssh-proxy_*.deb conffiles)
for f in /etc/ztssh/proxy.toml /etc/ztssh/policy.toml; do
  grep -qx "$f" <<<"$conffiles" || fail "$f is not a conffile of ztssh-proxy: $conffiles"
done
grep -q '^u ztssh-akc ' "$px/usr/lib/sysusers.d/ztssh-proxy.conf" || fail "no ztssh-akc in sysusers.d"
say "binaries stripped; unit, sysusers.d, conffiles, man pages and completions in place"

# 3. Installed into a clean Debian, run from the package's own paths.
[ "$(id -u)" -eq 0 ] || skip "the install test runs rootful podman and needs root"
for c in podman runc debootstrap; do
  command -v "$c" >/dev/null || skip "$c is not installed (tests/setup-deps.sh installs it)"
done
P=(podman --runtime runc --cgroup-manager=cgroupfs)
BASE=localhost/debian:bookworm
IMAGE=localhost/ztssh-packages:latest
if ! "${P[@]}" image exists "$BASE"; then
  say "making $BASE with debootstrap (once; tests/containers.sh uses it too)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
  tar -C "$WORK/rootfs" -c . | "${P[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE" >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; fail "podman import failed"; }
  rm -rf "$WORK/rootfs"
fi
if ! out=$("${P[@]}" run --rm "$BASE" true 2>&1); then
  skip "podman cannot run containers here: $(printf '%s' "$out" | tail -n 1)"
fi
mkdir -p "$WORK/context"
cp "$WORK"/a/*.deb "$WORK/context/"
cat >"$WORK/context/Containerfile" <<'CF'
ARG BASE
FROM $BASE
COPY *.deb /debs/
# apt-get resolves the packages' Depends from Debian's archive, as on a
# clean server; openssh-server and -client for the session through them.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-server openssh-client /debs/*.deb >/dev/null \
 && rm -rf /debs /var/lib/apt/lists/*
CF
timeout 900 "${P[@]}" build --isolation chroot --build-arg BASE="$BASE" -t "$IMAGE" "$WORK/context" \
  >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; fail "installing the packages failed"; }
say "packages installed with apt-get into $BASE"

cat >"$WORK/inside.sh" <<'IN'
set -euo pipefail
fail() { echo "FAILED (inside): $*" >&2; exit 1; }
UNIT=/usr/lib/systemd/system/ztssh-proxy.service
key() { sed -n "s/^$1=//p" "$UNIT"; }
SVC_USER=$(key User)
[ "$SVC_USER" = ztssh ] || fail "the unit's User= is '$SVC_USER'"
getent passwd ztssh >/dev/null || fail "the package made no ztssh user"
getent passwd ztssh-akc >/dev/null || fail "the package made no ztssh-akc user"
[ "$(stat -c %a:%U /etc/ztssh/credentials)" = 700:root ] || fail "/etc/ztssh/credentials is $(stat -c %a:%U /etc/ztssh/credentials)"
man -w ztssh-proxy >/dev/null 2>&1 || [ -e /usr/share/man/man1/ztssh-proxy.1.gz ] || fail "no man page"
# The operator's steps (docs/OPERATOR.md, "Quick start for a fleet"), with
# the CA on this machine for the test.
ztssh-ca init --dir /root/ca >/dev/null
ztssh-proxy keygen --dir /etc/ztssh/credentials >/dev/null
ztssh-ca authorize-server --dir /root/ca --request /etc/ztssh/credentials/licence-request.pem \
  --server-id pkg1 --hostname localhost --ttl 1h --out /etc/ztssh/licence.pem >/dev/null
cp /root/ca/root.pub /etc/ztssh/root.pub
ztssh-ca crl --dir /root/ca --out /etc/ztssh/crl.pem >/dev/null
ssh-keygen -q -t ed25519 -N '' -C alice -f /root/alice
echo "alice $(cat /root/alice.pub)" >/etc/ztssh/authorized_principals
chmod 0644 /etc/ztssh/*.pem /etc/ztssh/root.pub /etc/ztssh/authorized_principals
# sshd on loopback, where the packaged proxy.toml's upstream points.
mkdir -p /run/sshd /root/.ssh
cp /root/alice.pub /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null
/usr/sbin/sshd -o ListenAddress=127.0.0.1 -o PasswordAuthentication=no
# What systemd does before ExecStart: StateDirectory, RuntimeDirectory and
# LoadCredential's directory, owned by the service's user.
install -d -o ztssh -g ztssh -m "$(key StateDirectoryMode)" "/var/lib/$(key StateDirectory)"
install -d -o ztssh -g ztssh -m "$(key RuntimeDirectoryMode)" "/run/$(key RuntimeDirectory)"
CRED=/run/credentials/ztssh-proxy.service
install -d -o ztssh -g ztssh -m 0500 "$CRED"
for c in $(sed -n 's/^LoadCredential=//p' "$UNIT"); do
  install -o ztssh -g ztssh -m 0400 "${c#*:}" "$CRED/${c%%:*}"
done
AS=(setpriv --reuid=ztssh --regid=ztssh --init-groups --)
# shellcheck disable=SC2046
"${AS[@]}" $(key ExecStartPre) >/root/check.out 2>&1 || { cat /root/check.out >&2; fail "the unit's ExecStartPre failed"; }
# shellcheck disable=SC2046
"${AS[@]}" $(key ExecStart) 2>/root/proxy.log &
PROXY=$!
for _ in $(seq 1 300); do
  grep -q '"listening"\|event="listening"' /root/proxy.log 2>/dev/null && break
  kill -0 "$PROXY" 2>/dev/null || { cat /root/proxy.log >&2; fail "the proxy exited"; }
  sleep 0.1
done
grep -q 'listening' /root/proxy.log || { cat /root/proxy.log >&2; fail "the proxy did not listen within 30s"; }
[ "$(stat -c %U /proc/$PROXY)" = ztssh ] || fail "the proxy runs as $(stat -c %U /proc/$PROXY)"
out=$(timeout 60 ssh -F /dev/null -p 2222 -i /root/alice -o IdentitiesOnly=yes -o BatchMode=yes \
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
  -o ProxyCommand="ztssh-sidecar --root /etc/ztssh/root.pub --identity /root/alice --principal alice %h %p" \
  root@localhost 'echo "through the packages as $(id -un)"') || { cat /root/proxy.log >&2; fail "ssh through the packaged proxy failed"; }
[ "$out" = "through the packages as root" ] || fail "ssh printed '$out'"
for _ in $(seq 1 100); do grep -q 'session_closed' /root/proxy.log && break; sleep 0.1; done
grep -q 'session_closed.*server_id=pkg1' /root/proxy.log || { cat /root/proxy.log >&2; fail "no session_closed line with server_id=pkg1"; }
kill "$PROXY"
wait "$PROXY" || true
echo "ssh session through the packaged sidecar and proxy: $out"
IN
out=$(timeout 300 "${P[@]}" run --rm -v "$WORK/inside.sh:/inside.sh:ro" "$IMAGE" bash /inside.sh 2>&1) ||
  { printf '%s\n' "$out" >&2; fail "the install test failed inside the container"; }
say "$(printf '%s' "$out" | tail -n 1)"
"${P[@]}" image rm "$IMAGE" >/dev/null 2>&1 || true
say "passed"
