"""`shortcut encode`: turn an image set into latent shards once, for latent-mode training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shortcut_models import logs
from shortcut_models.data import image_reader
from shortcut_models.data.latents import encode_to_shards
from shortcut_models.files import prepare_out_dir
from shortcut_models.locking import FolderLock
from shortcut_models.vae import load_vae

log = logs.get(__name__)


def encode_dataset(
    data: str,
    options: dict[str, Any] | None,
    vae: str | Path | None,
    out: Path,
    batch_size: int = 32,
    shard_size: int = 4096,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Encode every image of `data` and its mirror with the VAE at `vae`; returns the metadata
    (the folder is locked: a second writer is refused)."""
    with FolderLock(prepare_out_dir(out), "shortcut encode"):
        read, count, class_names, source = image_reader(data, options)
        codec = load_vae(vae, device)
        plan = {**source, "class_names": class_names}
        meta = encode_to_shards(read, count, codec, out, plan, shard_size, batch_size, progress)
    if meta["count"] < count:
        log.warning(
            f"warning: {count - meta['count']} of {count} images were unreadable and skipped"
        )
    return meta
