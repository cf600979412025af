"""Peak memory of FID (TF Inception, the real network) against the number of images.

Each command runs in its own process, whose peak resident set size (`ru_maxrss`) is reported:
`shortcut evaluate` of a tiny RGB checkpoint with --num samples against --ref-num images of a
folder of PNGs (the faults issue's case), and `shortcut stats` of the same folder (its
reference pass is the one `evaluate` makes first). Every child gets
an empty feature cache, so the reference features are computed, not read. The target: about 2 GB
at 5,000 reference images and 5,000 samples, and no growth with the count beyond the features.

    python benchmarks/fid_memory.py --counts 500 5000 --stats-counts 500 \\
        --json benchmarks/results/fid_memory.json

Slow on a CPU (Inception at a few images per second per core); the figures are memory, so other
processes running beside it do not change them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from shortcut_models.metrics.inception import default_weights_path
from shortcut_models.report import machine_record, markdown_table, write_json

PEAK_RSS = """
import resource, sys
from shortcut_models.cli import main
code = main(sys.argv[1:])
print("peak-kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def make_folder(folder: Path, num: int, seed: int = 0) -> None:
    """`num` 32x32 RGB PNGs of smooth random colour (written once; a rerun reuses them)."""
    if len(list(folder.glob("*.png"))) == num:
        return
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num, 3, 4, 4, generator=generator)
    fine = F.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
    pixels = (fine * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def peak(argv: list[str], cache: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `shortcut ARGV` in a child process with its own cache."""
    env = {**os.environ, "SHORTCUT_MODELS_CACHE": str(cache)}
    tick = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"shortcut {' '.join(argv)} failed:\n{done.stderr}")
    return int(done.stdout.split("peak-kb")[-1]) / 1024, time.perf_counter() - tick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--counts", type=int, nargs="+", default=[500, 5000], help="images per set for `evaluate`"
    )
    p.add_argument(
        "--stats-counts", type=int, nargs="*", default=[500], help="images for `stats` alone"
    )
    p.add_argument("--work", type=Path, default=Path("runs/fid-memory"), help="scratch folder")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    inception = str(default_weights_path())  # fetched (once) here, so children need no cache
    folder = args.work / "folder"
    make_folder(folder, max(args.counts))
    run = args.work / "run"
    if not (run / "checkpoint.safetensors").exists():
        train = ["train", "--data", "folder", "--data-path", str(folder), "--resolution", "32"]
        train += ["--backbone", "DiT-T/8", "--steps", "1", "--batch-size", "16"]
        train += ["--out", str(run), "--no-progress"]
        peak(train, args.work / "cache-train")
    rows, records = [], []
    for num in sorted(set(args.counts) | set(args.stats_counts)):
        common = ["--ref", str(folder), "--ref-num", str(num), "--inception", inception]
        commands = {
            "evaluate": ["evaluate", "--ckpt", str(run), *common, "--num", str(num)]
            + ["--steps", "1", "--no-progress"],
            "stats": ["stats", *common, "--out", str(args.work / f"stats-{num}.npz")],
        }
        for name, argv in commands.items():
            if num not in (args.counts if name == "evaluate" else args.stats_counts):
                continue
            cache = args.work / f"cache-{name}-{num}"
            megabytes, seconds = peak(argv, cache)
            samples = num if name == "evaluate" else 0
            records.append(
                {"command": name, "reference images": num, "samples": samples,
                 "peak_rss_mb": round(megabytes), "seconds": round(seconds)}
            )  # fmt: skip
            rows.append([name, num, samples, round(megabytes), round(seconds)])
            print(records[-1], flush=True)
    headers = ["command", "reference images", "samples", "peak RSS (MB)", "seconds"]
    print(markdown_table(headers, rows))
    if args.json:
        write_json(args.json, {"rows": records, "machine": machine_record()})


if __name__ == "__main__":
    main()
