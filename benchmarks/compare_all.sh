#!/usr/bin/env bash
# docs/comparison.md's 2-D tables: `shortcut compare` on the four 2-D sets (defaults: MLP,
# 4,000 steps x 256, lr 1e-3 cosine, EMA 0.99, sliced W2 on 2,000 samples) and MNIST
# (DiT-T/4, 2,500 steps x 64 as the demo, FD-digits on 500 samples at 1, 2, 4, ..., 128 steps).
# Results land in benchmarks/results/compare_<data>.{json,md,png}; runs in runs/compare-<data>.
# OBJECTIVES="live_reflow meanflow" re-runs only those methods (in runs/rerun-<data>) and merges
# their rows into the recorded results (benchmarks/merge_compare.py).
set -euo pipefail
cd "$(dirname "$0")/.."
sets="${*:-checkerboard 8gaussians moons spiral mnist}"
for data in $sets; do
    extra=()
    if [ "$data" = mnist ]; then
        extra=(--num 500 --pairs-num 2000 --pairs-steps 16)
    fi
    start=$(date +%s)
    if [ -n "${OBJECTIVES:-}" ]; then
        # shellcheck disable=SC2086
        shortcut compare --data "$data" --out "runs/rerun-$data" --no-progress \
            --objectives $OBJECTIVES --json "runs/rerun-$data/compare.json" "${extra[@]}"
        python benchmarks/merge_compare.py "$data" "runs/rerun-$data"
        echo "$data: $(( $(date +%s) - start )) s ($OBJECTIVES only)" \
            | tee -a benchmarks/results/compare_times.txt
        continue
    fi
    shortcut compare --data "$data" --out "runs/compare-$data" --no-progress \
        --json "benchmarks/results/compare_$data.json" "${extra[@]}"
    cp "runs/compare-$data/compare.md" "benchmarks/results/compare_$data.md"
    cp "runs/compare-$data/compare.png" "benchmarks/results/compare_$data.png"
    echo "$data: $(( $(date +%s) - start )) s" | tee -a benchmarks/results/compare_times.txt
done
