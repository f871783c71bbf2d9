#!/usr/bin/env bash
# Fuzzing throughput of this tree against another commit, side by side in
# one run: both builds (AddressSanitizer, as the CI smoke test), then each
# target for FUZZ_SECS seconds (default 10) on the base and on this tree in
# turn, each from its own checked-in seeds and an empty corpus. Prints one
# table row per target; docs/BENCHMARKS.md records a run.
#   bash proto/fuzz/compare.sh b81ef7a client_hello server_hello record
# The base is checked out in a temporary git worktree, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
base_rev="${1:?usage: compare.sh <base commit> [target...]}"
shift
secs="${FUZZ_SECS:-10}"
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
# As smoke.sh: large freed blocks stay in the process.
export GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456:glibc.malloc.top_pad=67108864"
work="$(mktemp -d)"
base="$work/base"
cleanup() {
    git worktree remove --force "$base" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git worktree add --detach "$base" "$base_rev" >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
echo "compare: building $base_rev and this tree ($sanitizer)"
(cd "$base/proto" && cargo fuzz build -O -s "$sanitizer" >/dev/null 2>&1)
cargo fuzz build -O -s "$sanitizer" >/dev/null 2>&1
triple="$(rustc -vV | sed -n 's/^host: //p')"
# Runs one build's target; prints "executions exec/s".
run() {
    local tree="$1" t="$2" corpus seeds=() log
    corpus="$(mktemp -d "$work/corpus.XXXX")"
    if [ -d "$tree/fuzz/seeds/$t" ]; then seeds=("$tree/fuzz/seeds/$t"); fi
    log="$work/log"
    "$tree/fuzz/target/$triple/release/$t" "$corpus" "${seeds[@]}" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        echo "compare: $t failed on $tree" >&2
        return 1
    }
    echo "$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)" \
        "$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
}
echo "| target | $base_rev exec/s | $(git rev-parse --short HEAD) exec/s | ratio |"
echo "|---|---|---|---|"
for t in "${targets[@]}"; do
    if [ ! -e "$base/proto/fuzz/fuzz_targets/$t.rs" ]; then
        echo "| $t | (no such target) | | |"
        continue
    fi
    before="$(run "$base/proto" "$t")"
    before="${before#* }"
    after="$(run "$PWD" "$t")"
    after="${after#* }"
    echo "| $t | $before | $after | $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.1f×", a / b }') |"
done
