"""`shortcut train`: train a shortcut (or baseline) model into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models import logs
from shortcut_models.cli import args as a
from shortcut_models.compose import Composed, compose_config
from shortcut_models.config import RunOptions, TrainConfig

log = logs.get(__name__)

DEFAULTS = TrainConfig()


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
    p.add_argument("--out", required=True, type=Path, help="run folder (created if missing)")
    p.add_argument(
        "--data",
        type=a.data_set(),
        help=f"data set: {a.data_help()} (default {DEFAULTS.data.name})",
    )
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help=f"training objective (default {DEFAULTS.objective.name})",
    )
    p.add_argument("--backbone", help=f"network (default {DEFAULTS.backbone.name})")
    p.add_argument(
        "--recipe",
        choices=recipe_names(),
        help="start from a named set of measured settings (printed at the start; flags given "
        "beside it win): " + "; ".join(f"{k}: {v.description}" for k, v in RECIPES.items()),
    )
    a.add_options(p, a.config_options())
    a.add_options(p.add_argument_group("data options"), a.data_options())
    a.add_options(p.add_argument_group("objective options"), a.objective_options())
    a.add_options(p.add_argument_group("backbone options"), a.backbone_options())
    a.add_options(p.add_argument_group("how and where the run executes"), a.run_options())
    p.add_argument(
        "--print-config",
        action="store_true",
        default=False,
        help="print every setting of the run by section, with where it came from (default, "
        "recipe NAME, flag, checkpoint, preset), and exit without training",
    )


def compose_from_args(args: argparse.Namespace, base: TrainConfig | None) -> Composed:
    """The run's settings: `base` (a resumed checkpoint's config, or the defaults) < the recipe
    < the flags given on the command line (`compose.compose_config`, the one merge)."""
    choices = {k: v for k, v in vars(args).items() if k in ("data", "objective", "backbone")}
    return compose_config(
        base,
        recipe_name=getattr(args, "recipe", None),
        choices=choices,
        values=a.given(args, a.config_options()),
        data_options=a.given(args, a.data_options()),
        objective_options=a.given(args, a.objective_options()),
        backbone_options=a.given(args, a.backbone_options()),
        run=a.given(args, a.run_options()),
    )


def run(args: argparse.Namespace) -> int:
    from shortcut_models.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from shortcut_models.train import Trainer

    base = None
    if getattr(args, "resume", False) and (args.out / CHECKPOINT_NAME).exists():
        base = load_checkpoint(args.out / CHECKPOINT_NAME).config
    composed = compose_from_args(args, base)
    if args.print_config:
        print(composed.table())
        return 0
    if composed.description:
        log.info(composed.description)
    config = composed.config
    trainer = Trainer(config, RunOptions(out_dir=args.out, **composed.run))
    result = trainer.run()
    if not trainer.dist.is_main:
        return 0
    if result.status == "interrupted":
        log.warning(
            f"stopped by signal {result.signal} at step {result.step}; saved {result.checkpoint}; "
            f"continue with: shortcut train --out {args.out} --resume"
        )
        return 128 + int(result.signal or 0)
    if trainer.saved_step is not None and result.step > config.training.steps:
        log.warning(
            f"the checkpoint is at step {result.step}, past --steps {config.training.steps}: "
            "nothing was trained (give a larger --steps to continue)"
        )
    print(f"trained {result.step} steps; checkpoint: {result.checkpoint}")
    return 0
