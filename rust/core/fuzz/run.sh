#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60; 0: no time limit, for a run bounded by
# -runs=N given after it), one after the other, and prints how many inputs each ran. Arguments
# after SECONDS go to libFuzzer. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Exits non-zero if a target crashed, panicked, hung
# or ran out of memory; its input is then in rust/core/fuzz/artifacts/<target>/.
#
#   bash rust/core/fuzz/run.sh 600
#   RYZQ_FUZZ_TARGETS="unpack" bash rust/core/fuzz/run.sh 0 -runs=1000000
set -euo pipefail
cd "$(dirname "$0")/.."  # rust/core, where cargo fuzz finds fuzz/

seconds=${1:-60}
shift $(($# > 0 ? 1 : 0))
read -ra targets <<<"${RYZQ_FUZZ_TARGETS:-safetensors_header ryzq_metadata unpack model_folder tokenizer gguf_file}"

cargo +nightly fuzz build
failed=0
for target in "${targets[@]}"; do
    # New inputs go to a folder of their own; the committed seeds stay as they are.
    work=fuzz/target/corpus/$target
    log=fuzz/target/$target.log
    mkdir -p "$work" "fuzz/artifacts/$target"
    dict=()
    [[ $target == unpack ]] || dict=(-dict=fuzz/ryzq.dict)
    start=$SECONDS
    if cargo +nightly fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        "${dict[@]}" "$@" >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "$target: $runs executions in $((SECONDS - start)) s, no crash"
    else
        failed=1
        echo "$target: FAILED after $((SECONDS - start)) s (log: rust/core/$log)"
        grep -E 'panicked at|ERROR:|SUMMARY:|Test unit written' "$log" | head -n 8 || tail -n 20 "$log"
    fi
done
exit $failed
