"""How and where a run executes (`RunOptions`): device, precision, memory layout, saving,
logging, processes. Not stored with the run: a checkpoint resumes under other options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shortcut_models.devices import MEMORY_FORMATS, PRECISIONS
from shortcut_models.errors import UsageError
from shortcut_models.options import option


@dataclass
class RunOptions:
    """How and where a run executes (the `shortcut train` flags of its fields are generated).
    On CPU with the defaults none of it changes the numbers; grad_accum x world size sets how
    the batch is split (see `train.trainer`), and bf16 rounds differently from fp32."""

    out_dir: Path
    device: str = option(
        "auto", "cpu, cuda, cuda:N, mps, or auto: CUDA, then Apple's GPU (mps), then the CPU"
    )
    resume: bool = option(False, "continue the checkpoint in --out exactly where it stopped")
    log_every: int = option(100, "steps between metrics.jsonl records")
    save_every: int = option(1000, "steps between checkpoints")
    progress: bool = option(
        True, "show a progress bar (where stderr is not a terminal: a log line every 30 s)"
    )
    tensorboard: bool = option(True, "write TensorBoard logs if tensorboard is installed")
    precision: str = option(
        "auto",
        "bf16 autocast (weights, loss and EMA stay fp32); auto: bf16 on a GPU that supports it, "
        "fp32 on CPU; bf16-if-native: bf16 wherever the hardware computes it (bf16 GPUs, CPUs "
        "with AMX or AVX512-BF16), else fp32",
        choices=PRECISIONS,
    )
    memory_format: str = option(
        "contiguous",
        "layout of a convolutional backbone's weights and activations: contiguous, channels-last, "
        "or auto (channels-last when training in fp32 on a CPU, where oneDNN's convolutions run "
        "faster in it; the cpu-small recipe's choice)",
        choices=MEMORY_FORMATS,
    )
    compile: bool = option(False, "torch.compile the network (the no-grad target passes too)")
    grad_accum: int = option(
        1,
        "micro-batches per process per step; the global --batch-size is split into processes x "
        "grad-accum micro-batches",
    )
    workers: int | None = option(
        None, "data-loading processes (auto: 4 on GPU, 0 on CPU)", unset="auto"
    )
    recompute_activations: bool = option(
        False, "recompute DiT blocks in the backward pass (less memory, about 30% more time)"
    )
    fsdp: bool = option(
        False,
        "shard weights, gradients and optimizer state across processes (large DiTs; launch "
        "with torchrun --nproc_per_node N)",
    )

    def __post_init__(self) -> None:
        for name in ("log_every", "save_every", "grad_accum"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"workers must be >= 0, got {self.workers}")
