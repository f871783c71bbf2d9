#!/usr/bin/env bash
# A self-contained local demo of ztssh: a temporary root CA and licence, a
# private real sshd on loopback, ztssh-proxy in front of it, and the real
# `ssh` client going through `ProxyCommand ztssh-sidecar %h %p`.
# Everything lives in a temporary directory and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; exit 1
}

bold "0. Prerequisites: OpenSSH and a release build"
bash tests/setup-deps.sh
run cargo build --release --workspace --locked --quiet
BIN=$ROOT_DIR/target/release
export PATH=$BIN:$PATH

DEMO=$(mktemp -d /tmp/ztssh-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DEMO"
}
trap cleanup EXIT
cd "$DEMO"

bold "1. The offline root CA"
run ztssh-ca init --dir ca

bold "2. The proxy makes its Sub-CA and tunnel keys, and asks for a licence"
run ztssh-proxy keygen --dir state
run ztssh-ca authorize-server --dir ca --request state/licence-request.pem \
  --server-id demo-web1 --hostname localhost --ttl 24h --out licence.pem
run ztssh-ca show licence.pem

bold "3. A private, unmodified sshd on loopback"
ssh-keygen -q -t ed25519 -N '' -f ssh_host_key
ssh-keygen -q -t ed25519 -N '' -C alice@demo -f alice
ssh-keygen -q -t ed25519 -N '' -C mallory@demo -f mallory
cp alice.pub authorized_keys; cat mallory.pub >> authorized_keys
SSHD_PORT=$(free_port)
cat > sshd_config <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $DEMO/ssh_host_key
PidFile $DEMO/sshd.pid
AuthorizedKeysFile $DEMO/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel VERBOSE
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -D -f "$DEMO/sshd_config" -E "$DEMO/sshd.log" & PIDS+=($!)
for _ in $(seq 1 100); do grep -q "Server listening" sshd.log 2>/dev/null && break; sleep 0.05; done
echo "sshd listening on 127.0.0.1:$SSHD_PORT (reachable only through the proxy in a real deployment)"

bold "4. ztssh-proxy in front of it; alice is authorized, mallory is not"
PROXY_PORT=$(free_port)
echo "alice $(cat alice.pub)" > principals
cat > proxy.toml <<CFG
listen = "127.0.0.1:$PROXY_PORT"
upstream = "127.0.0.1:$SSHD_PORT"
state_dir = "$DEMO/state"
licence = "$DEMO/licence.pem"
root_public_key = "$DEMO/ca/root.pub"
authorized_principals = "$DEMO/principals"
revocation_list = "$DEMO/crl.pem"
# Short timings so the demo shows challenges and renewals live
# (defaults: a challenge every 30 s, 5-minute certificates). Certificates
# under 60 s need insecure_short_certs here and --insecure-short-certs on
# the sidecar: for demos and tests only.
challenge_interval_secs = 2
challenge_deadline_secs = 2
cert_ttl_secs = 6
insecure_short_certs = true
CFG
run ztssh-ca crl --dir ca --out crl.pem
run ztssh-proxy check --config proxy.toml
ztssh-proxy run --config proxy.toml 2> proxy.log & PIDS+=($!)
for _ in $(seq 1 100); do grep -q 'event="listening"' proxy.log 2>/dev/null && break; sleep 0.05; done
SHOWN=0
proxy_says() {  # print the proxy's log lines since the last call
  sleep 0.3
  local total; total=$(wc -l < proxy.log)
  tail -n +"$((SHOWN + 1))" proxy.log | head -n "$((total - SHOWN))" | sed 's/^/    [proxy] /'
  SHOWN=$total
}
proxy_says

SSH_OPTS=(-F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new
          -o UserKnownHostsFile="$DEMO/known_hosts" -o LogLevel=ERROR -p "$PROXY_PORT")
sidecar() { echo "ztssh-sidecar -v --insecure-short-certs --root $DEMO/ca/root.pub --identity $DEMO/$1 --principal alice %h %p"; }

bold "5. Real ssh through the sidecar: ProxyCommand ztssh-sidecar %h %p"
run ssh "${SSH_OPTS[@]}" -i alice -o ProxyCommand="$(sidecar alice)" root@localhost \
  'echo "hello from $(hostname), through a hybrid post-quantum tunnel"; exit 3' || echo "remote exit status: $? (propagated)"
proxy_says

bold "5b. Identity is checked for the whole session: challenges and renewals, live"
run ssh "${SSH_OPTS[@]}" -i alice -o ProxyCommand="$(sidecar alice)" root@localhost \
  'for i in 1 2 3 4 5 6 7 8; do echo "  remote shell still here ($i s)"; sleep 1; done' 

proxy_says

bold "6. scp through the same tunnel"
head -c 8388608 /dev/urandom > payload.bin
run scp "${SSH_OPTS[@]/-p/-P}" -i alice -o ProxyCommand="$(sidecar alice)" payload.bin root@localhost:"$DEMO/copied.bin"
run sha256sum payload.bin copied.bin

proxy_says

bold "7. Mallory's key (valid for sshd!) claims to be alice: stopped at the proxy"
run ssh "${SSH_OPTS[@]}" -i mallory -o ProxyCommand="$(sidecar mallory)" root@localhost true || true

proxy_says

bold "8. A sidecar pinned to another root refuses the server before revealing the user"
ztssh-ca init --dir other-ca >/dev/null
run ssh "${SSH_OPTS[@]}" -i alice -o ProxyCommand="ztssh-sidecar --root $DEMO/other-ca/root.pub --identity $DEMO/alice --principal alice %h %p" root@localhost true || true

proxy_says

bold "8b. Revocation ends a live shell: ban alice while her session runs"
ssh "${SSH_OPTS[@]}" -i alice -o ProxyCommand="$(sidecar alice)" root@localhost \
  'echo "  long-running job started"; sleep 60; echo "  (never printed)"' & SSH_PID=$!
sleep 2
run ztssh-ca revoke --dir ca --principal alice
START=$(date +%s%N)
run ztssh-ca crl --dir ca --out crl.pem
wait "$SSH_PID" || true
echo "  session gone $(( ($(date +%s%N) - START) / 1000000 )) ms after the new revocation list was written"
proxy_says

bold "9. What sshd saw: only 127.0.0.1, joined to the real client by the proxy's local port"
grep -E "Accepted publickey" sshd.log | sed 's/^/    [sshd] /'
grep -o 'event="upstream_connected".*' proxy.log | sed 's/^/    [proxy] /'
echo "    sshd never saw a connection for mallory's attempt: $(grep -c 'Connection from' sshd.log) connections total, all authorized ones."

bold "Done. Everything ran on loopback in $DEMO and is now stopped and removed."
