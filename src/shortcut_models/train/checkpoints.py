"""The run folder's checkpoint during training: what may be resumed, atomic saves that refuse
non-finite weights, the last good checkpoint named in every error, and the temporaries a killed
save left behind."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shortcut_models import distributed, logs, parallel
from shortcut_models.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    Checkpoint,
    all_finite,
    load_checkpoint,
    save_checkpoint,
)
from shortcut_models.config import RESUMABLE_CHANGES, DataSpec, TrainConfig
from shortcut_models.distributed import Dist
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.files import temporary_files

log = logs.get(__name__)

METRICS_NAME = "metrics.jsonl"


class CheckpointManager:
    """Every process calls `save` (gathering FSDP weights is collective); rank 0 writes."""

    def __init__(self, out_dir: Path, dist: Dist, device: torch.device) -> None:
        self.out_dir, self.dist, self.device = out_dir, dist, device
        self.path = out_dir / CHECKPOINT_NAME
        self.saved_step: int | None = None

    def open(self, config: TrainConfig, resume: bool) -> Checkpoint | None:
        """The checkpoint to resume (None for a fresh run); refuses a config that changed more
        than RESUMABLE_CHANGES, a missing checkpoint to resume and one a fresh run would replace."""
        if not resume:
            if self.path.exists():
                raise UsageError(
                    f"{self.out_dir} already holds a checkpoint: pass --resume to continue it "
                    "or choose another --out"
                )
            return None
        if not self.path.exists():
            raise UsageError(f"nothing to resume: no checkpoint in {self.out_dir}")
        checkpoint = load_checkpoint(self.path)
        changed = [f for f in checkpoint.config.differences(config) if f not in RESUMABLE_CHANGES]
        if changed:
            raise UsageError(
                f"the checkpoint in {self.out_dir} was trained with a different config "
                f"({', '.join(changed)}); only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
            )
        self.saved_step = checkpoint.step
        return checkpoint

    def last_good(self) -> str:
        """The end of an error message: where the last good checkpoint is."""
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last good checkpoint is {self.path} (step {self.saved_step})"

    def save(
        self,
        step: int,
        config: TrainConfig,
        data: DataSpec,
        model: nn.Module,
        averages: list[nn.Module],
        optimizer: torch.optim.Optimizer,
        objective_state: dict[str, torch.Tensor],
        extra: dict[str, str],
        fsdp: bool,
    ) -> Path:
        """Write the checkpoint of `step`: the model, its averages (the EMA, then the twin EMA
        if there is one) and the optimizer. Weights with NaN or inf are never written: a finite
        checkpoint is never replaced by them."""
        finite = all_finite([p for net in (model, *averages) for p in net.parameters()])
        if distributed.any_rank(not finite, self.dist, self.device):
            raise TrainingError(
                f"the weights hold NaN or inf at step {step}; not saved, {self.last_good()}"
            )
        states = [parallel.full_state(net, fsdp) for net in (model, *averages)]
        optimizer_state = parallel.full_optimizer_state(model, optimizer, fsdp)
        if self.dist.is_main:
            model_state, ema_state, *twin = states
            save_checkpoint(
                self.out_dir,
                config,
                step,
                model_state,
                ema_state,
                optimizer_state,
                data,
                objective_state,
                twin[0] if twin else None,
                extra,
            )
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
