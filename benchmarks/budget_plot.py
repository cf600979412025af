"""Each method's score against its training budget: does the paper's ordering get better or worse
for shortcut as training lengthens?

Reads tables written by `compare_seeds.py` at several budgets (the same set, methods and scoring;
`--budget MULTIPLE FILE` per budget, the multiple of the 2,300-step base) and draws one panel per
sampling-step count (default 1 and 128): per method, the mean over seeds against the budget, with
its 95% interval over seeds where there are two or more. Prints the points as a table and writes
them as JSON beside the plot.

    python benchmarks/budget_plot.py --budget 1 benchmarks/results/compare_mnist_unet.json \\
        --budget 4 benchmarks/results/compare_mnist_unet_4x.json --out docs/budget_mnist.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shortcut_models.files import atomic_write
from shortcut_models.report import markdown_table, write_json


def points(
    tables: dict[float, dict[str, Any]], steps: list[int], methods: list[str] | None = None
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """{method: {steps: [{budget, mean, low, high, n}, ...]}} over the budgets a method has, in
    budget order; low / high are the mean where the table has no interval (one seed)."""
    found: dict[str, dict[str, list[dict[str, float]]]] = {}
    for budget in sorted(tables):
        table = tables[budget]
        for method, means in table["mean"].items():
            if methods and method not in methods:
                continue
            for n in map(str, steps):
                if n not in means:
                    continue
                interval = table.get("intervals", {}).get(method, {}).get(n, {})
                mean = means[n]
                low, high = interval.get("low"), interval.get("high")
                found.setdefault(method, {}).setdefault(n, []).append({
                    "budget": budget, "mean": mean, "n": interval.get("n", 1),
                    "low": mean if low is None else low, "high": mean if high is None else high,
                })  # fmt: skip
    return found


def draw(found: dict[str, dict[str, list[dict[str, float]]]], steps: list[int], path: Path,
         title: str, metric: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(steps), figsize=(4.6 * len(steps), 3.8), squeeze=False)
    for ax, n in zip(axes[0], map(str, steps), strict=True):
        for method, by_steps in found.items():
            rows = by_steps.get(n, [])
            if not rows:
                continue
            x = [r["budget"] for r in rows]
            y = [r["mean"] for r in rows]
            errors = [[r["mean"] - r["low"] for r in rows], [r["high"] - r["mean"] for r in rows]]
            style = {"linewidth": 2.5} if method == "shortcut" else {}
            ax.errorbar(x, y, yerr=errors, marker="o", capsize=3, label=method, **style)
        budgets = sorted({r["budget"] for m in found.values() for r in m.get(n, [])})
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [f"{b:g}x" for b in budgets])
        ax.set_xlabel("training budget (x 2,300 steps x 64)")
        ax.set_ylabel(metric)
        ax.set_title(f"{n} sampling step{'s' if n != '1' else ''}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--budget",
        nargs=2,
        action="append",
        metavar=("MULTIPLE", "FILE"),
        required=True,
        help="a compare_seeds.py JSON and its budget multiple",
    )
    p.add_argument("--steps", nargs="+", type=int, default=[1, 128])
    p.add_argument("--methods", nargs="+", help="methods drawn (default: every one)")
    p.add_argument("--metric", default="score (lower is better)")
    p.add_argument("--title", default="")
    p.add_argument("--out", type=Path, required=True, help="the plot (.png); .json beside it")
    args = p.parse_args()
    tables = {}
    for multiple, file in args.budget:
        try:
            tables[float(multiple)] = json.loads(Path(file).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--budget {multiple} {file}: {exc}") from None
    found = points(tables, args.steps, args.methods)
    if not found:
        raise SystemExit("no method has a score at the steps asked for")
    draw(found, args.steps, args.out, args.title, args.metric)
    write_json(
        args.out.with_suffix(".json"), {"budgets": [b for b, _ in args.budget], "points": found}
    )
    rows = [
        [m, n, r["budget"], r["mean"], r["low"], r["high"], r["n"]]
        for m, by_steps in found.items()
        for n, budget_rows in by_steps.items()
        for r in budget_rows
    ]
    print(markdown_table(["method", "steps", "budget", "mean", "low", "high", "seeds"], rows))


if __name__ == "__main__":
    main()
