#!/usr/bin/env bash
# docs/comparison.md's headline comparison: every method on the demo's network (recipe cpu-small: the
# folded U-Net 16/32/64, batch 64, AdamW lr 1e-3 cosine, EMA 0.99, fp32 channels-last; online
# bootstrap targets for shortcut and ism) for the demo's 2,300 steps x 64 images per method, the
# teacher's 2,070 steps (--teacher-share 0.9, the table's setting) included for the two-stage
# methods; every method sampled with the demo's
# guidance (CFG 2 at 1 and 2 steps, 1.75 from 4). One torch thread per run, so two seeds can run
# side by side on 2 cores; each run folder resumes where it stopped.
#
#   bash benchmarks/compare_unet.sh mnist 0      # then: mnist 1, fashion-mnist 0, openmoji 0
#   bash benchmarks/compare_unet.sh mnist 0 share75 --teacher-share 0.75 \
#       --objectives progressive_distillation consistency_distillation reflow   # a setting: TAG, flags
#   python benchmarks/compare_seeds.py runs/cmp-unet-mnist-s0 runs/cmp-unet-mnist-s1 \
#       --out benchmarks/results/compare_mnist_unet
#   python benchmarks/guidance_per_method.py runs/cmp-unet-mnist-s0 \
#       --json benchmarks/results/guidance_per_method_mnist_s0.json   # each method's own CFG
#
# mnist, fashion-mnist: FD-digits v1 of 500 samples at 1, 2, 4, ..., 128 steps (reflow: 2,000
# pairs x 16 teacher steps). openmoji: unlabelled, so no guidance; FID of 1,000 samples at 1, 2, 4
# and 128 steps (Inception: about 7 minutes per budget at one thread) against half B of the set,
# whose floor (half A against half B) comes first.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1
seed=$2
tag=${3:-}
shift $(( $# < 3 ? $# : 3 ))
out="runs/cmp-unet-$data-s$seed${tag:+-$tag}"
mkdir -p "$out"
args=(--data "$data" --recipe cpu-small --steps 2300 --seed "$seed" --out "$out"
      --json "$out/compare.json" --no-progress --pairs-num 2000 --pairs-steps 16
      --teacher-share 0.9)
case "$data" in
    mnist|fashion-mnist)
        args+=(--num 500 --metric fd-digits --cfg 2 4:1.75) ;;
    openmoji)
        if [ ! -f runs/openmoji-half-b.npz ]; then
            OMP_NUM_THREADS=1 python benchmarks/fid_floor.py --data openmoji --num 1000 \
                --ref-out runs/openmoji-half-b.npz --json benchmarks/results/fid_floor_openmoji.json
        fi
        # the one-phase methods first, so that a run stopped for time has the ones the issue
        # requires on colour; the two-stage methods (teacher + student) follow
        args+=(--num 1000 --metric fid --ref runs/openmoji-half-b.npz --eval-steps 1 2 4 128
               --objectives flow_matching consistency_training live_reflow shortcut meanflow ism
               progressive_distillation consistency_distillation reflow) ;;
esac
start=$(date +%s)
OMP_NUM_THREADS=1 shortcut compare "${args[@]}" "$@"
echo "$data seed $seed${tag:+ $tag $*}: $(( $(date +%s) - start )) s ($(git rev-parse --short HEAD), 1 torch thread)" \
    | tee -a benchmarks/results/compare_unet_times.txt
