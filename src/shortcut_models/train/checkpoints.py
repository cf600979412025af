"""The run folder's checkpoint during training: the run's stateful parts (each with
`state_dict` / `load_state_dict`, as torchtitan's checkpoint manager keeps them), what may be
resumed, atomic saves that refuse non-finite weights, the last good checkpoint named in every
error, and the temporaries a killed save left behind."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from shortcut_models import distributed, logs, parallel
from shortcut_models.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    Checkpoint,
    all_finite,
    load_checkpoint,
    optimizer_tensors,
    save_checkpoint,
)
from shortcut_models.config import RESUMABLE_CHANGES, TrainConfig
from shortcut_models.data import DataSpec
from shortcut_models.distributed import Dist
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.files import temporary_files

log = logs.get(__name__)

METRICS_NAME = "metrics.jsonl"


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


class NetworkState:
    """A network (or weight average) as a checkpoint part: its full state, gathered under FSDP
    (collective: every process calls it). Its weights are loaded before it is wrapped
    (`setup.build_networks`)."""

    def __init__(self, network: nn.Module, fsdp: bool) -> None:
        self.network, self.fsdp = network, fsdp

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        return parallel.full_state(self.network, self.fsdp)

    def finite(self) -> bool:
        return all_finite(self.network.parameters())


class OptimizerState:
    """AdamW's state as a checkpoint part, stored by parameter index (any world size loads it)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> None:
        self.model, self.optimizer, self.fsdp = model, optimizer, fsdp

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        return optimizer_tensors(
            parallel.full_optimizer_state(self.model, self.optimizer, self.fsdp)
        )

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        by_index: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            index, name = key.split(".", 1)
            by_index.setdefault(int(index), {})[name] = value
        parallel.load_optimizer_state(self.model, self.optimizer, by_index, self.fsdp)


def checkpoint_to_resume(out_dir: Path, config: TrainConfig, resume: bool) -> Checkpoint | None:
    """The checkpoint in `out_dir` a run of `config` resumes (None for a fresh run); refuses a
    config that changed more than RESUMABLE_CHANGES, a missing checkpoint to resume and one a
    fresh run would replace. `train --print-config` asks this too, so that it refuses what the
    run would."""
    path = out_dir / CHECKPOINT_NAME
    if not resume:
        if path.exists():
            raise UsageError(
                f"{out_dir} already holds a checkpoint: pass --resume to continue it "
                "or choose another --out"
            )
        return None
    if not path.exists():
        raise UsageError(f"nothing to resume: no checkpoint in {out_dir}")
    checkpoint = load_checkpoint(path)
    changed = [f for f in checkpoint.config.differences(config) if f not in RESUMABLE_CHANGES]
    if changed:
        raise UsageError(
            f"the checkpoint in {out_dir} was trained with a different config "
            f"({', '.join(changed)}); only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
        )
    return checkpoint


class CheckpointManager:
    """The run's stateful parts by name (`parts`: the model, its EMAs, the optimizer,
    the objective, the metrics log, the plan), saved together and restored by name. Every
    process calls `save` (gathering FSDP weights is collective); rank 0 writes."""

    def __init__(self, out_dir: Path, dist: Dist, device: torch.device) -> None:
        self.out_dir, self.dist, self.device = out_dir, dist, device
        self.path = out_dir / CHECKPOINT_NAME
        self.saved_step: int | None = None
        self.parts: dict[str, Stateful] = {}

    def restore(self, checkpoint: Checkpoint, names: tuple[str, ...]) -> None:
        """Load the parts `names` from `checkpoint` (each gets its own tensors, prefix removed)."""
        for name in names:
            self.parts[name].load_state_dict(checkpoint.tensors(name, self.device))

    def open(self, config: TrainConfig, resume: bool) -> Checkpoint | None:
        """The checkpoint to resume (None for a fresh run), as `checkpoint_to_resume` finds it."""
        checkpoint = checkpoint_to_resume(self.out_dir, config, resume)
        if checkpoint is not None:
            self.saved_step = checkpoint.step
        return checkpoint

    def last_good(self) -> str:
        """The end of an error message: where the last good checkpoint is."""
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint is {self.path} (step {self.saved_step})"

    def save(self, step: int, config: TrainConfig, data: DataSpec) -> Path:
        """Write the checkpoint of `step` with every part. Weights with NaN or inf are never
        written: a finite checkpoint is never replaced by them."""
        finite = all(part.finite() for part in self.parts.values() if hasattr(part, "finite"))
        if distributed.any_rank(not finite, self.dist, self.device):
            raise TrainingError(
                f"the weights hold NaN or inf at step {step}; not saved, {self.last_good()}"
            )
        states = {name: part.state_dict() for name, part in self.parts.items()}
        if self.dist.is_main:
            save_checkpoint(self.out_dir, config=config, step=step, parts=states, data=data)
        distributed.barrier(self.dist)
        self.saved_step = step
        return self.path

    def remove_stale_temporaries(self) -> None:
        """Delete what a save cut short by kill -9 left (our own `.NAME.*.tmp` files only)."""
        stale = [
            path
            for name in (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME)
            for path in temporary_files(self.out_dir, name)
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.info(
                f"removed {len(stale)} temporary file(s) left by an interrupted save in "
                f"{self.out_dir}"
            )
