"""The image <-> latent map of latent mode: a diffusers `AutoencoderKL` from a local path.

Latents are the posterior mean times the VAE's scaling factor (0.18215 for the Stable Diffusion
VAE), so the training data has roughly unit variance, as in the reference. Nothing is downloaded:
the user names a diffusers folder (config.json + weights) or a single weights file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shortcut_models.errors import UsageError

DIFFUSERS_HINT = "pip install 'diffusers>=0.30'"
SD_SCALING_FACTOR = 0.18215


def _autoencoder_class():
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        hint = f"latent mode needs diffusers; install it with: {DIFFUSERS_HINT}"
        raise UsageError(hint) from None
    return AutoencoderKL


class LatentCodec:
    """Encodes [-1, 1] images to scaled latents and decodes them back."""

    def __init__(self, vae: torch.nn.Module, path: str, scaling_factor: float | None = None):
        self.vae = vae.eval().requires_grad_(False)
        self.path = path
        configured = getattr(vae.config, "scaling_factor", None)
        self.scaling_factor = float(scaling_factor or configured or SD_SCALING_FACTOR)
        self.in_channels = int(vae.config.in_channels)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def to(self, device: torch.device | str) -> LatentCodec:
        self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float images in [-1, 1], (N, C, H, W); grey images are repeated to the VAE's RGB."""
        if images.shape[1] == 1 and self.in_channels == 3:
            images = images.expand(-1, 3, -1, -1)
        posterior = self.vae.encode(images.to(self.device)).latent_dist
        return posterior.mean.float() * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents.to(self.device) / self.scaling_factor).sample
        return images.float().clamp(-1, 1)

    def latent_shape(self, channels: int, resolution: int) -> tuple[int, int, int]:
        probe = torch.zeros(1, channels, resolution, resolution)
        return tuple(self.encode(probe).shape[1:])


def load_vae(
    path: str | Path | None, device: torch.device | str = "cpu", scaling_factor: float | None = None
) -> LatentCodec:
    """An AutoencoderKL from a diffusers folder, or from one weights file (a config.json beside
    it is used when present)."""
    if path is None or str(path) == "":
        raise UsageError(
            "latent mode needs a VAE: pass --vae PATH, a local diffusers AutoencoderKL folder "
            "(config.json + diffusion_pytorch_model.safetensors, e.g. stabilityai/sd-vae-ft-ema) "
            "or its single weights file"
        )
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise UsageError(f"no VAE at {path}")
    cls = _autoencoder_class()
    try:
        if path.is_dir():
            vae = cls.from_pretrained(str(path), local_files_only=True)
        else:
            config = str(path.parent) if (path.parent / "config.json").is_file() else None
            vae = cls.from_single_file(str(path), config=config, local_files_only=True)
    except Exception as exc:  # diffusers raises many kinds for a wrong or partial folder
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot load an AutoencoderKL from {path} ({first})") from None
    return LatentCodec(vae, str(path), scaling_factor).to(device)


def decoder_for(
    spec: Any, vae: str | Path | None = None, device: torch.device | str = "cpu"
) -> LatentCodec:
    """The VAE that turns a latent model's samples into images: `vae` when given, else the one
    its latent shards were encoded with."""
    path = vae or spec.vae
    if vae is None and path and not Path(path).exists():
        raise UsageError(
            f"this model generates latents of the VAE at {path}, which is not on this machine; "
            "pass --vae PATH to that AutoencoderKL"
        )
    return load_vae(path, device, spec.scaling_factor)


def decode_batched(codec: LatentCodec, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Images in [-1, 1] on the CPU, decoded `batch_size` latents at a time."""
    parts = [
        codec.decode(latents[i : i + batch_size]).cpu() for i in range(0, len(latents), batch_size)
    ]
    return torch.cat(parts)
