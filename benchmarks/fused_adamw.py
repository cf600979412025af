"""The fused AdamW's share of a CPU training step: two shortcut trainers of a recipe in one
process, one stepping with torch's per-tensor AdamW loop (the trainer's optimizer on a CPU
before issue 36), one with the fused kernel it uses now, in interleaved rounds so that machine
noise hits both alike; prints the median ms per step and the per-round ratios.

    python benchmarks/fused_adamw.py --recipe cpu-small --rounds 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from shortcut_models.compose import compose_config
from shortcut_models.train import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from throughput import RandomImages  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe", default="cpu-small")
    p.add_argument("--objective", default="shortcut")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    args = p.parse_args()
    data = RandomImages((1, 32, 32), 10)
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("loop", "fused"):
            composed = compose_config(None, recipe_name=args.recipe, flags={
                "objective": {"name": args.objective},
                "training": {"minutes": 0, "steps": 10**9},
                "run": {"progress": False, "tensorboard": False},
            })  # fmt: skip
            trainer = Trainer(composed.config, composed.run_options(Path(tmp) / name), data)
            if name == "loop":
                o = composed.config.optimisation
                trainer.optimizer = torch.optim.AdamW(
                    trainer.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2),
                    weight_decay=o.weight_decay, foreach=False,
                )  # fmt: skip
            trainers[name] = trainer
        for trainer in trainers.values():
            for _ in range(5):
                trainer.train_step()
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                tick = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step()
                times[name].append((time.perf_counter() - tick) / args.steps * 1e3)
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.1f} ms per step "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")  # fmt: skip
    ratios = [a / b for a, b in zip(times["loop"], times["fused"], strict=True)]
    print(f"loop / fused per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
