#!/usr/bin/env bash
# The whole test suite: unit and property tests, in-memory protocol, and
# end-to-end tests against a private real sshd with the real ssh, scp, sftp
# and rsync, the container deployment under podman (tests/containers.sh),
# the Debian packages installed into a clean container (tests/packages.sh),
# the sidecar's macOS and Windows builds (tests/cross.sh),
# the sshd end-to-end tests against OpenSSH 10 (tests/sshd10.sh),
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
# The Debian packages: built twice and compared byte for byte, then
# installed into a clean Debian container and run from the unit's own
# ExecStart and config, with a real ssh session through them. Two full
# release builds from clean target directories (most of its time), then
# about a minute, plus the image's apt-get (1-2 min).
bash tests/packages.sh
# The sidecar for the laptops' other systems: type-checked for macOS,
# built for Windows and its unit tests run under Wine 10 in a Debian 13
# container. A few minutes of builds; the first run on a machine also
# makes the Wine image (2-5 min).
bash tests/cross.sh
# The zero-standing-keys, sshd-setup and penalty tests again, against
# OpenSSH 10 from docker/Dockerfile's sshd-backports image (%C, penalties).
# About 2 min; the first run on a machine also builds the image (1-2 min).
bash tests/sshd10.sh
# Every benchmark in its short mode: each must still run and print its
# figures (none asserts a speed; docs/BENCHMARKS.md has the full runs).
# Each prints one `BENCH` line per figure; bench-history sets them beside
# docs/BENCHMARKS.md's record (a report only: figures of a shared CI
# machine are not comparable; compare side by side before believing one).
# The soak (`--bench soak`) is not run here yet: it fails today on the four
# findings docs/BENCHMARKS.md records under "Soak with faults" (issue 26),
# and joins this list once they are fixed.
ZTSSH_BENCH_SHORT=1 cargo bench --workspace --locked --bench e2e --bench kill --bench fleet --bench proof --bench credential --bench burst --bench workload | tee target/bench-short.txt
cargo run --release --locked -q -p ztssh-tests --bin bench-history -- compare --report target/bench-short.txt
# Every fuzz target for FUZZ_SECS (default 10) seconds.
bash proto/fuzz/smoke.sh
