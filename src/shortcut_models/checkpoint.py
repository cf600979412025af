"""Checkpoints: one safetensors file (weights, EMA, optimizer state) plus config.json.

This module only stores and reads tensors and configs; building a network from a checkpoint is
`factory.load_run`.

Both are written atomically (temporary file, fsync, rename), so a crash or a kill at any moment
leaves either the previous checkpoint or the new one, never a half-written file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from shortcut_models.config import DataSpec, TrainConfig
from shortcut_models.errors import UsageError
from shortcut_models.files import atomic_write, atomic_write_text

FORMAT = "shortcut-models/1"
CHECKPOINT_NAME = "checkpoint.safetensors"
CONFIG_NAME = "config.json"


def save_checkpoint(
    run_dir: Path,
    config: TrainConfig,
    step: int,
    model: nn.Module | Mapping[str, torch.Tensor],
    ema: nn.Module | Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | Mapping,
    data: DataSpec | None = None,
    objective_state: dict[str, torch.Tensor] | None = None,
    target_ema: nn.Module | Mapping[str, torch.Tensor] | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write run_dir/checkpoint.safetensors and run_dir/config.json; return the checkpoint path.

    Networks and optimizer may be given as modules or as their (full, gathered) state dicts; the
    optimizer state is stored by parameter index, so any world size can load it. `target_ema`
    is the twin EMA of objectives that compute targets with their own EMA; `extra` is more
    metadata (strings), read back as Checkpoint.extra.
    """
    run_dir = Path(run_dir)
    tensors: dict[str, torch.Tensor] = {}
    networks = {"model": model, "ema": ema}
    if target_ema is not None:
        networks["target_ema"] = target_ema
    for prefix, module in networks.items():
        state = module if isinstance(module, Mapping) else module.state_dict()
        for key, value in state.items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous()
    optimizer_state = optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for key, value in (objective_state or {}).items():
        tensors[f"objective.{key}"] = value.detach().cpu().contiguous()
    metadata = {"format": FORMAT, "step": str(step), "config": config.to_json()}
    if data is not None:
        metadata["data"] = data.to_json()
    metadata.update(extra or {})
    path = run_dir / CHECKPOINT_NAME
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    atomic_write_text(run_dir / CONFIG_NAME, config.to_json() + "\n")
    return path


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

    def optimizer_state(self) -> dict[int, dict[str, torch.Tensor]]:
        """The stored optimizer state, {parameter index: {name: tensor}}."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in self.tensors("optimizer").items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        return state


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
