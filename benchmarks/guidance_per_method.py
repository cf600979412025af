"""Guidance chosen per method instead of inherited from shortcut: re-score a finished `shortcut
compare` run of a labelled set (MNIST, Fashion-MNIST) at each guidance scale of a grid, choose
per method and step budget the scale that scores best on a validation split, and score that
scale as the table does.

The comparison samples every method with the demo's schedule (CFG 2 at 1 and 2 steps, 1.75 from
4), which was tuned on shortcut's checkpoints. Here the choice is each method's own, made where
the reported number cannot leak into it:

- validation: other noise (`--val-seeds`, default the run's seed + 1000) scored against other
  real images (the set's test split, `--val-num` images; the table's reference is the training
  split), `--num` samples per seed;
- test: the chosen scale with the table's noise seed, sample count and reference, through the
  same scorer as `shortcut compare`, so a method whose choice is the inherited scale gets its
  table value back (a check of the path, printed).

Re-scoring only; the run folder must still hold each method's checkpoint. Results are written
after every method, and a method already in `--json` with the same settings is not re-scored.

    python benchmarks/guidance_per_method.py runs/cmp-unet-mnist-s2 \\
        --json benchmarks/results/guidance_per_method_mnist_s2.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shortcut_models.compare import OBJECTIVES
from shortcut_models.data import DIGIT_DATASETS
from shortcut_models.data.mnist import digit_data
from shortcut_models.evaluation.generation import SamplingPlan
from shortcut_models.evaluation.scoring import ImageScorer, scorer_for
from shortcut_models.factory import load_run
from shortcut_models.guidance import scale_for
from shortcut_models.report import machine_record, markdown_table, write_json

SCALES = (1.0, 1.5, 2.0, 3.0, 4.0)


def method_folder(run: Path, method: str) -> Path:
    """The folder `shortcut compare` trained `method` in: its name, or for a two-stage method
    its name with the teacher's steps (`progressive_distillation_teacher2070`)."""
    found = [f for f in [run / method, *sorted(run.glob(f"{method}_teacher*"))] if f.is_dir()]
    if len(found) != 1:
        raise SystemExit(f"{run}: {len(found)} folders for {method} ({[f.name for f in found]})")
    return found[0]


def validation_reference(data: str, num: int, seed: int, folder: Path) -> Path:
    """An .npz of `num` test-split images (uint8 NHWC): real images the table never scores."""
    path = folder / f"guidance-validation-{data}-test-n{num}-seed{seed}.npz"
    if not path.is_file():
        images = digit_data(data, "test").sample(num, seed=seed).permute(0, 2, 3, 1).numpy()
        np.savez(path, arr_0=images)
    return path


def choose(validation: dict[str, float]) -> float:
    """The scale with the lowest validation score (the smaller scale on a tie)."""
    return min(validation, key=lambda s: (validation[s], float(s)))


def score_scale(
    scorer: ImageScorer, run: Any, budgets: list[int], num: int, seed: int, scale: float
):
    plan = SamplingPlan(budgets, num, seed, cfg=((1, scale),), batch=256)
    return {str(n): s[scorer.key] for n, s in scorer.score(run, plan).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path, help="a `shortcut compare` output folder")
    p.add_argument("--scales", nargs="+", type=float, default=list(SCALES))
    p.add_argument("--budgets", nargs="+", type=int, help="step budgets (default: the table's)")
    p.add_argument("--methods", nargs="+", help="methods (default: every one in compare.json)")
    p.add_argument("--num", type=int, default=500, help="samples per budget (the table's 500)")
    p.add_argument("--val-seeds", nargs="+", type=int, help="noise seeds (default: seed + 1000)")
    p.add_argument("--val-num", type=int, default=10000, help="test-split reference images")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()

    table = json.loads((args.run / "compare.json").read_text())
    meta = json.loads((args.run / "compare.meta.json").read_text())
    data, seed = meta["config"]["data"]["name"], meta["config"]["training"]["seed"]
    if data not in DIGIT_DATASETS:
        raise SystemExit(f"{data} is unlabelled: there is no guidance to choose")
    if "cfg" not in meta:
        raise SystemExit(
            f"{args.run}/compare.meta.json does not say which guidance the table used (a run "
            "before it was recorded): resume the run with the current `shortcut compare`"
        )
    table_cfg = tuple((int(n), float(scale)) for n, scale in meta["cfg"])
    val_seeds = args.val_seeds or [seed + 1000]
    if seed in val_seeds:
        raise SystemExit(f"--val-seeds must differ from the table's noise seed {seed}")
    val_ref = validation_reference(data, args.val_num, seed, args.run)
    setting = {
        "scales": args.scales, "num": args.num, "val_seeds": val_seeds, "val_ref": val_ref.name,
        "table_cfg": table_cfg,
    }  # fmt: skip
    record: dict[str, Any] = {}
    if args.json.is_file():
        record = json.loads(args.json.read_text())
        if record.get("setting") != json.loads(json.dumps(setting)):
            record = {}  # another setting: start again
    record.update(run=str(args.run), data=data, seed=seed, setting=setting)
    methods = record.setdefault("methods", {})

    first = load_run(method_folder(args.run, next(iter(table))))
    config = first.checkpoint.config
    test = scorer_for(first.spec, config, metric="fd-digits", ref_num=10000, seed=seed)
    val = ImageScorer("fd-digits", str(val_ref), data, seed=seed, progress=False)
    for method in args.methods or list(table):
        if method in methods or method not in OBJECTIVES:
            continue
        tick = time.perf_counter()
        run = load_run(method_folder(args.run, method))
        budgets = [n for n in args.budgets or map(int, table[method]) if str(n) in table[method]]
        by_scale = {
            f"{scale:g}": [score_scale(val, run, budgets, args.num, s, scale) for s in val_seeds]
            for scale in args.scales
        }
        rows = {}
        for n in map(str, budgets):
            validation = {s: float(np.mean([v[n] for v in runs])) for s, runs in by_scale.items()}
            rows[n] = {
                "table_scale": scale_for(table_cfg, int(n)), "table": table[method][n],
                "validation": validation, "chosen": float(choose(validation)),
            }  # fmt: skip
        for scale in sorted({r["chosen"] for r in rows.values()}):
            chosen = [int(n) for n, r in rows.items() if r["chosen"] == scale]
            scores = score_scale(test, run, chosen, args.num, seed, scale)
            for n in map(str, chosen):
                rows[n]["test"] = scores[n]
        for n, r in rows.items():
            if r["chosen"] == r["table_scale"] and abs(r["test"] - r["table"]) > 1e-3:
                print(f"  {method} {n}: the table's scale gives {r['test']:.4f}, not {r['table']}")
        methods[method] = {"budgets": rows, "seconds": time.perf_counter() - tick}
        record["machine"] = machine_record()
        write_json(args.json, record)
        print(
            f"{method}: "
            + ", ".join(f"{n}: x{r['chosen']:g} {r['test']:.1f}" for n, r in rows.items()),
            flush=True,
        )
    headers = ["method", "steps", "table scale", "table", "chosen scale", "at chosen scale"]
    lines = [
        [m, n, r["table_scale"], r["table"], r["chosen"], r["test"]]
        for m, entry in methods.items()
        for n, r in entry["budgets"].items()
    ]
    text = markdown_table(headers, lines)
    args.json.with_suffix(".md").write_text(
        f"# Guidance per method: {args.run} ({data}, seed {seed})\n\n{text}\n"
    )
    print(text)


if __name__ == "__main__":
    main()
