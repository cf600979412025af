"""What makes the demo's one-step samples good on a CPU: train configurations for the same
wall-clock budget and score them as `shortcut demo` does (FD-digits, confident share, class
coverage at 1, 4 and 128 steps, CFG as given).

Each row is a variant of one base: the `cpu-small` recipe (the demo's defaults) as it stood before
this ablation chose its objective options, i.e. with the paper's EMA-computed bootstrap targets
(row `base`); row `cpu-small` is the recipe as it is now. Rows already measured
(kept in OUT/rows.jsonl) are not re-run unless --rerun, so variants can be added one at a time.
Run it alone on the machine: two torch processes on 2 cores slow each other about tenfold.

    python benchmarks/demo_ablation.py --minutes 5 --variants recipe dit-t4 \\
        --md benchmarks/results/demo_ablation.md

`--base cpu-dit-tiny --steps 2500` compares at a fixed step count from another recipe instead
(the question "which setting is better", not "what is best in 5 minutes"): the DiT options
where the reference differs from DiT (benchmarks/results/dit_options.md):

    python benchmarks/demo_ablation.py --base cpu-dit-tiny --steps 2500 --cfg 1.5 \\
        --variants base dit-linear-attention dit-xavier-adaln dit-reference \\
        --out runs/dit-options --md benchmarks/results/dit_options.md
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from shortcut_models.config import TrainConfig
from shortcut_models.demo import demo_scorer, score_budgets
from shortcut_models.evaluation.scoring import ImageScorer
from shortcut_models.recipes import recipe, recipe_tree
from shortcut_models.report import machine_record, markdown_table
from shortcut_models.train import RunOptions, Trainer

BUDGETS = (1, 4, 128)

# name -> changes to the base: TrainConfig fields, objective / backbone options (merged), and
# "precision" (a run option)
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "cpu-small": {"objective_options": None, "recipe": True},
    "dit-t4": {"backbone": "DiT-T/4", "backbone_options": None},
    "dit-t4-fp32": {"backbone": "DiT-T/4", "backbone_options": None, "precision": "fp32"},
    "fp32": {"precision": "fp32"},
    "unet-24": {"backbone_options": {"channels": [24, 48, 96]}},
    "unet-32": {"backbone_options": {"channels": [32, 64, 128]}},
    "unet-16-2blocks": {"backbone_options": {"channels": [16, 32, 64], "blocks": 2}},
    "unet-16-noattn": {"backbone_options": {"channels": [16, 32, 64], "attention": False}},
    "batch-32": {"batch_size": 32},
    "batch-128": {"batch_size": 128},
    "lr-2e-3": {"lr": 2e-3},
    "lr-5e-4": {"lr": 5e-4},
    "batch-32-lr-2e-3": {"batch_size": 32, "lr": 2e-3},
    "lr-2e-3-warmup-100": {"lr": 2e-3, "warmup_steps": 100},
    "unet-12": {"backbone_options": {"channels": [12, 24, 48]}},
    "unet-8": {"backbone_options": {"channels": [8, 16, 32]}},
    "unet-8-bootstrap-4": {
        "backbone_options": {"channels": [8, 16, 32]},
        "objective_options": {"bootstrap_every": 4},
    },
    "patch-2": {"backbone_options": {"patch": 2}},
    "patch-2-batch-32": {"backbone_options": {"patch": 2}, "batch_size": 32},
    "patch-2-unet-24": {"backbone_options": {"channels": [24, 48, 96], "patch": 2}},
    "patch-2-unet-32": {"backbone_options": {"channels": [32, 64, 128], "patch": 2}},
    "unet-24-2blocks": {"backbone_options": {"channels": [24, 48, 96], "blocks": 2}},
    "unet-32-4levels": {"backbone_options": {"channels": [32, 64, 128, 128]}},
    "unet-48": {"backbone_options": {"channels": [48, 96, 192]}},
    "flip": {"data_options": {"flip": True}},
    "xpred": {"backbone_options": {"prediction": "data"}},
    "xpred-meanflow": {"objective": "meanflow", "backbone_options": {"prediction": "data"}},
    "meanflow": {"objective": "meanflow"},
    "mean-0.5": {"objective_options": {"mean_fraction": 0.5}},
    "bf16": {"precision": "bf16-if-native"},
    "imf": {"objective": "imf"},
    "flow-matching": {"objective": "flow_matching"},
    "unet-8-batch-32": {"backbone_options": {"channels": [8, 16, 32]}, "batch_size": 32},
    "unet-8-coarse": {
        "backbone_options": {"channels": [8, 16, 32]},
        "objective_options": {"level_sampling": "coarse"},
    },
    "ema-0.999": {"ema_decay": 0.999},
    "ema-0.9995": {"ema_decay": 0.9995},
    "ema-0.95": {"ema_decay": 0.95},
    "ema-0.999-warmup": {"ema_decay": 0.999, "ema_warmup": True},
    "logit-normal": {"objective_options": {"time_sampling": "logit_normal"}},
    "ism": {"objective": "ism"},
    "ism-fp32": {"objective": "ism", "precision": "fp32"},
    "ism-no-ig": {"objective": "ism", "objective_options": {"intrinsic_guidance": False}},
    "ism-coarse": {"objective": "ism", "objective_options": {"level_sampling": "coarse"}},
    "ism-batch-128": {"objective": "ism", "batch_size": 128},
    "ism-lr-2e-3": {"objective": "ism", "lr": 2e-3},
    "intrinsic-guidance": {"objective_options": {"intrinsic_guidance": True}},
    "ig-logit-normal": {
        "objective_options": {"intrinsic_guidance": True, "time_sampling": "logit_normal"}
    },
    "bootstrap-4": {"objective_options": {"bootstrap_every": 4}},
    "levels-coarse": {"objective_options": {"level_sampling": "coarse"}},
    "levels-coarse-b4": {"objective_options": {"level_sampling": "coarse", "bootstrap_every": 4}},
    "levels-coarse-ln": {
        "objective_options": {"level_sampling": "coarse", "time_sampling": "logit_normal"}
    },
    "bootstrap-cfg": {"objective_options": {"bootstrap_cfg": True}},
    "twin-ema-0.5": {"objective_options": {"target_ema_decay": 0.5}},
    "twin-ema-0.5-fp32": {"objective_options": {"target_ema_decay": 0.5}, "precision": "fp32"},
    "twin-ema-0.5-coarse": {
        "objective_options": {"target_ema_decay": 0.5, "level_sampling": "coarse"}
    },
    "bootstrap-raw": {"objective_options": {"bootstrap_ema": False}},
    "ot-pairing": {"objective_options": {"ot_pairing": True}},
    "wavelet": {"objective_options": {"wavelet_levels": -1}},
    # DiT options (with --base cpu-dit-tiny): the reference's choices one at a time, then all
    "dit-linear-attention": {"backbone_options": {"attention_scale": "linear"}},
    "dit-xavier-adaln": {"backbone_options": {"block_adaln_init": "xavier"}},
    "dit-reference": {
        "backbone_options": {
            "attention_scale": "linear",
            "block_adaln_init": "xavier",
            "qkv_init": "separate",
            "position_order": "col-row",
        }
    },
}


def variant_config(
    name: str,
    data: str,
    minutes: float,
    seed: int,
    base: str = "cpu-small",
    steps: int = 0,
    from_recipe: bool = False,
    precision: str | None = None,
) -> tuple[TrainConfig, str]:
    """The variant's config and precision; `steps` > 0 trains that many steps (no budget).
    `from_recipe` keeps the recipe's objective options (else the base of the first ablation:
    EMA bootstrap targets); `precision` overrides the variant's."""
    found = recipe(base).tree
    changes = dict(VARIANTS[name])
    is_recipe = changes.pop("recipe", False) or from_recipe
    precision = precision or changes.pop("precision", found["run"]["precision"])
    changes.pop("precision", None)
    objective = changes.pop("objective", found["objective"]["name"])
    backbone = changes.pop("backbone", found["backbone"]["name"])
    tree = recipe_tree(base, objective, backbone)
    tree.pop("run")
    if not is_recipe:
        tree["objective"]["options"] = {}  # the base: bootstrap targets from the EMA weights
    for key in ("objective", "backbone"):
        extra = changes.pop(f"{key}_options", {})
        if extra is None:  # the recipe's objective options kept; the backbone's defaults
            tree[key]["options"] = tree[key]["options"] if key == "objective" else {}
        else:
            tree[key]["options"] = {**tree[key]["options"], **extra}
    for key in ("lr", "ema_decay", "ema_warmup", "warmup_steps"):
        if key in changes:
            tree["optimisation"][key] = changes.pop(key)
    data_options = changes.pop("data_options", {})
    tree["training"].update(changes, minutes=0.0 if steps else minutes, seed=seed)
    tree["training"].update({"steps": steps} if steps else {})
    tree["training"]["recipe"] = base if is_recipe else ""
    tree["data"] = {"name": data, "options": data_options}
    return TrainConfig.from_tree(tree), precision


