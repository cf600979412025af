"""Latent mode: a one-time encoding of an image set into latent shards, and training on them.

A shard folder holds `meta.json` (written last: its presence means the encoding is complete),
`plan.json` (what is being encoded, so an interrupted `shortcut encode` resumes only the same job)
and per shard `labels_NNNNN.npy` then `latents_NNNNN.npy` (float16, (n, 2, C, h, w): the image and
its horizontal mirror, each encoded). Every file is written atomically and a shard counts as done
once its latents file exists, so a stopped encoding loses at most the shard in progress.
Shards are memory-mapped, so a set larger than RAM trains without loading it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shortcut_models import logs
from shortcut_models.data.images import to_unit_range
from shortcut_models.data.indexed import IndexedData
from shortcut_models.errors import UsageError
from shortcut_models.progress import progress_bar

log = logs.get(__name__)

LATENTS_FORMAT = "shortcut-models-latents/1"
META_NAME = "meta.json"
PLAN_NAME = "plan.json"

# (start, stop, batch_size) -> (uint8 images, labels or None) batches of those source rows
BatchReader = Callable[[int, int, int], Iterator[tuple[torch.Tensor, torch.Tensor | None]]]


def _save_npy(path: Path, array: np.ndarray) -> None:
    from shortcut_models.files import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    atomic_write(path, write)


def encode_to_shards(
    read: BatchReader,
    count: int,
    codec: Any,
    out: Path,
    plan: dict[str, Any],
    shard_size: int = 4096,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode source rows 0..count-1 (and their mirrors) into shards under `out`; returns the
    metadata. `plan` describes the source; a rerun with the same plan resumes, another refuses."""
    from shortcut_models.files import atomic_write_text

    if shard_size < 1 or batch_size < 1:
        raise UsageError("shard size and batch size must be positive")
    out.mkdir(parents=True, exist_ok=True)
    plan = {**plan, "count": count, "shard_size": shard_size, "vae": codec.path}
    plan_path = out / PLAN_NAME
    if plan_path.exists():
        previous = json.loads(plan_path.read_text())
        if previous != json.loads(json.dumps(plan)):
            raise UsageError(
                f"{out} holds an encoding of something else ({PLAN_NAME} differs); "
                "choose another --out or delete that folder"
            )
        if (out / META_NAME).exists():
            log.info(f"{out} is already encoded")
            return json.loads((out / META_NAME).read_text())
    atomic_write_text(plan_path, json.dumps(plan, indent=2, sort_keys=True))
    num_shards = (count + shard_size - 1) // shard_size
    bar = progress_bar(count, "encoding", unit="img", enabled=progress)
    shards = []
    for k in range(num_shards):
        start, stop = k * shard_size, min((k + 1) * shard_size, count)
        latents_path, labels_path = out / f"latents_{k:05d}.npy", out / f"labels_{k:05d}.npy"
        if not latents_path.exists():
            rows, labels = [], []
            for images, y in read(start, stop, batch_size):
                x = to_unit_range(images)
                pair = torch.stack([codec.encode(x), codec.encode(x.flip(-1))], dim=1)
                rows.append(pair.cpu().half().numpy())
                labels.append(np.full(len(images), -1) if y is None else y.numpy())
                bar.update(len(images))
            _save_npy(labels_path, np.concatenate(labels).astype(np.int64))
            _save_npy(latents_path, np.concatenate(rows))
        else:
            bar.update(stop - start)
        shards.append({"latents": latents_path.name, "labels": labels_path.name})
    bar.close()
    first = np.load(out / shards[0]["latents"], mmap_mode="r")
    total = sum(len(np.load(out / s["labels"], mmap_mode="r")) for s in shards)
    meta = {
        "format": LATENTS_FORMAT,
        "count": total,
        "shape": list(first.shape[2:]),
        "scaling_factor": codec.scaling_factor,
        "shards": shards,
        **plan,
    }
    atomic_write_text(out / META_NAME, json.dumps(meta, indent=2, sort_keys=True))
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file():
        unfinished = (path / PLAN_NAME).exists()
        hint = " (encoding unfinished: rerun shortcut encode)" if unfinished else ""
        raise UsageError(f"no latent shards at {path}: {META_NAME} missing{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{meta_path} is damaged ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != LATENTS_FORMAT:
        raise UsageError(f"{meta_path} is not a latent shard index ({LATENTS_FORMAT} expected)")
    try:  # the fields training reads, with their types
        float(meta["scaling_factor"])
        shape = [int(n) for n in meta["shape"]]
        shards = [(str(s["latents"]), str(s["labels"])) for s in meta["shards"]]
        str(meta["vae"])
        names = meta.get("class_names") or []
        if not (isinstance(names, list) and len(shape) == 3 and shards):
            raise TypeError("class_names, shape or shards")
    except (KeyError, TypeError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else "a field of the wrong type"
        raise UsageError(f"{meta_path} is damaged ({what}); rerun shortcut encode") from None
    return meta


class LatentData(IndexedData):
    """Pre-encoded latents served as float32 batches; `flip` picks the stored mirror."""

    kind = "latent"

    def __init__(self, path: str | Path, flip: bool = False) -> None:
        self.path = Path(path)
        meta = read_meta(self.path)
        self.name = f"latents:{self.path}"
        self.flip = flip
        self.vae = meta["vae"]
        self.scaling_factor = float(meta["scaling_factor"])
        self.shape = tuple(meta["shape"])
        self.class_names = list(meta.get("class_names") or [])
        self.num_classes = len(self.class_names)
        self.resolution = meta.get("resolution")
        try:
            self.shards = [np.load(self.path / s["latents"], mmap_mode="r") for s in meta["shards"]]
            labels = np.concatenate([np.load(self.path / s["labels"]) for s in meta["shards"]])
        except (OSError, ValueError) as exc:
            raise UsageError(f"latent shards in {self.path} are damaged ({exc})") from None
        bad = [s for s in self.shards if tuple(s.shape[2:]) != self.shape]
        if bad or len(labels) != sum(len(s) for s in self.shards):
            raise UsageError(f"latent shards in {self.path} do not match {META_NAME}")
        if (
            self.num_classes
            and len(labels)
            and not 0 <= labels.min() <= labels.max() < self.num_classes
        ):
            raise UsageError(
                f"latent shards in {self.path} hold labels outside 0..{self.num_classes - 1} "
                f"({labels.min()}..{labels.max()}); rerun shortcut encode"
            )
        self.labels = torch.from_numpy(labels) if self.num_classes else None
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def fetch(self, index: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
        rows = index.numpy()
        variant = np.zeros(len(rows), dtype=np.int64) if flips is None else flips.numpy()
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), *self.shape), dtype=np.float32)
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self.shards[s][rows[mask] - self.offsets[s], variant[mask].astype(np.int64)]
        return torch.from_numpy(out)
