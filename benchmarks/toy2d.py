"""Flow matching vs shortcut on the 2-D sets: same network, data, seed and number of steps.

Trains both objectives on each data set, evaluates each at 1, 2, 4, ..., 128 sampling steps
(sliced W2 against 2,000 fresh points), prints a table and writes
{"<dataset>": {"<objective>": {"<steps>": <sliced W2>}}} to --json.

The paper's claim at this scale, checked per data set:
  (a) shortcut at 1 step is at least 3x better (lower) than flow matching at 1 step;
  (b) shortcut at 1 step is within 1.5x of shortcut at 128 steps.

    python benchmarks/toy2d.py --json benchmarks/results/toy2d.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from shortcut_models.config import TrainConfig
from shortcut_models.data import TOY_DATASETS
from shortcut_models.evaluation import evaluate_vectors
from shortcut_models.report import markdown_table, write_json
from shortcut_models.train import RunOptions, Trainer

STEPS = [1, 2, 4, 8, 16, 32, 64, 128]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(TOY_DATASETS), choices=list(TOY_DATASETS))
    p.add_argument("--objectives", nargs="+", default=["flow_matching", "shortcut"])
    p.add_argument("--train-steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema-decay", type=float, default=0.99)
    p.add_argument("--lr-schedule", default="cosine")
    p.add_argument("--num", type=int, default=2000, help="samples per evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--runs", type=Path, help="keep run folders here (default: a temporary folder)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="toy2d-"))
    results: dict[str, dict[str, dict[str, float]]] = {}
    timings: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for dataset in args.datasets:
        for objective in args.objectives:
            config = TrainConfig.from_tree(
                {
                    "data": {"name": dataset},
                    "objective": {"name": objective},
                    "backbone": {"options": {"hidden_size": args.hidden_size, "depth": args.depth}},
                    "training": {
                        "steps": args.train_steps,
                        "batch_size": args.batch_size,
                        "seed": args.seed,
                    },
                    "optimisation": {
                        "lr": args.lr,
                        "ema_decay": args.ema_decay,
                        "lr_schedule": args.lr_schedule,
                    },
                }
            )
            out = runs / f"{dataset}-{objective}"
            tick = time.perf_counter()
            trainer = Trainer(config, RunOptions(out_dir=out, progress=False, tensorboard=False))
            trainer.run()
            train_s = time.perf_counter() - tick
            scores = evaluate_vectors(
                trainer.ema,
                trainer.objective,
                trainer.data,
                STEPS,
                args.num,
                args.seed,
                exact=False,
            )
            results.setdefault(dataset, {})[objective] = {
                str(n): s["sliced_w2"] for n, s in scores.items()
            }
            timings.setdefault(dataset, {})[objective] = round(train_s, 1)
            row = " ".join(f"{n}:{s['sliced_w2']:.3f}" for n, s in scores.items())
            print(f"{dataset:>12} {objective:>13} train {train_s:5.0f}s  {row}", flush=True)

    total_s = time.perf_counter() - started
    rows = [
        [dataset, objective, *(results[dataset][objective][str(n)] for n in STEPS)]
        for dataset in results
        for objective in results[dataset]
    ]
    print()
    print(markdown_table(["data", "objective", *(f"{n} step" for n in STEPS)], rows))
    checks = target_checks(results)
    if checks:
        print()
        print(
            markdown_table(["data", "SC1 / FM1", "(a) <= 1/3", "SC1 / SC128", "(b) <= 1.5"], checks)
        )
    print(
        f"\ntotal {total_s:.0f}s on {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results)
        meta = {
            "command": " ".join(sys.argv),
            "total_seconds": round(total_s, 1),
            "train_seconds": timings,
            "threads": args.threads,
            "torch": torch.__version__,
            "settings": {k: str(v) for k, v in vars(args).items()},
        }
        write_json(args.json.with_suffix(".meta.json"), meta)
        print(f"wrote {args.json}")
    return 0


def target_checks(results: dict[str, dict[str, dict[str, float]]]) -> list[list[object]]:
    rows = []
    for dataset, by_objective in results.items():
        if {"flow_matching", "shortcut"} <= set(by_objective):
            fm, sc = by_objective["flow_matching"], by_objective["shortcut"]
            a = sc["1"] / fm["1"]
            b = sc["1"] / sc["128"]
            rows.append([dataset, a, "yes" if a <= 1 / 3 else "NO", b, "yes" if b <= 1.5 else "NO"])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
