#!/usr/bin/env bash
# Containers, for real: builds the images from docker/Dockerfile with podman,
# runs the Pod of docker/kubernetes/ with `podman play kube` (a real sshd
# container bound to the Pod's loopback, and the ztssh-proxy sidecar whose
# port is published on the host's loopback), drives the real `ssh` through
# ztssh-sidecar on the host into the Pod, then bans the principal through
# revocation_url and waits for the live session to end.
#
# Needs root and what tests/setup-deps.sh installs (podman, runc,
# debootstrap, OpenSSH, python3), plus release binaries of ztssh-proxy,
# ztssh-sidecar and ztssh-ca (ZTSSH_BIN_DIR, default
# ${CARGO_TARGET_DIR:-target}/release): no Rust toolchain runs inside a
# container, so the images take the host-built binaries
# (docker/Dockerfile, BINARIES=prebuilt).
#
# No public registry is needed: the Debian base image is made once with
# debootstrap from Debian's mirror and kept as localhost/debian:bookworm
# (first run: about a minute more). Where podman cannot run containers the
# script prints "skipped: <why>" and exits 0; any other failure exits 1.
# ZTSSH_CONTAINERS_LOGS=DIR keeps the containers' logs, the manifests as run
# and the list server's log there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
say() { printf '[containers %3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
skip() { echo "skipped: $*"; exit 0; }
fail() { echo "FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "the container test runs rootful podman and needs root"
for c in podman runc debootstrap; do
  command -v "$c" >/dev/null || skip "$c is not installed (tests/setup-deps.sh installs it)"
done
for c in python3 ssh ssh-keygen; do
  command -v "$c" >/dev/null || fail "$c is missing: run tests/setup-deps.sh"
done
BIN=${ZTSSH_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
for b in ztssh-proxy ztssh-sidecar ztssh-ca; do
  [ -x "$BIN/$b" ] || fail "$BIN/$b is missing: cargo build --release --locked first (or set ZTSSH_BIN_DIR)"
done
BIN=$(cd "$BIN" && pwd)

# runc and cgroupfs: crun and the systemd cgroup manager refuse some hosts'
# cgroup layouts (v1 hybrid); these work on both v1 and v2.
P=(podman --runtime runc --cgroup-manager=cgroupfs)
BASE=localhost/debian:bookworm
SSHD_IMAGE=localhost/ztssh-sshd:latest
PROXY_IMAGE=localhost/ztssh-proxy:latest
SIDECAR_IMAGE=localhost/ztssh-sidecar:latest
POD=web1 # metadata.name in docker/kubernetes/ztssh-pod.yaml
# ConfigMap volumes become podman named volumes (named after the ConfigMap).
VOLUMES=(ztssh-proxy ztssh-public sshd-authorized-keys)

# Can podman run a container at all? A Pod's infra container needs no image
# from a registry (podman builds its pause image locally).
probe=ztssh-probe-$$
if ! out=$("${P[@]}" pod create --name "$probe" 2>&1 && "${P[@]}" pod start "$probe" 2>&1); then
  "${P[@]}" pod rm -f "$probe" >/dev/null 2>&1 || true
  skip "podman cannot run containers here: $(printf '%s' "$out" | tail -n 1)"
fi
"${P[@]}" pod rm -f "$probe" >/dev/null

WORK=$(mktemp -d /tmp/ztssh-containers.XXXXXX)
PIDS=()
PLAYED=
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -n "$PLAYED" ]; then
    for c in sshd ztssh-proxy; do
      echo "---- podman logs $POD-$c (last 40 lines) ----" >&2
      "${P[@]}" logs --tail 40 "$POD-$c" >&2 2>&1 || true
    done
    echo "---- list server ----" >&2
    tail -n 20 "$WORK/lists.log" >&2 2>/dev/null || true
  fi
  if [ -n "${ZTSSH_CONTAINERS_LOGS:-}" ] && [ -n "$PLAYED" ]; then
    mkdir -p "$ZTSSH_CONTAINERS_LOGS"
    for c in sshd ztssh-proxy; do "${P[@]}" logs "$POD-$c" >"$ZTSSH_CONTAINERS_LOGS/$c.log" 2>&1 || true; done
    cp "$WORK"/*.log "$WORK"/*.err "$WORK"/*.yaml "$WORK"/*.json "$ZTSSH_CONTAINERS_LOGS/" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$PLAYED" ]; then
    timeout 60 "${P[@]}" play kube --down "$WORK/pod.yaml" >/dev/null 2>&1 || true
  fi
  "${P[@]}" volume rm -f "${VOLUMES[@]}" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then say "passed; Pod and volumes removed"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $1 seconds for the command after it to succeed (at most 10
# tries a second).
wait_for() {
  local secs=$1 what=$2
  shift 2
  local end=$((SECONDS + secs))
  for _ in $(seq 1 $((secs * 10))); do
    if "$@"; then return 0; fi
    [ "$SECONDS" -lt "$end" ] || break
    sleep 0.1
  done
  fail "no $what within ${secs}s"
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Replaces a line of a copied file exactly once, so a manifest that drifted
# from what this test expects fails loudly instead of running something else.
subst() {
  python3 - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
n = text.count(old)
if n != 1:
    sys.exit(f"{path}: expected exactly one {old!r}, found {n}")
open(path, "w").write(text.replace(old, new))
PY
}
# A ConfigMap as JSON (which YAML readers take), one key per file: what
# `kubectl create configmap NAME --from-file=KEY=FILE` makes.
configmap() {
  python3 - "$@" <<'PY'
import json, sys
name, out, *files = sys.argv[1:]
data = {}
for f in files:
    key, _, path = f.partition("=")
    data[key] = open(path).read()
doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
json.dump(doc, open(out, "w"), indent=1)
PY
}

# 1. The base image, made once.
if ! "${P[@]}" image exists "$BASE"; then
  say "making $BASE with debootstrap (once; kept for later runs)"
  t=$(date +%s)
  debootstrap --variant=minbase bookworm "$WORK/rootfs" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
  tar -C "$WORK/rootfs" -c . | "${P[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE" >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; fail "podman import failed"; }
  rm -rf "$WORK/rootfs"
  say "base image made in $(($(date +%s) - t))s"
fi

# 2. The images, from the repo's Dockerfile, with the host-built binaries.
# RUNTIME_IMAGE=debian-nonroot stands in for distroless (not reachable
# here); the proxy stage is the same one users build.
mkdir -p "$WORK/context/bin"
cp "$BIN/ztssh-proxy" "$BIN/ztssh-sidecar" "$BIN/ztssh-ca" "$WORK/context/bin/"
t=$(date +%s)
build() {
  local target=$1 tag=$2
  timeout 900 "${P[@]}" build --isolation chroot -f "$ROOT/docker/Dockerfile" --target "$target" \
    --build-arg DEBIAN_IMAGE="$BASE" --build-arg RUNTIME_IMAGE=debian-nonroot \
    --build-arg BINARIES=prebuilt --build-arg BIN_DIR=bin \
    -t "$tag" "$WORK/context" >"$WORK/build-$target.log" 2>&1 ||
    { tail -n 30 "$WORK/build-$target.log" >&2; fail "podman build --target $target failed"; }
}
build sshd "$SSHD_IMAGE"
build proxy "$PROXY_IMAGE"
build sidecar "$SIDECAR_IMAGE"
out=$("${P[@]}" run --rm "$PROXY_IMAGE" --version 2>&1) ||
  fail "the host-built ztssh-proxy does not run in $PROXY_IMAGE (a newer glibc on the host than Debian bookworm's?): $out"
say "images built in $(($(date +%s) - t))s: $SSHD_IMAGE, $PROXY_IMAGE ($out), $SIDECAR_IMAGE"

# 3. Keys, licence, list: what an operator makes with the CA and keygen.
cd "$WORK"
export PATH="$BIN:$PATH"
mkdir -p secrets/sshd-host-key public authorized-keys www
ztssh-ca init --dir ca >/dev/null
ztssh-proxy keygen --dir secrets/ztssh-keys >/dev/null
mv secrets/ztssh-keys/licence-request.pem .
ztssh-ca authorize-server --dir ca --request licence-request.pem --server-id "$POD" \
  --hostname localhost --ttl 1h --out public/licence.pem >/dev/null
cp ca/root.pub public/root.pub
ztssh-ca crl --dir ca --out www/crl.pem >/dev/null
cp www/crl.pem public/crl.pem
ssh-keygen -q -t ed25519 -N '' -C "sshd@$POD" -f secrets/sshd-host-key/ssh_host_ed25519_key
mv secrets/sshd-host-key/ssh_host_ed25519_key.pub host_key.pub
ssh-keygen -q -t ed25519 -N '' -C alice@containers -f alice
echo "alice $(cat alice.pub)" >public/authorized_principals
cp alice.pub authorized-keys/root

# 4. The list server on the host's loopback: a static file with a strong
# ETag and 304 answers, as nginx or a bucket serves it. It logs one line per
# request, which the steps below wait on.
cat >lists.py <<'PY'
import hashlib, http.server, os, sys
www, port_file = sys.argv[1:]
class Lists(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path != "/crl.pem":
            self.send_error(404)
            return
        with open(os.path.join(www, "crl.pem"), "rb") as f:
            body = f.read()
        tag = '"%s"' % hashlib.sha256(body).hexdigest()[:32]
        if self.headers.get("If-None-Match") == tag:
            self.send_response(304)
            self.send_header("ETag", tag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", tag)
        self.send_header("Content-Type", "application/x-pem-file")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_request(self, code="-", size="-"):
        print(f"{self.command} {self.path} {code}", flush=True)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Lists)
srv.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
PY
python3 lists.py "$WORK/www" "$WORK/lists.port" >lists.log 2>&1 &
LISTS_PID=$!
PIDS+=("$LISTS_PID")
wait_for 10 "list server" test -s lists.port
LIST_PORT=$(cat lists.port)
PROXY_PORT=$(free_port)

# 5. The repo's manifest and config, with what differs on this host:
#  - images: the local builds instead of your-registry/...;
#  - the proxy's port published on the host's loopback (hostPort, hostIP);
#  - Secrets as hostPath directories of 0600 files: podman 4.3's Secret
#    volumes write the values base64-encoded, mode 0644 (and crash without
#    `optional`), so the proxy would rightly refuse its keys;
#  - the emptyDir for the kept list as a 0777 hostPath (see below);
#  - revocation_url: the list server on the host. The Pod runs on a
#    slirp4netns network with allow_host_loopback, where 10.0.2.2 is the
#    host's 127.0.0.1: the Pod has its own network namespace (sshd on its
#    loopback is not the host's), and everything on the host side stays on
#    loopback.
cp "$ROOT/docker/kubernetes/ztssh-pod.yaml" pod.yaml
cp "$ROOT/docker/kubernetes/ztssh-config.yaml" config.yaml
subst pod.yaml "image: your-registry/ztssh-sshd:latest" "image: $SSHD_IMAGE"
subst pod.yaml "image: your-registry/ztssh-proxy:latest" "image: $PROXY_IMAGE"
subst pod.yaml "{name: ztssh, containerPort: 2222}" \
  "{name: ztssh, containerPort: 2222, hostPort: $PROXY_PORT, hostIP: 127.0.0.1}"
# The keys' subPath mounts (Kubernetes shows a Secret's files as symlinks,
# which the proxy refuses) become one directory mount: podman 4.3 mounts a
# directory, not the file, for a subPath of a hostPath volume.
subst pod.yaml "        - {name: keys, mountPath: /etc/ztssh/keys/subca.key, subPath: subca.key, readOnly: true}
        - {name: keys, mountPath: /etc/ztssh/keys/noise.key, subPath: noise.key, readOnly: true}" \
  "        - {name: keys, mountPath: /etc/ztssh/keys, readOnly: true}"
for s in ztssh-keys sshd-host-key; do
  subst pod.yaml "secret: {secretName: $s, defaultMode: 0400}" \
    "hostPath: {path: $WORK/secrets/$s, type: Directory}"
done
# emptyDir: podman 4.3 makes it root-owned 0755, where Kubernetes makes it
# 0777, so the proxy (nonroot) could not keep its list there; a 0777
# hostPath directory stands in for it.
mkdir -p "$WORK/cache" && chmod 0777 "$WORK/cache"
subst pod.yaml "emptyDir: {}" "hostPath: {path: $WORK/cache, type: Directory}"
subst config.yaml 'revocation_url = "http://ztssh-lists.ztssh.svc.cluster.local/crl.pem"' \
  "revocation_url = \"http://10.0.2.2:$LIST_PORT/crl.pem\""
configmap ztssh-public public.json licence.pem=public/licence.pem root.pub=public/root.pub \
  crl.pem=public/crl.pem authorized_principals=public/authorized_principals
configmap sshd-authorized-keys authorized-keys.json root=authorized-keys/root

# 6. Run the Pod.
t=$(date +%s)
"${P[@]}" volume rm -f "${VOLUMES[@]}" >/dev/null 2>&1 || true
PLAYED=1
timeout 120 "${P[@]}" play kube --replace --network slirp4netns:allow_host_loopback=true \
  --configmap config.yaml --configmap public.json --configmap authorized-keys.json \
  pod.yaml >play.log 2>&1 || { cat play.log >&2; fail "podman play kube failed"; }
logs() { "${P[@]}" logs "$POD-$1" 2>&1; }
sshd_up() { logs sshd | grep -q 'Server listening on 127.0.0.1 port 22'; }
proxy_up() { logs ztssh-proxy | grep -q '"event":"listening"'; }
wait_for 60 "listening sshd" sshd_up
wait_for 60 "listening proxy" proxy_up
say "Pod $POD up in $(($(date +%s) - t))s; proxy on 127.0.0.1:$PROXY_PORT, lists on 127.0.0.1:$LIST_PORT"

# sshd listens on the Pod's loopback only: every listening socket on port 22
# (state 0A) in the Pod's namespace is 127.0.0.1 (0100007F).
"${P[@]}" exec "$POD-sshd" cat /proc/net/tcp /proc/net/tcp6 >tcp.txt
awk '$4 == "0A" && $2 ~ /:0016$/ { print $2 }' tcp.txt >sshd-listen.txt
[ -s sshd-listen.txt ] || fail "no socket listening on port 22 in the Pod"
if grep -v '^0100007F:0016$' sshd-listen.txt; then
  fail "sshd listens beyond the Pod's loopback: $(tr '\n' ' ' <sshd-listen.txt)"
fi
# The proxy drops root for good once it has read its keys.
dropped() { logs ztssh-proxy | grep -q '"event":"privileges_dropped".*"user":"nonroot"'; }
wait_for 30 "privilege drop to nonroot in the proxy's log" dropped
# The Pod reached the host's list server: a full download, then a 304.
wait_for 30 "first fetch of the list (200)" grep -q '^GET /crl.pem 200' lists.log
wait_for 30 "conditional fetch (304)" grep -q '^GET /crl.pem 304' lists.log
say "sshd on the Pod's loopback only; proxy running as nonroot; list pulled from the host (200, then 304)"

# 7. Real ssh through the sidecar into the Pod. sshd's host key is the one
# from the Secret, checked strictly.
echo "[localhost]:$PROXY_PORT $(cut -d' ' -f1,2 host_key.pub)" >known_hosts
SSH=(ssh -F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes
  -o UserKnownHostsFile="$WORK/known_hosts" -o LogLevel=ERROR -o ConnectTimeout=30
  -i "$WORK/alice" -p "$PROXY_PORT"
  -o ProxyCommand="$BIN/ztssh-sidecar --root $WORK/ca/root.pub --identity $WORK/alice --principal alice %h %p")
set +e
out=$(timeout 60 "${SSH[@]}" root@localhost 'echo "inside $(hostname)"; exit 3' 2>ssh1.err)
status=$?
set -e
[ "$status" -eq 3 ] && [ "$out" = "inside $POD" ] ||
  fail "ssh into the Pod: status $status, output '$out', stderr: $(cat ssh1.err)"
say "ssh through ztssh-sidecar reached sshd in Pod $POD (remote exit status 3 carried back)"
# The same through the sidecar image: ssh on the host, the sidecar in a
# container on the host's network namespace (it dials 127.0.0.1).
SIDECAR_CMD="${P[*]} run --rm -i --network host -v $WORK/ca/root.pub:/w/root.pub:ro"
SIDECAR_CMD+=" -v $WORK/alice:/w/alice:ro -v $WORK/alice.pub:/w/alice.pub:ro $SIDECAR_IMAGE"
SIDECAR_CMD+=" --root /w/root.pub --identity /w/alice --principal alice %h %p"
set +e
out=$(timeout 60 "${SSH[@]}" -o ProxyCommand="$SIDECAR_CMD" root@localhost 'echo "inside $(hostname)"' 2>ssh-image.err)
status=$?
set -e
[ "$status" -eq 0 ] && [ "$out" = "inside $POD" ] ||
  fail "ssh through the sidecar image: status $status, output '$out', stderr: $(cat ssh-image.err)"
say "ssh through the sidecar image ($SIDECAR_IMAGE) reached the Pod too"

# 8. A live session, then a ban published to revocation_url.
timeout 300 "${SSH[@]}" root@localhost 'echo started; exec sleep 240' >live.out 2>live.err &
SSH_PID=$!
PIDS+=("$SSH_PID")
alive() { kill -0 "$SSH_PID" 2>/dev/null; }
started() { grep -q started live.out || { alive || fail "the live session ended early: $(cat live.err)"; false; }; }
wait_for 60 "live session" started
ztssh-ca revoke --dir ca --principal alice >/dev/null
t=$(date +%s%N)
ztssh-ca crl --dir ca --out www/crl.pem >/dev/null
ended() { ! alive; }
wait_for 60 "end of the live session after the ban" ended
ms=$((($(date +%s%N) - t) / 1000000))
set +e
wait "$SSH_PID"
status=$?
set -e
grep -q "session terminated by $POD: principal alice banned" live.err ||
  fail "the live session ended (status $status) without the ban: $(cat live.err)"
# The proxy's log is written by a thread of its own: wait for the line.
killed() { logs ztssh-proxy | grep -q '"event":"session_terminated".*"reason":"principal_banned"'; }
wait_for 30 "session_terminated (principal_banned) in the proxy's log" killed
say "ban published; live session ended ${ms} ms later: $(grep -o 'session terminated by.*' live.err | head -n 1)"

# 9. A new session is refused, and the proxy's metrics (read from inside the
# Pod, where the metrics port stays) show the new list.
set +e
timeout 60 "${SSH[@]}" root@localhost true 2>ssh2.err
status=$?
set -e
[ "$status" -ne 0 ] && grep -q "refused the session: principal alice banned" ssh2.err ||
  fail "a new session after the ban: status $status, stderr: $(cat ssh2.err)"
metrics() {
  "${P[@]}" exec "$POD-sshd" bash -c \
    'exec 3<>/dev/tcp/127.0.0.1/9469; printf "GET $0 HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3; cat <&3' "$1"
}
metrics /healthz | head -n 1 | grep -q ' 200' || fail "/healthz is not 200"
# The manifest's readinessProbe: licence valid, list fresh, sshd reachable.
metrics /readyz >readyz.txt
head -n 1 readyz.txt | grep -q ' 200' || fail "/readyz is not 200: $(cat readyz.txt)"
metrics /metrics >metrics.txt
grep -q '^ztssh_crl_version 2$' metrics.txt || fail "ztssh_crl_version is not 2: $(grep crl_version metrics.txt)"
say "new session refused (principal alice banned); ztssh_crl_version 2; /healthz and /readyz 200"
# Nothing above was passed by a container that crashed and came back.
for c in sshd ztssh-proxy; do
  n=$("${P[@]}" inspect --format '{{.RestartCount}}' "$POD-$c")
  [ "$n" = 0 ] || fail "$POD-$c restarted $n time(s) during the test"
done

# 10. The newest list is kept on the Pod's emptyDir (revocation_cache): the
# ConfigMap's copy stays at version 1, yet a proxy restarted while the list
# server is down enforces version 2 from its first connection.
if logs ztssh-proxy | grep -q '"event":"crl_cache_failed"'; then
  fail "the proxy could not keep the fetched list: $(logs ztssh-proxy | grep crl_cache_failed | head -n 1)"
fi
kept() { "${P[@]}" exec "$POD-ztssh-proxy" cat /var/lib/ztssh/crl.pem >kept.pem 2>/dev/null && cmp -s kept.pem www/crl.pem; }
wait_for 30 "the fetched list kept in /var/lib/ztssh/crl.pem" kept
kill "$LISTS_PID" 2>/dev/null || true
listening() { [ "$(logs ztssh-proxy | grep -c '"event":"listening"')" -ge 2 ]; }
"${P[@]}" restart "$POD-ztssh-proxy" >restart.log 2>&1 || fail "podman restart: $(cat restart.log)"
wait_for 60 "the restarted proxy listening" listening
metrics /metrics >metrics2.txt
grep -q '^ztssh_crl_version 2$' metrics2.txt ||
  fail "after a restart with the list server down, ztssh_crl_version is not 2: $(grep crl_version metrics2.txt)"
set +e
timeout 60 "${SSH[@]}" root@localhost true 2>ssh3.err
status=$?
set -e
[ "$status" -ne 0 ] && grep -q "refused the session: principal alice banned" ssh3.err ||
  fail "a new session after a restart: status $status, stderr: $(cat ssh3.err)"
say "restarted with the list server down: the kept list (version 2) in force at once"
