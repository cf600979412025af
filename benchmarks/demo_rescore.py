"""Re-score a finished demo run at other guidance scales and noise seeds: how much of a difference
between two demo runs is the 200 samples' noise.

Samples each budget of the run's checkpoint (EMA weights) with the demo's sampler, `--num`
samples (classes in turn) per noise seed, and scores them with the demo's FD-digits against the
same 10,000 training images; prints a table of the mean and the spread over seeds per budget and
writes the rows as JSON. Fixed step count: the checkpoint is what it is.

    python benchmarks/demo_rescore.py runs/demo/run --cfg 2 4:1.75 --seeds 0 1 2 3 4 \\
        --budgets 1 4 128 --json runs/rescore.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from shortcut_models.cli.args import guidance_entry
from shortcut_models.demo import demo_scorer, score_budgets
from shortcut_models.demo.run import DEMO_CFG
from shortcut_models.factory import load_run
from shortcut_models.guidance import describe_schedule, schedule_from
from shortcut_models.report import markdown_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path, help="a demo's run folder (OUT/run)")
    p.add_argument("--cfg", nargs="+", type=guidance_entry, default=list(DEMO_CFG))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--budgets", nargs="+", type=int, default=[1, 4, 128])
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--precision", default="fp32", help="sampling autocast: fp32 or bf16")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    schedule = schedule_from(args.cfg)
    run = load_run(args.run)
    data = run.checkpoint.config.data.name
    scorer = demo_scorer(data, 0)
    tick = time.perf_counter()
    by_seed = {}
    for seed in args.seeds:
        metrics, _ = score_budgets(
            run.model.eval(), run.objective, tuple(run.spec.shape), run.spec.num_classes, scorer,
            args.budgets, args.num, seed, schedule, args.precision,
        )  # fmt: skip
        by_seed[seed] = {n: m["fd_digits"] for n, m in metrics.items()}
        print(f"seed {seed}: " + ", ".join(f"{n}: {v:.1f}" for n, v in by_seed[seed].items()))
    rows = []
    for n in map(str, args.budgets):
        values = [by_seed[s][n] for s in args.seeds]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append([n, statistics.mean(values), spread, min(values), max(values)])
    print(f"{args.run}: CFG {describe_schedule(schedule)}, {args.num} samples per seed, "
          f"seeds {args.seeds}")  # fmt: skip
    print(markdown_table(["steps", "FD-digits mean", "std", "min", "max"], rows))
    if args.json:
        record = {
            "run": str(args.run), "cfg": describe_schedule(schedule), "num": args.num,
            "precision": args.precision, "seeds": by_seed, "seconds": time.perf_counter() - tick,
            "machine": platform.processor() or platform.machine(),
        }  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
