"""How far the official code's FID conventions move the statistics from ours, on the same images.

The official repository (kvfrans/shortcut-models, utils/fid.py and helper_eval.py) computes FID
with jax-fid's Inception-v3 (pytorch-fid's port of the same TF 2015-12-05 network, fetched from
Dropbox: not reachable here) on float images in [-1, 1] (x / 127.5 - 1) resized to 299x299 by
`jax.image.resize(..., "bilinear", antialias=False)`, which samples at half-pixel centres. We feed
uint8 images through TF1's `resize_bilinear` (no half-pixel centres) scaled to x / 128 - 1, as
the TF, ADM and StyleGAN evaluators do. This script runs our network both ways on the same real
images (OpenMoji rasterised at --resolution, 256 as the paper's data) and reports the Fréchet
distance between the two sets of statistics: what the conventions alone contribute when a
statistics file made by the official code is passed to `evaluate --ref`.

    python benchmarks/fid_conventions.py --num 1000 --json benchmarks/results/fid_conventions.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shortcut_models.data.emoji import load_openmoji
from shortcut_models.metrics.frechet import FeatureStats, frechet_distance
from shortcut_models.metrics.inception import INPUT_SIZE, InceptionFeatures
from shortcut_models.report import machine_record, write_json


@torch.no_grad()
def official_features(network: torch.nn.Module, images: torch.Tensor, batch: int) -> np.ndarray:
    """uint8 NCHW -> pool3 features the official way: x / 127.5 - 1, half-pixel bilinear."""
    out = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].float() / 127.5 - 1.0
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        out.append(network(x).reshape(len(x), -1).double().numpy())
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--num", type=int, default=1000, help="images (drawn with --seed)")
    p.add_argument("--resolution", type=int, default=256, help="side the SVGs are drawn at")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    everything = load_openmoji(args.resolution)
    index = np.random.default_rng(args.seed).permutation(len(everything))[: args.num]
    images = torch.from_numpy(everything[np.sort(index)]).permute(0, 3, 1, 2).contiguous()
    del everything
    extractor = InceptionFeatures()
    tick = time.perf_counter()
    ours = extractor(images).astype(np.float64)
    theirs = official_features(extractor.network, images, extractor.batch)
    distance = frechet_distance(FeatureStats.of(ours), FeatureStats.of(theirs))
    record = {
        "images": args.num,
        "resolution": args.resolution,
        "fd_between_conventions": distance,
        "mean_abs_feature_difference": float(np.abs(ours - theirs).mean()),
        "mean_abs_feature": float(np.abs(ours).mean()),
        "seconds": time.perf_counter() - tick,
        "machine": machine_record(),
    }
    print(
        f"{args.num} OpenMoji images at {args.resolution}px: the Fréchet distance between our "
        f"statistics and the official code's conventions (same network) is {distance:.3f}; "
        f"features differ by {record['mean_abs_feature_difference']:.4f} on average "
        f"(mean |feature| {record['mean_abs_feature']:.4f})"
    )
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