_SCORERS: dict[tuple, ImageScorer] = {}


def scorer_for(args: argparse.Namespace) -> ImageScorer:
    """One scorer per reference for the whole invocation, so that a reference given as images
    (such as half B of OpenMoji) is measured once, not once per row."""
    key = args.ref, args.data, args.seed
    if key not in _SCORERS:
        _SCORERS[key] = (
            ImageScorer("fid", args.ref, args.data, seed=args.seed, progress=False)
            if args.ref
            else demo_scorer(args.data, args.seed)
        )
    return _SCORERS[key]


RATE_WARMUP, RATE_STEPS = 10, 60


def _options(run_dir: Path, precision: str, args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        out_dir=run_dir,
        progress=False,
        tensorboard=False,
        precision=precision,
        memory_format=args.memory_format,
        save_every=10**9,
        log_every=100,
    )


def quiet_rate(name: str, args: argparse.Namespace) -> float:
    """Training steps per second of the variant, timed over RATE_STEPS steps after RATE_WARMUP.
    Measured for every variant before any row trains, on a quiet machine, so that each row then
    trains a fixed step count (rate x budget): the rows are a fixed wall-clock comparison that
    other work on the machine during training cannot bias."""
    config, precision = variant_config(
        name, args.data, 0.0, args.seed, args.base, 10**6, args.from_recipe, args.precision
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, _options(Path(folder) / "run", precision, args))
        for _ in range(RATE_WARMUP):
            trainer.train_step()
        tick = time.perf_counter()
        for _ in range(RATE_STEPS):
            trainer.train_step()
        return RATE_STEPS / (time.perf_counter() - tick)


