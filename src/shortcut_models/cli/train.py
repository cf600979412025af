"""`shortcut train`: train a shortcut (or baseline) model into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models import logs
from shortcut_models.cli import args as a
from shortcut_models.config import TrainConfig

log = logs.get(__name__)

DEFAULTS = TrainConfig()


SUMMARY = "train a model"
DESCRIPTION = (
    "Train a shortcut (or baseline) model; writes checkpoint.safetensors, "
    "config.json and metrics.jsonl into --out."
)


def register(subparsers: Any) -> None:
    from shortcut_models.data import dataset_names
    from shortcut_models.distributed import PRECISIONS
    from shortcut_models.objectives import OBJECTIVES
    from shortcut_models.recipes import RECIPES, recipe_names

    p = a.command(
        subparsers, "train", run, SUMMARY, DESCRIPTION, argument_default=argparse.SUPPRESS
    )
    p.add_argument("--out", required=True, type=Path, help="run folder (created if missing)")
    p.add_argument("--data", choices=dataset_names(), help=f"data set (default {DEFAULTS.data})")
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help=f"training objective (default {DEFAULTS.objective})",
    )
    p.add_argument("--backbone", help=f"network (default {DEFAULTS.backbone})")
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
    p.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the checkpoint in --out exactly where it stopped",
    )
    a.add_device(p)
    a.add_count(p, "--log-every", 100, "steps between metrics.jsonl records")
    a.add_count(p, "--save-every", 1000, "steps between checkpoints")
    a.add_progress(p)
    p.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        default=True,
        help="do not write TensorBoard logs even if tensorboard is installed",
    )
    speed = p.add_argument_group(
        "speed and scale", "GPU options; for several GPUs launch with torchrun --nproc_per_node N"
    )
    speed.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default=None,
        help="bf16 autocast (weights, loss and EMA stay fp32); auto: bf16 on a GPU that "
        "supports it, fp32 on CPU; bf16-if-native: bf16 wherever the hardware computes it "
        "(bf16 GPUs, CPUs with AMX or AVX512-BF16), else fp32 (default: the recipe's, else auto)",
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        default=False,
        help="torch.compile the network (the no-grad target passes too)",
    )
    speed.add_argument(
        "--grad-accum",
        type=a.positive_int,
        default=1,
        help="micro-batches per process per step; the global --batch-size is split into "
        "processes x grad-accum micro-batches (default 1)",
    )
    speed.add_argument(
        "--workers",
        type=a.int_arg,
        default=None,
        help="data-loading processes (default 4 on GPU, 0 on CPU)",
    )
    speed.add_argument(
        "--activation-checkpointing",
        action="store_true",
        default=False,
        help="recompute DiT blocks in the backward pass (less memory, ~30%% more time)",
    )
    speed.add_argument(
        "--fsdp",
        action="store_true",
        default=False,
        help="shard weights, gradients and optimizer state across processes (large DiTs)",
    )


def config_from_args(args: argparse.Namespace, base: TrainConfig | None) -> TrainConfig:
    """The run's config: `base` (a resumed checkpoint's, or the defaults) overlaid with the
    flags given on the command line."""
    from shortcut_models.recipes import compose_config

    choices = {k: v for k, v in vars(args).items() if k in ("data", "objective", "backbone")}
    config, description = compose_config(
        base,
        recipe_name=getattr(args, "recipe", None),
        choices=choices,
        values=a.given(args, a.config_options()),
        data_options=a.given(args, a.data_options()),
        objective_options=a.given(args, a.objective_options()),
        backbone_options=a.given(args, a.backbone_options()),
    )
    if description:
        log.info(description)
    return config


def run(args: argparse.Namespace) -> int:
    from shortcut_models.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from shortcut_models.recipes import recipe_precision
    from shortcut_models.train import RunOptions, Trainer

    base = None
    if args.resume and (args.out / CHECKPOINT_NAME).exists():
        base = load_checkpoint(args.out / CHECKPOINT_NAME).config
    config = config_from_args(args, base)
    trainer = Trainer(
        config,
        a.from_args(
            RunOptions,
            args,
            out_dir=args.out,
            precision=args.precision or recipe_precision(config.recipe),
        ),
    )
    result = trainer.run()
    if not trainer.dist.is_main:
        return 0
    if result.status == "interrupted":
        log.warning(
            f"stopped by signal {result.signal} at step {result.step}; saved {result.checkpoint}; "
            f"continue with: shortcut train --out {args.out} --resume"
        )
        return 128 + int(result.signal or 0)
    if trainer.saved_step is not None and result.step > config.steps:
        log.warning(
            f"the checkpoint is at step {result.step}, past --steps {config.steps}: nothing was "
            "trained (give a larger --steps to continue)"
        )
    print(f"trained {result.step} steps; checkpoint: {result.checkpoint}")
    return 0
