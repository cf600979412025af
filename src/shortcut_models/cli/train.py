"""`shortcut train`: train a shortcut (or baseline) model into a run folder."""

from __future__ import annotations

import argparse
from typing import Any

from shortcut_models import logs
from shortcut_models.cli import args as a
from shortcut_models.cli import flags as f
from shortcut_models.config import DEFAULT_TREE

log = logs.get(__name__)

DEFAULTS = {key: value["name"] for key, value in DEFAULT_TREE.items()}


SUMMARY = "train a model"
DESCRIPTION = (
    "Train a shortcut (or baseline) model; writes checkpoint.safetensors, "
    "config.json and metrics.jsonl into --out."
)


def register(subparsers: Any) -> None:
    from shortcut_models.objectives import OBJECTIVES
    from shortcut_models.recipes import RECIPES, recipe_names

    p = a.command(
        subparsers, "train", run, SUMMARY, DESCRIPTION, argument_default=argparse.SUPPRESS
    )
    p.add_argument("--out", required=True, type=a.path_arg, help="run folder (created if missing)")
    p.add_argument(
        "--data",
        type=a.data_set(),
        help=f"data set: {a.data_help()} (default {DEFAULTS['data']})",
    )
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help=f"training objective (default {DEFAULTS['objective']})",
    )
    p.add_argument("--backbone", help=f"network (default {DEFAULTS['backbone']})")
    p.add_argument(
        "--recipe",
        action=a.Once,
        choices=recipe_names(),
        help="start from a named set of measured settings (printed at the start; flags given "
        "beside it win): " + "; ".join(f"{k}: {v.description}" for k, v in RECIPES.items()),
    )
    f.add_options(p, f.config_options())
    f.add_options(p.add_argument_group("data options"), f.data_options())
    f.add_options(p.add_argument_group("objective options"), f.objective_options())
    f.add_options(p.add_argument_group("backbone options"), f.backbone_options())
    f.add_options(p.add_argument_group("how and where the run executes"), f.run_options())
    p.add_argument(
        "--print-config",
        action="store_true",
        default=False,
        help="print every setting of the run by section, with where it came from (default, "
        "recipe NAME, flag, checkpoint, preset), and exit without training",
    )


def run(args: argparse.Namespace) -> int:
    from shortcut_models.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from shortcut_models.compose import compose_config
    from shortcut_models.train import Trainer

    base = None
    if getattr(args, "resume", False) and (args.out / CHECKPOINT_NAME).exists():
        base = load_checkpoint(args.out / CHECKPOINT_NAME).config
    flags = f.config_flags(args)
    composed = compose_config(base, recipe_name=getattr(args, "recipe", None), flags=flags)
    if args.print_config:  # refused where the run would be: it says what the run would do
        from shortcut_models.train.checkpoints import checkpoint_to_resume

        checkpoint_to_resume(args.out, composed.config, getattr(args, "resume", False))
        print(composed.table())
        return 0
    if composed.description:
        log.info(composed.description)
    trainer = Trainer(composed.config, composed.run_options(args.out))
    result = trainer.run()
    if not trainer.dist.is_main:
        return 0
    if result.status == "interrupted":
        log.warning(
            f"stopped by signal {result.signal} at step {result.step}; saved {result.checkpoint}; "
            f"continue with: shortcut train --out {args.out} --resume"
        )
        return 128 + int(result.signal or 0)
    if trainer.saved_step is not None and result.step > trainer.plan.total:
        log.warning(
            f"the checkpoint is at step {result.step}, past --steps {trainer.plan.total}: "
            "nothing was trained (give a larger --steps to continue)"
        )
    print(f"trained {result.step} steps; checkpoint: {result.checkpoint}")
    return 0