def cost_key(name: str, args: argparse.Namespace) -> str:
    """What sets a variant's step time: its objective, network, batch and precision."""
    config, precision = variant_config(
        name, args.data, 0.0, args.seed, args.base, 1, args.from_recipe, args.precision
    )
    tree = config.to_dict()
    parts = tree["objective"], tree["backbone"], tree["training"]["batch_size"], precision
    return json.dumps(parts, sort_keys=True, default=str)


def run_variant(name: str, args: argparse.Namespace, rate: float = 0.0) -> dict[str, Any]:
    """Train and score one variant: for `args.minutes` of wall clock (planned as the demo plans),
    for `args.steps`, or, with a quiet `rate`, for rate x minutes steps."""
    steps = round(rate * args.minutes * 60) if rate else args.steps
    config, precision = variant_config(
        name,
        args.data,
        args.minutes,
        args.seed,
        args.base,
        steps,
        args.from_recipe,
        args.precision,
    )
    budget = f"{args.steps}steps" if args.steps else f"{args.minutes:g}min"
    run_dir = args.out / f"{args.data}-{name}-{budget}"
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = Trainer(config, _options(run_dir, precision, args))
    tick = time.perf_counter()
    if trainer.run().status != "completed":
        raise SystemExit(f"{name}: training was interrupted; no row written")
    seconds = time.perf_counter() - tick
    shape = trainer.data.shape
    scorer = scorer_for(args)
    metrics, _ = score_budgets(
        trainer.evaluated.eval(),
        trainer.objective,
        shape=shape,
        num_classes=trainer.data.num_classes,
        scorer=scorer,
        budgets=args.budgets,
        num=args.num,
        seed=args.seed,
        cfg=args.cfg,
        precision=precision,
    )
    return {
        "variant": name,
        "base": args.base,
        "data": args.data,
        "minutes": 0.0 if args.steps else args.minutes,
        "cfg": args.cfg,
        "num": args.num,
        "steps": trainer.step,
        "train_seconds": seconds,
        # with a quiet rate, the rate the step count was planned from (the run itself may share
        # the machine); else what the run achieved
        "images_per_s": (rate or trainer.step / seconds) * config.training.batch_size,
        "planned_from_quiet_rate": rate or None,
        "precision": precision,
        "config": config.to_dict(),
        "scores": metrics,
        "metric": scorer.label,
        "metric_key": scorer.key,
        "ref": args.ref or "the demo's",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}",
        "cpu_capability": machine_record()["cpu_capability"],
        "memory_format": args.memory_format,
        "from_recipe": args.from_recipe,
    }


# the columns of a row's scores per metric: FD-digits with the digit classifier's class scores,
# FID with precision and recall
COLUMNS = {
    "fd_digits": (("fd_digits", "FD"), ("confident", "conf"), ("class_coverage", "cov")),
    "fid": (("fid", "FID"), ("precision", "prec"), ("recall", "rec")),
}


