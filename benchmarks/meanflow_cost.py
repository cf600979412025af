"""What a MeanFlow training step costs against a flow-matching step, and where the saving is.

Times the real training step (`Trainer.train_step`: targets, forward, backward, AdamW, EMA) of
several configurations on random inputs of one shape, rounds interleaved so machine noise hits
all alike, the median kept; reports each as a ratio to flow matching's step in the same run:

- meanflow, autodiff JVP on every row: `--tangents autodiff --mean-fraction 1` (torch.func.jvp
  through the network, attention with the hand-written rule of `backbones.attention`, on the
  whole batch as the paper's code: what a step cost before the two savings below);
- meanflow, autodiff JVP: `--tangents autodiff`, the JVP on the rows with r != t only;
- meanflow, hand-written, JVP on every row: `--mean-fraction 1` (hand-written tangents on the
  whole batch);
- meanflow (our default): hand-written tangents (`backbones.forward_mode`) on the rows with r != t
  (a quarter of the batch), a plain forward on the others, each row once.

    python benchmarks/meanflow_cost.py --threads 2 --json benchmarks/results/meanflow_cost_cpu.json
    python benchmarks/meanflow_cost.py --device cuda --batch 256 --input-size 32 --channels 4 \\
        --backbones DiT-B/4 --json benchmarks/results/meanflow_cost_gpu.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from throughput import RandomImages, cpu_name, time_steps

from shortcut_models.config import TrainConfig
from shortcut_models.report import markdown_table, write_json
from shortcut_models.train import RunOptions, Trainer

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "flow matching": ("flow_matching", {}),
    "meanflow, autodiff JVP on every row": (
        "meanflow",
        {"tangents": "autodiff", "mean_fraction": 1.0},
    ),
    "meanflow, autodiff JVP": ("meanflow", {"tangents": "autodiff"}),
    "meanflow, hand-written, JVP on every row": ("meanflow", {"mean_fraction": 1.0}),
    "meanflow (default)": ("meanflow", {}),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--backbones", nargs="+", default=["DiT-T/4", "unet"],
        help="DiT presets, mlp or unet (unet: the demo's channels 16, 32, 64)",
    )  # fmt: skip
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    p.add_argument("--steps", type=int, default=4, help="timed steps per configuration per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median is kept)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", type=Path)
    return p.parse_args()


def make_trainer(backbone: str, variant: str, args: argparse.Namespace, out: Path) -> Trainer:
    objective, options = VARIANTS[variant]
    backbone_options = {"time_scale": 1.0}  # meanflow's unscaled t (the same work for both)
    if backbone == "unet":
        backbone_options.update(channels=[16, 32, 64])  # the demo's U-Net when measured
    config = TrainConfig.from_tree({
        "data": {"name": "random"}, "objective": {"name": objective, "options": options},
        "backbone": {"name": backbone, "options": backbone_options},
        "training": {"steps": 10**9, "batch_size": args.batch}, "optimisation": {"lr": 1e-4},
    })  # fmt: skip
    run = RunOptions(
        out_dir=out / f"{len(list(out.iterdir()))}", device=args.device, progress=False,
        tensorboard=False, precision=args.precision,
    )  # fmt: skip
    data = RandomImages((args.channels, args.input_size, args.input_size), args.classes)
    return Trainer(config, run, data)


def measure(backbone: str, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step of each variant."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: make_trainer(backbone, name, args, Path(tmp)) for name in VARIANTS}
        for trainer in trainers.values():
            time_steps(trainer, args.warmup)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                times[name].append(time_steps(trainer, args.steps))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows, result = (
        [],
        {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "shape": [args.batch, args.channels, args.input_size, args.input_size],
            "precision": args.precision,
            "backbones": {},
        },
    )
    for backbone in args.backbones:
        seconds = measure(backbone, args)
        base = seconds["flow matching"]
        result["backbones"][backbone] = {
            name: {"step_s": s, "over_flow_matching": s / base} for name, s in seconds.items()
        }
        rows += [
            [backbone, name, f"{1e3 * s:.1f}", f"{s / base:.2f}"] for name, s in seconds.items()
        ]
    print(markdown_table(["backbone", "step", "ms", "x flow matching"], rows))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
