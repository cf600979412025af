"""One picture of a comparison: for each method, a row of samples at each step budget, all from
the same noise (and classes in turn on labelled data), so methods and budgets can be compared by
eye. Methods come from `shortcut compare` run folders (several folders may be given; a method
found in a later one replaces an earlier one's).

    python benchmarks/compare_grid.py runs/cmp-unet-openmoji-s0 runs/cmp-unet-openmoji-s0-b \\
        --steps 1 4 128 --num 8 --out docs/compare_openmoji_1_4_128.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from shortcut_models.compare import METHODS
from shortcut_models.data.images import to_uint8
from shortcut_models.evaluation import generate
from shortcut_models.factory import load_run
from shortcut_models.guidance import GuidanceSchedule, parse_entry, scale_for, schedule_from
from shortcut_models.image_io import grid, save_png


def method_runs(folders: list[Path], methods: list[str] | None) -> dict[str, Path]:
    """{method: its run folder} in the harness's order, a later folder winning. A two-stage
    method trained with another --teacher-share lives in METHOD_teacherSTEPS (compare's naming)."""
    found: dict[str, Path] = {}
    for folder in folders:
        for method in METHODS:
            for run in [folder / method, *sorted(folder.glob(f"{method}_teacher*"))]:
                if (run / "checkpoint.safetensors").is_file():
                    found[method] = run
    where = ", ".join(map(str, folders))
    if not found and not methods:
        raise SystemExit(f"no trained method of `shortcut compare` in {where}")
    wanted = methods or [m for m in METHODS if m in found]
    missing = [m for m in wanted if m not in found]
    if missing:
        raise SystemExit(f"no trained run of {', '.join(missing)} in {where}")
    return {m: found[m] for m in wanted}


def rows(run_dir: Path, steps: list[int], num: int, seed: int, cfg: GuidanceSchedule):
    """uint8 samples (num per budget), budgets in order, from one run's evaluated weights."""
    run = load_run(run_dir)
    labels = torch.arange(num) % run.spec.num_classes if run.spec.num_classes else None
    out = []
    with torch.no_grad():
        for n in steps:
            scale = scale_for(cfg, n) if labels is not None else 1.0
            x = generate(run.model.eval(), run.objective, run.spec.shape, num, n, seed, 256,
                         labels, scale)  # fmt: skip
            out.append(to_uint8(x))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="compare --out folders")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 4, 128])
    p.add_argument("--num", type=int, default=8, help="samples per method and budget")
    p.add_argument("--methods", nargs="+", help="these, in this order (default: all found)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", nargs="+", default=["1"], help="as compare's --cfg (labelled data)")
    args = p.parse_args()
    cfg = schedule_from([parse_entry(text) for text in args.cfg])
    runs = method_runs(args.runs, args.methods)
    tiles, legend = [], []
    for method, run_dir in runs.items():
        for n, images in zip(args.steps, rows(run_dir, args.steps, args.num, args.seed, cfg),
                             strict=True):  # fmt: skip
            tiles.append(images)
            legend.append(f"{method}, {n} step{'s' if n > 1 else ''}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_png(grid(torch.cat(tiles), ncol=args.num, scale=2), args.out)
    args.out.with_suffix(".txt").write_text(
        "Rows, top to bottom (same noise in every row):\n" + "\n".join(legend) + "\n"
    )
    print(f"wrote {args.out} ({len(legend)} rows: {'; '.join(legend)})")


if __name__ == "__main__":
    main()