def write_table(rows: list[dict[str, Any]], path: Path | None) -> str:
    """One table per metric (digit rows and colour rows do not share columns), each with the
    step budgets its rows were scored at."""
    tables = []
    for metric, columns in COLUMNS.items():
        chosen = [r for r in rows if r.get("metric_key", "fd_digits") == metric]
        if not chosen:
            continue
        budgets = sorted({int(n) for r in chosen for n in r["scores"]})
        headers = ["variant", "data", "min", "img/s", "steps"]
        headers += [f"{short} {n}" for n in budgets for _, short in columns]
        table_rows = []
        for row in chosen:
            cells = [row["variant"], row["data"], row["minutes"], row["images_per_s"], row["steps"]]
            for n in budgets:
                s = row["scores"].get(str(n), {})
                cells += [s.get(key, "") for key, _ in columns]
            table_rows.append(cells)
        tables.append(markdown_table(headers, table_rows))
    table = "\n\n".join(tables)
    if path is not None:
        path.write_text(table + "\n")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["cpu-small"], choices=list(VARIANTS))
    p.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist", "openmoji"])
    p.add_argument(
        "--ref",
        help="score with FID against this reference (an .npz of images such as the comparison's "
        "runs/openmoji-half-b.npz, or a set's name) instead of the demo's scorer",
    )
    p.add_argument(
        "--budgets", type=int, nargs="+", default=list(BUDGETS), help="step budgets scored"
    )
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per variant")
    p.add_argument("--base", default="cpu-small", help="recipe the variants change (cpu-small)")
    p.add_argument("--steps", type=int, default=0, help="train this many steps instead (0: off)")
    p.add_argument("--cfg", type=float, default=3.0, help="CFG scale at sampling (3)")
    p.add_argument("--num", type=int, default=400, help="samples per budget (400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/demo-ablation"))
    p.add_argument("--rerun", action="store_true", help="re-run variants already measured")
    p.add_argument(
        "--from-recipe",
        action="store_true",
        help="every variant keeps the recipe's objective options (bootstrap targets)",
    )
    p.add_argument("--precision", help="override every variant's precision (e.g. fp32)")
    p.add_argument(
        "--memory-format",
        default="contiguous",
        choices=["contiguous", "channels-last", "auto"],
        help="layout of the U-Net (contiguous, as the first rows)",
    )
    p.add_argument("--md", type=Path, help="write the table of all measured rows here")
    p.add_argument(
        "--quiet-rates",
        action="store_true",
        help="time every variant's step first (run this with the machine quiet), then train each "
        "for rate x --minutes steps, so that other work during training cannot bias the rows",
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"

    def key(row: dict[str, Any]) -> tuple:
        budget = row["minutes"] or row["steps"]
        base = row.get("base", "cpu-small") + ("+recipe" if row.get("from_recipe") else "")
        base += "+" + row.get("memory_format", "contiguous")
        kind = row.get("cpu_capability", "AVX512")
        scoring = row.get("ref", "the demo's"), tuple(sorted(int(n) for n in row["scores"]))
        return (
            row["variant"], base, row["data"], budget, row["cfg"], row["num"], row["seed"], kind,
            scoring,
        )  # fmt: skip

    rows: list[dict[str, Any]] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        row = json.loads(line)
        rows = [r for r in rows if key(r) != key(row)] + [row]  # a re-run replaces its row

    kind = machine_record()["cpu_capability"]

    def wanted(name: str) -> tuple:
        """The key the row of `name` measured now would have (one definition of a row's
        identity: `key`, given the row's fields as this invocation sets them)."""
        return key({
            "variant": name, "base": args.base, "from_recipe": args.from_recipe,
            "memory_format": args.memory_format, "data": args.data,
            "minutes": 0.0 if args.steps else args.minutes, "steps": args.steps,
            "cfg": args.cfg, "num": args.num, "seed": args.seed, "cpu_capability": kind,
            "ref": args.ref or "the demo's", "scores": {str(n): None for n in args.budgets},
        })  # fmt: skip

    todo = [n for n in args.variants if args.rerun or not any(key(r) == wanted(n) for r in rows)]
    rates: dict[str, float] = {}
    if args.quiet_rates and not args.steps:
        # variants that change no part of the step's cost (the learning rate, EMA decay, flips)
        # share one rate, so that timing noise does not give them different step counts
        timed: dict[str, float] = {}
        for name in todo:
            cost = cost_key(name, args)
            if cost not in timed:
                timed[cost] = quiet_rate(name, args)
            rates[name] = timed[cost]
            print(f"{name}: {rates[name]:.2f} steps/s (quiet)", flush=True)
    for name in todo:
        row = {**run_variant(name, args, rates.get(name, 0.0)), "seed": args.seed}
        rows = [r for r in rows if key(r) != wanted(name)] + [row]
        with open(log, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(write_table([row], None), flush=True)
    print(write_table(rows, args.md))


if __name__ == "__main__":
    main()
