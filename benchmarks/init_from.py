"""Turn a flow-matching model into a shortcut model (`--init-from`) or train shortcut from scratch?

Same total optimizer steps for both arms: flow matching for N steps, then shortcut initialised
from its EMA for N/4 steps, against shortcut from scratch for 1.25 N steps; both scored at 1, 4
and 128 sampling steps. checkerboard: the 2-D settings of toy2d.py (MLP, batch 256, lr 1e-3
cosine, EMA 0.99), sliced W2 on 2,000 points. mnist: the demo's recipe as it stood when the rows
were measured (cpu-small with the U-Net 16/32/64 at full resolution and bf16 where native;
batch 64, lr 1e-3 cosine, EMA 0.99), FD-digits on 200 samples at CFG 1.5. Fixed step count.

    python benchmarks/init_from.py --data checkerboard --n 4000   # about 4 minutes on 2 cores
    python benchmarks/init_from.py --data mnist --n 1600          # about 20 minutes

Appends a row per arm to benchmarks/results/init_from.jsonl and rewrites init_from.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from shortcut_models.config import TrainConfig
from shortcut_models.demo import demo_scorer, score_budgets
from shortcut_models.evaluation import evaluate_vectors
from shortcut_models.recipes import recipe_tree
from shortcut_models.report import markdown_table
from shortcut_models.train import RunOptions, Trainer

RESULTS = Path(__file__).parent / "results"
BUDGETS = [1, 4, 128]
EARLIER_UNET = {"channels": [16, 32, 64]}  # cpu-small's U-Net before it folded 2x2 patches


def config_for(data: str, objective: str, steps: int, init_from: str = "") -> TrainConfig:
    training = {"steps": steps, "minutes": 0.0, "init_from": init_from}
    if data == "mnist":  # cpu-small's network and optimiser, EMA bootstrap targets
        tree = recipe_tree("cpu-small", objective, "unet")
        tree.pop("run")
        tree["objective"]["options"] = {}
        tree["backbone"]["options"] = EARLIER_UNET
        tree["training"].update(training)
        return TrainConfig.from_tree({**tree, "data": {"name": "mnist"}})
    return TrainConfig.from_tree({
        "data": {"name": data}, "objective": {"name": objective}, "training": training,
        "optimisation": {"lr": 1e-3, "ema_decay": 0.99, "lr_schedule": "cosine"},
    })  # fmt: skip


def train(config: TrainConfig, out: Path) -> tuple[Trainer, float]:
    precision = "bf16-if-native" if config.data.name == "mnist" else "fp32"
    resume = (out / "checkpoint.safetensors").exists()
    options = RunOptions(out_dir=out, resume=resume, progress=False, tensorboard=False,
                         precision=precision, save_every=10_000)  # fmt: skip
    trainer = Trainer(config, options)
    tick = time.perf_counter()
    if trainer.run().status != "completed":
        raise SystemExit("interrupted")
    return trainer, time.perf_counter() - tick


def score(trainer: Trainer, data: str) -> dict[str, float]:
    model = trainer.evaluated.eval()
    if data == "mnist":
        metrics, _ = score_budgets(
            model, trainer.objective, trainer.data.shape, trainer.data.num_classes,
            demo_scorer("mnist", 0), BUDGETS, num=200, seed=0, cfg=1.5,
            precision="bf16-if-native",
        )  # fmt: skip
        return {str(n): metrics[str(n)]["fd_digits"] for n in BUDGETS}
    scores = evaluate_vectors(model, trainer.objective, trainer.data, BUDGETS, 2000, 0, False)
    return {str(n): s["sliced_w2"] for n, s in scores.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["checkerboard", "mnist"], default="checkerboard")
    p.add_argument("--n", type=int, default=4000, help="flow-matching steps N")
    p.add_argument("--out", type=Path, default=Path("runs/init-from"))
    args = p.parse_args()
    out, n = args.out / args.data, args.n
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    rows = []
    flow, flow_s = train(config_for(args.data, "flow_matching", n), out / "flow")
    tuned, tuned_s = train(
        config_for(args.data, "shortcut", n // 4, str((out / "flow").resolve())), out / "tuned"
    )
    scratch, scratch_s = train(config_for(args.data, "shortcut", n + n // 4), out / "scratch")
    for arm, trainer, seconds in (
        (f"flow matching {n} steps (the source)", flow, flow_s),
        (f"flow matching {n} + shortcut --init-from {n // 4}", tuned, flow_s + tuned_s),
        (f"shortcut from scratch {n + n // 4}", scratch, scratch_s),
    ):
        rows.append({"data": args.data, "n": n, "arm": arm, "train_seconds": seconds,
                     "scores": score(trainer, args.data), "machine": machine})  # fmt: skip
    with open(RESULTS / "init_from.jsonl", "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    every = [json.loads(line) for line in (RESULTS / "init_from.jsonl").read_text().splitlines()]
    table = markdown_table(
        ["data", "arm", *(f"{b} step(s)" for b in BUDGETS)],
        [[r["data"], r["arm"], *(r["scores"][str(b)] for b in BUDGETS)] for r in every],
    )
    text = (
        "# Flow matching then shortcut (`--init-from`) vs shortcut from scratch\n\n"
        "Same total optimizer steps per pair of arms (N + N/4 = 1.25 N). checkerboard: sliced W2 "
        "(2,000 points); mnist: FD-digits (200 samples, CFG 1.5). Lower is better. Fixed step "
        f"count (training seconds are in init_from.jsonl). Machine: {machine}.\n\n"
        "Reproduce: `python benchmarks/init_from.py --data DATA "
        "--n N`\n\n"
    )
    (RESULTS / "init_from.md").write_text(text + table + "\n")
    print(text + table)


if __name__ == "__main__":
    main()
