"""`shortcut compare`: train the paper's methods with one budget and compare them by steps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models.cli import args as a
from shortcut_models.cli import flags as f

SUMMARY = "train the paper's methods with one budget and compare them across step counts"
DESCRIPTION = (
    "Train flow matching, progressive and consistency distillation, consistency "
    "training, reflow, live reflow and shortcut with the same backbone, data, seed and "
    "number of optimizer steps (a teacher's steps count in a distillation method's budget), "
    "evaluate each at 1, 2, 4, ..., 128 steps (sliced W2 for vectors, FD-digits for MNIST, "
    "FID otherwise), and write OUT/compare.md, OUT/compare.png and --json. Resumable."
)

# the flags that set every method's TrainConfig (compare.compare_config)
SHARED = ("backbone", "steps", "batch_size", "lr", "ema_decay", "seed")


def register(subparsers: Any) -> None:
    from shortcut_models.compare import METHODS
    from shortcut_models.devices import MEMORY_FORMATS, PRECISIONS
    from shortcut_models.evaluation.images import METRICS
    from shortcut_models.recipes import recipe_names
    from shortcut_models.sampling import STEP_BUDGETS

    p = a.command(subparsers, "compare", run, SUMMARY, DESCRIPTION)
    p.add_argument("--data", required=True, type=a.data_set(), help=f"data set: {a.data_help()}")
    f.add_options(p, f.data_options())
    p.add_argument("--json", type=Path, help="write {objective: {steps: value}} here")
    p.add_argument("--out", type=a.path_arg, help="run folders (default runs/compare-DATA)")
    p.add_argument(
        "--objectives",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="methods to train (default: all)",
    )
    p.add_argument(
        "--recipe",
        action=a.Once,
        choices=recipe_names(),
        help="start every method from a recipe's network, batch, optimizer, EMA, step count and "
        "run options (cpu-small: the demo's U-Net); a method gets the recipe's objective "
        "options it has; flags given beside it win",
    )
    p.add_argument("--backbone", help="network (default mlp for vectors, DiT-T/4 for images)")
    p.add_argument(
        "--steps", type=a.positive_int, help="optimizer steps per method (default 4000 / 2500)"
    )
    p.add_argument("--batch-size", type=a.positive_int, help="default 256 vectors, 64 images")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--ema-decay", type=float, help="EMA decay (default 0.99)")
    p.add_argument("--seed", type=a.seed_arg, default=0, help="seed (default 0)")
    p.add_argument(
        "--teacher-share",
        type=float,
        default=0.5,
        help="two-stage methods (distillation, reflow): the flow-matching teacher's share of the "
        "step budget; the student trains the rest (default 0.5)",
    )
    p.add_argument(
        "--eval-steps",
        nargs="+",
        type=a.positive_int,
        default=list(STEP_BUDGETS),
        help="sampling step budgets evaluated, where a method allows them",
    )
    a.add_count(p, "--num", 2000, "samples per evaluation")
    a.add_cfg(p, "classifier-free guidance at evaluation, the same for every method (1: none)")
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="training autocast (default: the recipe's, else auto)",
    )
    p.add_argument(
        "--memory-format",
        choices=list(MEMORY_FORMATS),
        help="training memory format (default: the recipe's, else contiguous)",
    )
    p.add_argument(
        "--metric", choices=["auto", *METRICS], default="auto", help="images: metric (auto)"
    )
    p.add_argument("--inception", help="fid: TorchScript Inception weights path")
    p.add_argument(
        "--ref",
        help="images: the reference set, a data set name, image folder or .npz of images or "
        "statistics (default: the data set trained on)",
    )
    a.add_count(p, "--pairs-num", 10000, "reflow pairs")
    a.add_count(p, "--pairs-steps", 32, "teacher steps per pair")
    a.add_device(p)
    a.add_progress(p)


def run(args: argparse.Namespace) -> int:
    from shortcut_models.compare import CompareOptions, compare_config, run_compare
    from shortcut_models.report import check_output_file, write_json

    if args.json is not None:
        check_output_file(args.json)
    cfg = a.cfg_schedule(args)
    base = compare_config(
        args.data,
        f.given(args, f.data_options()),
        recipe_name=args.recipe,
        **{k: getattr(args, k) for k in SHARED},
    )
    results = run_compare(
        a.from_args(
            CompareOptions,
            args,
            base=base,
            out=args.out or Path("runs") / f"compare-{args.data}",
            objectives=tuple(args.objectives),
            eval_steps=tuple(args.eval_steps),
            cfg=cfg,
        )
    )
    if args.json is not None:
        print(f"wrote {write_json(args.json, results)}")
    return 0
