#!/usr/bin/env bash
# Short, bounded fuzz run of every target: the CI smoke test. Each target
# runs for FUZZ_SECS seconds (default 10), starting from its checked-in
# seeds (fuzz/seeds/<target>) where it has any, and must find nothing.
#   bash proto/fuzz/smoke.sh            # all targets
#   FUZZ_SECS=600 bash proto/fuzz/smoke.sh record   # one target, longer
# cargo-fuzz needs nightly features for the sanitizer; the machine has only
# stable Rust, so RUSTC_BOOTSTRAP=1 enables them (as rustc's own build does).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-10}"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -O
for t in "${targets[@]}"; do
    echo "fuzz: $t for ${secs}s"
    # -timeout: one input may not take more than 10 s; -rss_limit_mb bounds memory.
    # Seeds (fuzz/seeds/<target>, checked in) start the run beside the
    # corpus that earlier runs left; new finds go to the corpus.
    corpus=(fuzz/corpus/"$t")
    mkdir -p "${corpus[0]}"
    if [ -d fuzz/seeds/"$t" ]; then corpus+=(fuzz/seeds/"$t"); fi
    log="$(mktemp)"
    status=0
    cargo fuzz run -O "$t" "${corpus[@]}" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || status=$?
    grep -E "^Done " "$log" || true
    # On any finding cargo fuzz exits non-zero and leaves an artifact.
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log"
        echo "fuzz: $t FAILED; reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run -O $t <artifact> (from proto/)"
        ls fuzz/artifacts/"$t"/ 2>/dev/null || true
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets, ${secs}s each, no findings"
