"""`shortcut demo`: train a small shortcut model on MNIST and show 1 to 128 steps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models.cli import args as a


def register(subparsers: Any) -> None:
    from shortcut_models.demo import RECIPE, DemoOptions
    from shortcut_models.devices import PRECISIONS
    from shortcut_models.recipes import recipe, recipe_names

    d = DemoOptions(out=Path("."))
    tree = recipe(RECIPE).tree
    training, optimisation = tree["training"], tree["optimisation"]
    p = a.command(
        subparsers,
        "demo",
        run,
        "train a small shortcut model on MNIST and show 1 to 128 steps",
        f"Train a class-conditional shortcut model on MNIST (or --data fashion-mnist, or "
        f"openmoji: unlabelled colour emoji scored with FID) (recipe {RECIPE}: "
        f"{tree['backbone']['name']} {tree['backbone']['options']}), then write a PNG grid per "
        "step budget (1, 2, 4, ..., 128 steps; same noise and labels), all_steps.png "
        "side by side, samples.npz, metrics.md / metrics.json and the checkpoint (OUT/run). Run "
        "it again to resume. The first line says what it will do on this machine (device, "
        "precision and why, the step count) and when it will be done.",
    )
    p.add_argument("--out", required=True, type=a.path_arg, help="output folder")
    p.add_argument(
        "--data",
        default=d.data,
        type=a.data_set("image"),
        help=f"data set (default {d.data}; openmoji: colour emoji, scored with FID)",
    )
    p.add_argument(
        "--recipe",
        action=a.Once,
        default=d.recipe,
        choices=recipe_names(),
        help=f"training recipe (default {d.recipe}; cpu-colour: MeanFlow, better on colour; "
        "cpu-dit-tiny: paper's objective, tiny DiT)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        help=f"minutes of training (default: the recipe's, {training['minutes']:g} for "
        f"{d.recipe}): the step count is planned from the first measured steps, so the demo "
        "ends on time on any machine",
    )
    p.add_argument(
        "--steps",
        type=a.positive_int,
        help="train exactly this many steps instead (the same numbers on every CPU)",
    )
    p.add_argument("--backbone", help=f"network, e.g. DiT-S/2 (default {tree['backbone']['name']})")
    p.add_argument(
        "--batch-size",
        type=a.positive_int,
        help=f"images per step (default {training['batch_size']})",
    )
    p.add_argument("--lr", type=float, help=f"learning rate (default {optimisation['lr']})")
    p.add_argument(
        "--ema-decay", type=float, help=f"EMA decay (default {optimisation['ema_decay']})"
    )
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help=f"autocast precision of training (default {tree['run']['precision']}: "
        "bf16 autocast where the CPU or GPU computes bf16 natively, else fp32; weights, loss "
        "and EMA stay fp32)",
    )
    a.add_cfg(p, "classifier-free guidance at sampling", d.cfg)
    p.add_argument(
        "--num",
        type=a.positive_int,
        default=d.num,
        help=f"samples per step budget (default {d.num})",
    )
    p.add_argument(
        "--budgets",
        type=a.positive_int,
        nargs="+",
        default=list(d.budgets),
        help=f"step budgets to sample and score (default {' '.join(map(str, d.budgets))})",
    )
    p.add_argument("--seed", type=a.seed_arg, default=d.seed, help=f"seed (default {d.seed})")
    a.add_device(p, d.device)
    a.add_progress(p)


def run(args: argparse.Namespace) -> int:
    from shortcut_models.demo import DemoOptions, run_demo

    metrics = run_demo(a.from_args(DemoOptions, args, cfg=a.cfg_schedule(args)))
    return 0 if metrics else 128 + 15
