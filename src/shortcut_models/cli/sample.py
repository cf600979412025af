"""`shortcut sample`: draw samples from a checkpoint at one or more step budgets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models.cli import args as a

SUMMARY = "draw samples from a checkpoint"
DESCRIPTION = (
    "Sample a checkpoint at one or more step budgets. Images: PNG files in "
    "steps_N/, a 10x10 grid_steps_N.png and, with --npz, a uint8 .npz per budget. Vectors: "
    "samples.npz (one array per budget, key steps_N) and a scatter plot samples.png."
)


def register(subparsers: Any) -> None:
    p = a.command(subparsers, "sample", run, SUMMARY, DESCRIPTION)
    a.add_paths(p, "run folder or checkpoint file", "output folder (created if missing)")
    a.add_cfg(p, "classifier-free guidance of conditional models (1: none)")
    p.add_argument(
        "--class",
        dest="classes",
        type=a.int_arg,
        nargs="+",
        help="class labels to sample, cycled (default: all classes in turn)",
    )
    p.add_argument(
        "--npz",
        action="store_true",
        help="images: also write samples_steps_N.npz (uint8 NHWC, key arr_0) for FID tools",
    )
    p.add_argument(
        "--vae",
        type=Path,
        help="latent models: the AutoencoderKL that decodes samples (default: the one the "
        "latent shards were encoded with)",
    )
    a.add_sampling(p, [1, 4, 128], 2000)


def run(args: argparse.Namespace) -> int:
    from shortcut_models import devices, distributed
    from shortcut_models.evaluation.samples import SampleOptions, sample_run
    from shortcut_models.factory import load_run

    device, dist = distributed.setup(devices.resolve_device(args.device))
    sample_run(
        load_run(args.ckpt, a.weights(args), device),
        args.out,
        a.from_args(SampleOptions, args, cfg=a.cfg_schedule(args)),
        dist,
    )
    return 0
