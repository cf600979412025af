#!/usr/bin/env bash
# Same seed, same numbers across a structural change: run the same settings with the package of
# two source trees and compare what they print.
#
#   git worktree add /tmp/before <commit before the change>
#   bash benchmarks/same_numbers.sh /tmp/before runs/same-before
#   bash benchmarks/same_numbers.sh .           runs/same-after
#   for f in runs/same-before/*.txt; do diff "$f" "runs/same-after/${f##*/}"; done
#
# It writes, into OUT: `shortcut train --print-config` of seven flag sets (pc*.txt: recipes,
# objectives, backbones, a budget, a resumed run), MeanFlow's first 30 checkerboard losses
# (meanflow_losses.txt), the demo's FD-digits at 1 / 4 / 128 steps after a fixed 300 steps
# (demo_fd.txt) and the toy2d rows of checkerboard and moons (toy2d.json). About 10 minutes on
# 2 cores; only the numbers are compared, so the machine need not be quiet. Optional PARTS
# after OUT: config meanflow demo toy2d (default all).
set -u
SRC=$(cd "$1" && pwd); OUT=$2; shift 2
PARTS=${*:-config meanflow demo toy2d}
PY=${PYTHON:-python}
export PYTHONPATH=$SRC/src
mkdir -p "$OUT"; cd "$OUT" || exit 1
S="$PY -m shortcut_models"
for part in $PARTS; do case $part in
config)
  $S train --out r1 --print-config --recipe cpu-small --data mnist > pc1.txt 2>&1
  $S train --out r2 --print-config --recipe reference --objective meanflow --backbone DiT-S/2 --data mnist > pc2.txt 2>&1
  $S train --out r3 --print-config --objective consistency_training --backbone dit --hidden-size 64 --depth 2 --lr 3e-4 --data moons > pc3.txt 2>&1
  $S train --out r4 --print-config --backbone DiT-T/4 --objective imf --data mnist --minutes 2 --precision bf16-if-native > pc4.txt 2>&1
  $S train --out r5 --print-config --recipe cpu-small --steps 100 --objective ism --bootstrap-every 4 > pc5.txt 2>&1
  rm -rf r6; $S train --out r6 --data moons --objective shortcut --steps 3 --log-every 1 --no-progress --lr 2e-3 --ema-decay 0.9 -q > /dev/null 2>&1
  $S train --out r6 --resume --print-config --steps 50 > pc6.txt 2>&1
  $S train --out r7 --print-config --recipe cpu-small --data fashion-mnist --backbone DiT-T/4 --objective meanflow --minutes 3 > pc7.txt 2>&1
  ;;
meanflow)
  rm -rf mf; $S train --out mf --data checkerboard --objective meanflow --steps 30 --log-every 1 --no-progress -q > /dev/null 2>&1
  $PY -c "import json;[print(json.loads(l)['loss']) for l in open('mf/metrics.jsonl') if 'loss' in l]" > meanflow_losses.txt
  ;;
demo)
  rm -rf demo; $S demo --out demo --steps 300 --num 200 --budgets 1 4 128 --no-progress > demo.log 2>&1
  $PY -c "import json;m=json.load(open('demo/metrics.json'))['budgets'];[print(n, repr(v['fd_digits'])) for n,v in m.items()]" > demo_fd.txt
  ;;
toy2d)
  $PY "$SRC/benchmarks/toy2d.py" --datasets checkerboard moons --json toy2d.json > toy2d.log 2>&1
  ;;
esac; done
