"""How and where a run executes (`RunOptions`) and how it ended (`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shortcut_models.errors import UsageError


@dataclass
class RunOptions:
    """How and where a run executes. On CPU with the defaults none of it changes the numbers;
    grad_accum x world size sets how the batch is split (see `train.trainer`), and bf16 rounds
    differently from fp32."""

    out_dir: Path
    device: str = "auto"
    resume: bool = False
    log_every: int = 100
    save_every: int = 1000
    progress: bool = True
    tensorboard: bool = True
    precision: str = "auto"  # "fp32", "bf16" (autocast), or "auto": bf16 on a GPU that has it
    compile: bool = False  # torch.compile the network, the no-grad target passes included
    grad_accum: int = 1  # micro-batches per process per optimizer step
    workers: int | None = None  # data-loading processes (None: 4 on GPU, 0 on CPU)
    activation_checkpointing: bool = False  # recompute DiT blocks in backward to save memory
    fsdp: bool = False  # shard weights, gradients and optimizer state (under torchrun)

    def __post_init__(self) -> None:
        for name in ("log_every", "save_every", "grad_accum"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"workers must be >= 0, got {self.workers}")


@dataclass
class TrainResult:
    step: int
    status: str  # "completed" or "interrupted"
    checkpoint: Path
    signal: int | None = None
    last_loss: float | None = None
