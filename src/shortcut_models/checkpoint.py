"""Checkpoints: one safetensors file (weights, EMA, optimizer state) plus config.json.

This module only stores and reads tensors and configs; building a network from a checkpoint is
`factory.load_run`.

Both are written atomically (temporary file, fsync, rename), so a crash or a kill at any moment
leaves either the previous checkpoint or the new one, never a half-written file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from shortcut_models.config import TrainConfig
from shortcut_models.data import DataSpec
from shortcut_models.errors import UsageError
from shortcut_models.files import atomic_write, atomic_write_text

FORMAT = "shortcut-models/1"
CHECKPOINT_NAME = "checkpoint.safetensors"
CONFIG_NAME = "config.json"


def save_checkpoint(
    run_dir: Path,
    *,
    config: TrainConfig,
    step: int,
    parts: Mapping[str, Mapping[str, torch.Tensor]],
    data: DataSpec | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write run_dir/checkpoint.safetensors and run_dir/config.json; return the checkpoint path.

    `parts` are the run's stateful parts by name, each as flat tensors (`state_dict` of a
    network, `optimizer_tensors` of an optimizer's state, the objective's, the metrics log's):
    part "ema"'s tensor "w" is stored as "ema.w" and read back with `Checkpoint.tensors("ema")`.
    `extra`: more metadata (strings, such as where an imported run came from), read back as
    `Checkpoint.extra`."""
    run_dir = Path(run_dir)
    tensors = {
        f"{prefix}.{key}": torch.as_tensor(value).detach().cpu().contiguous()
        for prefix, state in parts.items()
        for key, value in state.items()
    }
    metadata = {"format": FORMAT, "step": str(step), "config": config.to_json()}
    if data is not None:
        metadata["data"] = data.to_json()
    metadata.update(extra or {})
    path = run_dir / CHECKPOINT_NAME
    atomic_write(path, lambda tmp: _save_file(tensors, tmp, metadata))
    atomic_write_text(run_dir / CONFIG_NAME, config.to_json() + "\n")
    return path


def _save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' save_file, its failure to write (a full disk, a file-size limit) raised as
    the OSError it is, so that training reports it in one line like any other write."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except Exception as exc:  # safetensors raises its own error type for I/O failures
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from None


def optimizer_tensors(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An optimizer's `state_dict()` (full, gathered) as flat tensors by parameter index, so any
    world size can load it: {"0.exp_avg": ..., "0.step": ...}."""
    return {
        f"{index}.{key}": torch.as_tensor(value)
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }


@dataclass
class Checkpoint:
    path: Path
    config: TrainConfig
    step: int
    data: DataSpec | None = None  # None in checkpoints written before it was stored
    extra: dict[str, str] = field(default_factory=dict)  # more metadata (see save_checkpoint)

    def tensors(self, prefix: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """All tensors stored under `prefix.`, with the prefix removed."""
        out = {}
        with safe_open(str(self.path), framework="pt", device=str(device)) as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key.startswith(prefix + "."):
                    out[key[len(prefix) + 1 :]] = handle.get_tensor(key)
        return out

    def load_weights(self, module: nn.Module, which: str = "ema") -> None:
        try:
            module.load_state_dict(self.tensors(which))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UsageError(
                f"{self.path}: weights do not fit the model of its config ({first})"
            ) from None


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor holds only finite values (DTensors: the local part)."""
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            return False
    return True


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file; missing ones are a UsageError."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint and read its config; foreign or corrupt files are a UsageError."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for unreadable files
        raise UsageError(f"{path} is not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise UsageError(f"{path} is not a shortcut-models checkpoint (format {FORMAT} expected)")
    try:
        config = TrainConfig.from_dict(json.loads(metadata["config"]))
        step = int(metadata["step"])
        data = DataSpec.from_json(metadata["data"]) if "data" in metadata else None
    except UsageError:  # a config our validation refuses says so itself
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{path} has a damaged config ({exc})") from None
    known = {"format", "step", "config", "data"}
    extra = {k: v for k, v in metadata.items() if k not in known}
    return Checkpoint(path=path, config=config, step=step, data=data, extra=extra)
