"""Inception (FID) features per second on this machine: the plain TorchScript network as it was
used until issue 36 against the network `InceptionFeatures` now runs (frozen, batch norms folded,
oneDNN weights pre-packed, channels-last on a CPU), in one process, alternating so that machine
noise hits both alike; the features' largest relative difference; the rate against the CPU's
measured fp32 matmul rate (MFU, from the network's FLOPs counted by torch).

    python benchmarks/inception_speed.py --batches 8 16 32 --images 64 \\
        --json benchmarks/results/inception_speed.json

Images are random uint8 32x32 (1 or 3 channels), resized to 299x299 as FID does: the network's
cost does not depend on their content.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from shortcut_models.metrics.inception import (
    InceptionFeatures,
    default_weights_path,
    tf_bilinear_resize,
)
from shortcut_models.report import markdown_table, write_json

sys.path.insert(0, str(Path(__file__).parent))
from throughput import cpu_kind, cpu_name, peak_tflops  # noqa: E402


class Plain:
    """The feature network as it ran before: TorchScript as loaded, contiguous inputs."""

    def __init__(self, path: Path, batch: int) -> None:
        self.network = torch.jit.load(str(path)).eval()
        self.batch = batch

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch):
            x = images[start : start + self.batch].float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            out.append(self.network(tf_bilinear_resize(x) / 128.0 - 1.0).reshape(len(x), -1))
        return torch.cat(out).numpy()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batches", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--images", type=int, default=64, help="images per timing")
    p.add_argument("--rounds", type=int, default=3, help="alternating timings (best kept)")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = default_weights_path()
    images = torch.randint(
        0, 256, (args.images, args.channels, 32, 32), generator=torch.Generator().manual_seed(0)
    ).to(torch.uint8)
    rows, results = [], []
    for batch in args.batches:
        tick = time.perf_counter()
        fast = InceptionFeatures(path, "cpu", batch)
        prepare_s = time.perf_counter() - tick
        plain = Plain(path, batch)
        expected, got = plain(images[:batch]), fast(images[:batch])  # warm-up, and the check
        rel = float(np.abs(got - expected).max() / np.abs(expected).max())
        best = {"plain": float("inf"), "optimized": float("inf")}
        for _ in range(args.rounds):
            for name, net in (("plain", plain), ("optimized", fast)):
                tick = time.perf_counter()
                net(images)
                best[name] = min(best[name], time.perf_counter() - tick)
        rates = {name: args.images / seconds for name, seconds in best.items()}
        results.append(
            {"batch": batch, "images_per_s": rates, "speedup": rates["optimized"] / rates["plain"],
             "max_relative_feature_difference": rel, "prepare_s": prepare_s}
        )  # fmt: skip
        rows.append([batch, f"{rates['plain']:.1f}", f"{rates['optimized']:.1f}",
                     f"{rates['optimized'] / rates['plain']:.2f}", f"{rel:.1e}"])  # fmt: skip
    x = tf_bilinear_resize(images[:1].float().expand(-1, 3, -1, -1)) / 128.0 - 1.0
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        torch.jit.load(str(path)).eval()(x)
    flops = counter.get_total_flops()
    peak, source = peak_tflops(torch.device("cpu"), None, None)
    best_rate = max(r["images_per_s"]["optimized"] for r in results)
    result = {
        "device": cpu_name(),
        "cpu": cpu_kind(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images": args.images,
        "channels": args.channels,
        "flops_per_image": flops,
        "peak_tflops": peak,
        "peak_source": source,
        "mfu_best_optimized": best_rate * flops / 1e12 / peak if flops else None,
        "ceiling_images_per_s": peak * 1e12 / flops if flops else None,
        "rows": results,
        "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    kind, threads = result["cpu"]["kind"], result["threads"]
    print(
        f"Inception features on {result['device']} [{kind}], {threads} threads, "
        f"{args.images} images of 32x32x{args.channels} per timing"
    )
    print(markdown_table(
        ["batch", "plain img/s", "optimized img/s", "speedup", "max rel. feature diff"], rows
    ))  # fmt: skip
    if flops:
        ceiling = result["ceiling_images_per_s"]
        print(
            f"{flops / 1e9:.2f} GFLOP per image; best optimized rate is "
            f"{result['mfu_best_optimized']:.2f} of a measured fp32 matmul's "
            f"{peak:.3f} TFLOP/s (ceiling {ceiling:.1f} img/s)"
        )
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
