"""Unroll the run's sampler for --steps steps into one graph: noise (and class labels for a
conditional model) in, samples out (images in [0, 1], decoded by the VAE with --decode). The CFG
scale is fixed at export. The file is then run on seeded noise and compared with the PyTorch
sampler. ONNX needs pip install -e '.[export]'.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models.cli import args as a

SUMMARY = "write a run as a one-step (or n-step) generator file: ONNX or a torch.export program"


def register(subparsers: Any) -> None:
    from shortcut_models.export import FORMATS

    p = a.command(subparsers, "export", run, SUMMARY, __doc__)  # the docstring describes it
    a.add_paths(p, "run folder or checkpoint file", "file to write (.onnx or .pt2)")
    a.add_count(p, "--steps", 1, "sampling steps unrolled into the generator")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or pt2")
    a.add_cfg(p, "classifier-free guidance, fixed at export at the scale of --steps (1: none)")
    p.add_argument("--decode", action="store_true", help="latent models: include the VAE decoder")
    p.add_argument("--vae", type=Path, help="with --decode: the AutoencoderKL (default: the run's)")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")


def run(args: argparse.Namespace) -> int:
    from shortcut_models.export import export_generator
    from shortcut_models.guidance import scale_for
    from shortcut_models.report import check_output_file

    check_output_file(args.out)
    report = export_generator(
        args.ckpt,
        args.out,
        fmt=args.format,
        weights=a.weights(args),
        cfg=scale_for(a.cfg_schedule(args), args.steps),
        **a.pick(args, "steps", "decode", "vae"),
    )
    size = report.path.stat().st_size / 2**20
    print(
        f"wrote {report.path} ({args.format}, {size:.1f} MiB; inputs {', '.join(report.inputs)}; "
        f"{args.steps} step(s)); it matches the PyTorch sampler within "
        f"{report.max_difference:.2g} on seeded noise"
    )
    return 0
