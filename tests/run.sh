#!/usr/bin/env bash
# The whole test suite: unit and property tests, in-memory protocol, and
# end-to-end tests against a private real sshd with the real ssh, scp, sftp
# and rsync, the container deployment under podman (tests/containers.sh),
# then every benchmark in its short mode and a short bounded run of every
# fuzz target.
# Builds once (release profile, shared with the benchmark), then runs
# tests in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-deps.sh
cargo build --release --workspace --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --workspace --locked --no-fail-fast
else
  cargo test --release --workspace --locked --no-fail-fast
fi
# The container deployment, for real: images from docker/Dockerfile (with
# the binaries just built), the Pod of docker/kubernetes/ under podman, real
# ssh into it and a ban through revocation_url. 25-50 s; the first run on a
# machine also makes the Debian base image and the apt-get layers (1.5-4 min).
bash tests/containers.sh
# Every benchmark in its short mode: each must still run and print its
# figures (none asserts a speed; docs/BENCHMARKS.md has the full runs).
# The soak bench (1.5-2 min short) also fails on any session it did not
# end on purpose; it needs root for its network namespace (ip, tc, nft).
ZTSSH_BENCH_SHORT=1 cargo bench --workspace --locked --bench '*'
# Every fuzz target for FUZZ_SECS (default 10) seconds.
bash proto/fuzz/smoke.sh
