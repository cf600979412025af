"""One comparison table from `shortcut compare` runs that differ only in --seed: the mean per
method and budget with every seed's value beside it, so an ordering of methods can be read against
the spread of seeds.

A seed given as A+B+... merges the rows of several folders of that seed (a method in a later
folder replaces it in an earlier one: for example the two-stage methods re-run with another
--teacher-share, or a method added later).

Each run folder holds compare.md (its header says data, network, budget, samples), compare.json
({method: {steps: value}}) and compare.meta.json (seconds per method, config, machine, commit).
Methods missing from a seed's run (not finished yet) are shown with the seeds they have. Runs can
come from different sessions; each seed's machine, commit and time go into the JSON. A recorded
table's seed, RESULTS.json@SEED, stands for its run folder once the folder is gone, so that a
method re-run later replaces its row in that seed (RESULTS.json@0+runs/rerun-s0).

    python benchmarks/compare_seeds.py runs/cmp-unet-mnist-s0 runs/cmp-unet-mnist-s1 \\
        --out benchmarks/results/compare_mnist_unet
    python benchmarks/compare_seeds.py runs/cmp-unet-mnist-s0+runs/cmp-unet-mnist-s0-share90 ...
    python benchmarks/compare_seeds.py benchmarks/results/compare_mnist_unet.json@0+runs/imf-s0 \
        benchmarks/results/compare_mnist_unet.json@1+runs/imf-s1 --out ...
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from shortcut_models.claims import by_seed, decide, intervals, t_interval
from shortcut_models.compare import METHODS
from shortcut_models.plots import metric_vs_steps
from shortcut_models.report import markdown_table, write_json


def load(run: Path) -> dict[str, Any]:
    """compare.json, the first lines of compare.md and the meta of one seed's run folder."""
    scores = json.loads((run / "compare.json").read_text())
    meta_path = run / "compare.meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    lines = (run / "compare.md").read_text().splitlines()
    return {"scores": scores, "meta": meta, **header_and_notes(lines)}


def header_and_notes(lines: list[str]) -> dict[str, Any]:
    """Title, setting line and {method: training note} of a compare table's markdown (a run's
    compare.md or a table this script wrote, whose setting line ends in "; seeds ...")."""
    table = [line for line in lines if line.startswith("|")]
    notes = {r.split("|")[1].strip(): r.split("|")[2].strip() for r in table[2:]}
    return {"title": lines[0], "setting": lines[2].split("; seeds ")[0], "notes": notes}


def load_recorded(spec: str) -> dict[str, Any]:
    """One seed of a table this script wrote (RESULTS.json@SEED): its scores and meta from the
    JSON, title, setting and each method's training note from the .md beside it."""
    path, _, seed = spec.rpartition("@")
    recorded = json.loads(Path(path).read_text())
    if seed not in recorded.get("seeds", {}):
        raise SystemExit(f"{path} has no seed {seed} (it has {sorted(recorded.get('seeds', {}))})")
    lines = Path(path).with_suffix(".md").read_text().splitlines()
    entry = recorded["seeds"][seed]
    return {"scores": entry["scores"], "meta": entry["meta"], **header_and_notes(lines)}


def load_part(spec: str) -> dict[str, Any]:
    """A run folder, or a recorded table's seed (RESULTS.json@SEED)."""
    return load_recorded(spec) if ".json@" in spec else load(Path(spec))


def load_seed(spec: str) -> dict[str, Any]:
    """`load` of one folder, or of A+B+...: rows merged in order (later folders win), the meta
    of each folder kept under "parts", the seconds merged."""
    parts = [load_part(part) for part in spec.split("+")]
    merged = dict(parts[0])
    if len(parts) == 1:
        return merged
    seeds = {p["meta"].get("config", {}).get("seed") for p in parts}
    if len(seeds) > 1:
        raise SystemExit(f"{spec}: the folders are of different seeds ({sorted(map(str, seeds))})")
    merged["scores"], merged["notes"] = {}, {}
    seconds: dict[str, float] = {}
    for part in parts:
        merged["scores"].update(part["scores"])
        merged["notes"].update(part["notes"])
        seconds.update(part["meta"].get("seconds", {}))
    merged["meta"] = {
        "config": parts[0]["meta"].get("config", {}),
        "seconds": seconds,
        "parts": {
            folder: part["meta"] for folder, part in zip(spec.split("+"), parts, strict=True)
        },
    }
    return merged


def cell(values: list[float]) -> str:
    """'mean [95% t-interval] (a / b)' over the seeds that have a value."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f} (1 seed)"
    found = t_interval(values)
    each = " / ".join(f"{v:.1f}" for v in values)
    return f"{found.mean:.1f} [{found.low:.1f}, {found.high:.1f}] ({each})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "runs", nargs="+", help="compare --out folders, one per seed (A+B: merged rows of a seed)"
    )
    p.add_argument("--out", type=Path, required=True, help="writes OUT.md, OUT.json, OUT.png")
    args = p.parse_args()
    runs = [load_seed(run) for run in args.runs]
    seeds = [r["meta"].get("config", {}).get("seed") for r in runs]
    methods = [m for m in METHODS if any(m in r["scores"] for r in runs)]
    budgets = sorted({int(n) for r in runs for s in r["scores"].values() for n in s})
    rows, means = [], {}
    for method in methods:
        # a method trained differently in different seeds shows each setting, in seed order
        note = " / ".join(dict.fromkeys(r["notes"][method] for r in runs if method in r["notes"]))
        per_budget = []
        for n in budgets:
            values = [
                r["scores"][method][str(n)] for r in runs if str(n) in r["scores"].get(method, {})
            ]
            per_budget.append(cell(values))
            if values:
                means.setdefault(method, {})[n] = statistics.mean(values)
        rows.append([method, note, *per_budget])
    table = markdown_table(["objective", "training", *map(str, budgets)], rows)
    setting = runs[0]["setting"].replace(f"seed {seeds[0]}, ", "")
    text = (
        f"{runs[0]['title']}\n\n{setting}; seeds {', '.join(map(str, seeds))}: each cell is the "
        "mean over the seeds, its 95% t-interval (two or more seeds), then each seed's value in "
        "that order\n\n" + table + "\n"
    )
    per_seed = by_seed({str(seed): r["scores"] for seed, r in zip(seeds, runs, strict=True)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    write_json(
        args.out.with_suffix(".json"),
        {
            "seeds": {
                str(seed): {"scores": r["scores"], "meta": r["meta"], "run": path}
                for seed, r, path in zip(seeds, runs, args.runs, strict=True)
            },
            "mean": {m: {str(n): v for n, v in values.items()} for m, values in means.items()},
            # over seeds, each with its own sampling noise: see shortcut_models.claims
            "intervals": intervals(per_seed),
            "claims": decide(per_seed),
        },
    )
    label = runs[0]["title"].removeprefix("# ").split(" by number")[0]
    metric_vs_steps(means, label, args.out.with_suffix(".png"), f"{label} vs steps, mean of seeds")
    print(text)


if __name__ == "__main__":
    main()
