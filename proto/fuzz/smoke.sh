#!/usr/bin/env bash
# Bounded fuzz runs of every target (or the ones named).
#
# The CI smoke test: each target runs for FUZZ_SECS seconds (default 10)
# with AddressSanitizer, starting from its checked-in seeds
# (fuzz/seeds/<target>) and the corpus earlier runs left, and must find
# nothing.
#   bash proto/fuzz/smoke.sh                          # all targets
#   FUZZ_SECS=600 bash proto/fuzz/smoke.sh record     # one target, longer
#
# A campaign: FUZZ_RUNS=N runs each target for N executions instead (no
# time limit), and FUZZ_SANITIZER=none builds without AddressSanitizer
# (ztssh's own crates forbid unsafe code, though ring's C and assembly,
# libc and the allocator are not covered by that; without ASan the targets
# behind a handshake run about five times as fast). docs/BENCHMARKS.md records one:
#   FUZZ_RUNS=10000000 FUZZ_SANITIZER=none bash proto/fuzz/smoke.sh
#
# Every build here is a fuzzing build (--cfg fuzzing, and ztssh-proto's
# crypto-standins feature, which fuzz/Cargo.toml enables): the public-key
# operations are cheap stand-ins (proto/src/primitives.rs). Before fuzzing
# all targets, this script runs primitives.rs's contract tests against the
# stand-ins, lints them, and checks that each binary (proxy, sidecar, CA)
# still refuses to compile with them, and with proto's test hooks (testkit).
#
# cargo-fuzz needs nightly features for the sanitizer; the machine has only
# stable Rust, so RUSTC_BOOTSTRAP=1 enables them (as rustc's own build does).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-10}"
runs="${FUZZ_RUNS:-}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
# glibc returns large freed blocks to the kernel by default, so a target
# whose runs allocate a few hundred KB pays page faults on every run.
export GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456:glibc.malloc.top_pad=67108864"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
    # The stand-ins keep the real operations' contract, and no binary can
    # be built with them (its own target directory: other flags).
    echo "fuzz: stand-in contract tests, and the binaries' refusal of stand-ins"
    (
        cd ..
        export CARGO_TARGET_DIR=target/standins RUSTFLAGS="--cfg fuzzing"
        # primitives.rs's contract, and the rekey's derivation and its
        # refusal of low-order and malformed keys, on the stand-ins.
        cargo test --quiet --locked -p ztssh-proto --features crypto-standins --lib \
            -- primitives:: rekey::tests::
        # The stand-ins pass clippy too (CI's clippy never compiles them).
        cargo clippy --quiet --locked -p ztssh-proto --features crypto-standins --all-targets -- -D warnings
        refusal="$(mktemp)"
        for bin in ztssh-proxy ztssh-sidecar ztssh-ca; do
            if cargo check --quiet --locked -p "$bin" --bin "$bin" \
                --features ztssh-proto/crypto-standins >"$refusal" 2>&1; then
                echo "fuzz: $bin compiled with the crypto stand-ins" >&2
                exit 1
            fi
            # E0080: a constant's evaluation failed, i.e. the guard's assert.
            if ! grep -q "error\[E0080\]" "$refusal" ||
                ! grep -q "$bin cannot be built with --cfg fuzzing" "$refusal"; then
                cat "$refusal" >&2
                echo "fuzz: $bin failed to compile with the stand-ins for another reason" >&2
                exit 1
            fi
        done
        # Nor with proto's test hooks (testkit, which fuzz/Cargo.toml and
        # the tests crate enable): the guard beside the stand-ins' one.
        for bin in ztssh-proxy ztssh-sidecar ztssh-ca; do
            if cargo check --quiet --locked -p "$bin" --bin "$bin" \
                --features ztssh-proto/testkit >"$refusal" 2>&1; then
                echo "fuzz: $bin compiled with proto's testkit" >&2
                exit 1
            fi
            if ! grep -q "error\[E0080\]" "$refusal" ||
                ! grep -q "$bin cannot be built with ztssh-proto's testkit feature" "$refusal"; then
                cat "$refusal" >&2
                echo "fuzz: $bin failed to compile with testkit for another reason" >&2
                exit 1
            fi
        done
        rm -f "$refusal"
    )
fi
cargo fuzz build -O -s "$sanitizer"
if [ -n "$runs" ]; then
    limit=(-runs="$runs")
    what="$runs runs"
else
    limit=(-max_total_time="$secs")
    what="${secs}s"
fi
for t in "${targets[@]}"; do
    echo "fuzz: $t for $what"
    # -timeout: one input may not take more than 10 s; -rss_limit_mb bounds memory.
    # Seeds (fuzz/seeds/<target>, checked in) start the run beside the
    # corpus that earlier runs left; new finds go to the corpus.
    corpus=(fuzz/corpus/"$t")
    mkdir -p "${corpus[0]}"
    if [ -d fuzz/seeds/"$t" ]; then corpus+=(fuzz/seeds/"$t"); fi
    log="$(mktemp)"
    status=0
    start=$(date +%s)
    cargo fuzz run -O -s "$sanitizer" "$t" "${corpus[@]}" -- "${limit[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    end=$(date +%s)
    grep -E "^Done " "$log" || true
    # One line for the record: executions, their rate, and the corpus.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    files=$(find "${corpus[0]}" -type f | wc -l)
    bytes=$(du -sb "${corpus[0]}" | cut -f1)
    echo "fuzz: $t: ${execs:-?} executions in $((end - start)) s (${rate:-?} exec/s), corpus $files inputs, $bytes bytes"
    # On any finding cargo fuzz exits non-zero and leaves an artifact.
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log"
        echo "fuzz: $t FAILED; reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run -O -s $sanitizer $t <artifact> (from proto/)"
        ls fuzz/artifacts/"$t"/ 2>/dev/null || true
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets, $what each, no findings"
