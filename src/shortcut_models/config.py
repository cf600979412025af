"""The records of a run: its training configuration and the data's spec (stored as JSON in its
checkpoint), and how and where it executes (`RunOptions`, not stored)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shortcut_models.devices import MEMORY_FORMATS, PRECISIONS
from shortcut_models.errors import UsageError
from shortcut_models.options import option

LR_SCHEDULES = ("constant", "cosine")
EVAL_WEIGHTS = ("ema", "model")
MAX_SEED = 2**63  # seeds are 63-bit (torch.manual_seed takes at most 64 bits)
MAX_MINUTES = 1_000_000  # about two years: any longer budget cannot be planned as a step count

# Vectors (2-D toys, arrays: MLP, Wasserstein metrics), pixel images, or VAE latents of images.
DataKind = Literal["vector", "image", "latent"]

# Fields that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = frozenset({"steps"})


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"{name.replace('_', '-')} must be positive, got {value}")


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{name.replace('_', '-')} must be finite, got {value}")
        if value < 0:
            raise UsageError(f"{name.replace('_', '-')} must be >= 0, got {value}")


@dataclass
class Choice:
    """A registered data set, objective or backbone by name, with its options (checked by the
    dataclass of options that name registers)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Training:
    """How long and on what: steps and batch, a wall-clock budget, the seed, the weights that are
    evaluated, where the network starts, the recipe the run started from."""

    steps: int = option(5000, "total number of optimizer steps")
    batch_size: int = option(256, "samples per step")
    # `steps` is re-planned from the step rate measured over the first steps (train.schedule) and
    # stored, so a resumed run continues the same plan
    minutes: float = option(
        0.0,
        "train for this wall-clock budget instead of --steps: the step count (and the cosine "
        "schedule) is planned from the rate measured over the first steps (at least 20 steps "
        "and 15 s) and stored (0: off)",
    )
    seed: int = option(0, "seed of initial weights, data order and noise")
    eval_weights: str = option(
        "ema",
        "weights sample / evaluate / compare use: ema, or model (the raw weights, as the "
        "reference evaluates)",
        choices=EVAL_WEIGHTS,
    )
    init_from: str = option(
        "",
        "shortcut / ism / meanflow: start the network (and its EMA) from this run's EMA weights, "
        "same backbone and data; step-size and guidance embeddings the source lacks start at "
        "zero; the optimiser starts fresh (fine-tune a flow-matching model into a few-step one)",
        path=True,
    )
    recipe: str = ""  # the named recipe the run started from (its values are in the config)

    def __post_init__(self) -> None:
        _check_positive(steps=self.steps, batch_size=self.batch_size)
        _check_non_negative(minutes=self.minutes, seed=self.seed)
        if self.seed >= MAX_SEED:
            raise UsageError(f"seed must be below 2^63, got {self.seed}")
        if self.minutes > MAX_MINUTES:
            raise UsageError(
                f"minutes must be at most {MAX_MINUTES:,} (about two years), got {self.minutes:g}"
            )
        if self.eval_weights not in EVAL_WEIGHTS:
            raise UsageError(
                f"eval-weights must be one of {', '.join(EVAL_WEIGHTS)}, got {self.eval_weights!r}"
            )


@dataclass
class Optimisation:
    """AdamW, its learning-rate schedule and the weight EMA. Defaults follow the reference: lr
    1e-4, betas (0.9, 0.999), weight decay 0.1, EMA 0.999."""

    lr: float = option(1e-4, "AdamW learning rate")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.999, "AdamW beta2")
    weight_decay: float = option(0.1, "AdamW weight decay")
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (0: none)")
    lr_schedule: str = option(
        "constant",
        "constant, or cosine decay to zero at --steps (the reference's use_cosine)",
        choices=LR_SCHEDULES,
    )
    grad_clip: float = option(0.0, "clip the global gradient norm to this (0: off)")
    ema_decay: float = option(0.999, "decay of the weight EMA used for sampling and targets")

    def __post_init__(self) -> None:
        _check_positive(lr=self.lr)
        _check_non_negative(
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            grad_clip=self.grad_clip,
        )
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(
                f"lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name.replace('_', '-')} must be in [0, 1)")


CHOICES = ("data", "objective", "backbone")
SECTIONS: dict[str, type] = {"training": Training, "optimisation": Optimisation}


@dataclass
class TrainConfig:
    """Everything that defines a training run (not where or how fast it runs), by section. Its
    flat view names each setting as its flag does (`lr`, `steps`, `objective_options`): the
    merge of defaults, recipe and flags works on it (`from_flat`, `flat`)."""

    data: Choice = field(default_factory=lambda: Choice("checkerboard"))
    objective: Choice = field(default_factory=lambda: Choice("shortcut"))
    backbone: Choice = field(default_factory=lambda: Choice("mlp"))
    training: Training = field(default_factory=Training)
    optimisation: Optimisation = field(default_factory=Optimisation)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any] | None = None, /, **more: Any) -> TrainConfig:
        """From flag-named values (`lr`, `data_options`, ...), as a mapping or keywords;
        missing ones take defaults: `TrainConfig.from_flat(data="moons", steps=4000, lr=1e-3)`."""
        values = {**(values or {}), **more}
        sections = {name: {f.name for f in dataclasses.fields(c)} for name, c in SECTIONS.items()}
        known = {*CHOICES, *(f"{c}_options" for c in CHOICES), *set().union(*sections.values())}
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        defaults = cls()
        choices = {
            c: Choice(
                values.get(c, getattr(defaults, c).name), dict(values.get(f"{c}_options", {}))
            )
            for c in CHOICES
        }
        built = {
            name: SECTIONS[name](**{k: v for k, v in values.items() if k in fields})
            for name, fields in sections.items()
        }
        return cls(**choices, **built)

    def flat(self) -> dict[str, Any]:
        """The flag-named view: {data, data_options, ..., steps, ..., lr, ...}."""
        out: dict[str, Any] = {}
        for c in CHOICES:
            choice = getattr(self, c)
            out[c], out[f"{c}_options"] = choice.name, dict(choice.options)
        for name in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, name)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From `to_dict`'s sections, or from the flat record checkpoints stored before them."""
        if not any(isinstance(values.get(c), dict) for c in CHOICES):
            return cls.from_flat(values)
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if key in CHOICES and isinstance(value, dict):
                flat[key], flat[f"{key}_options"] = value.get("name"), value.get("options", {})
            elif key in SECTIONS and isinstance(value, dict):
                flat.update(value)
            else:
                raise UsageError(f"unknown config field(s): {key}")
        return cls.from_flat(flat)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with flag-named settings changed (`steps=2`, `objective="flow_matching"`)."""
        return TrainConfig.from_flat({**self.flat(), **changes})

    def differences(self, other: TrainConfig) -> list[str]:
        """Flag names of the settings whose values differ."""
        mine, theirs = self.flat(), other.flat()
        return [name for name in mine if mine[name] != theirs[name]]


@dataclass(frozen=True)
class DataSpec:
    """What a trained model needs to know about its data, stored in every checkpoint: sampling
    reads this instead of the data, so a checkpoint trained on a folder or on latent shards
    samples on a machine that has neither."""

    name: str
    kind: DataKind
    shape: tuple[int, ...]
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    vae: str | None = None  # latent data: the AutoencoderKL that decodes samples
    scaling_factor: float | None = None
    fingerprint: str | None = None  # image folders: a hash of the file listing (names, sizes)

    @classmethod
    def of(cls, source: Any) -> DataSpec:
        return cls(
            name=source.name,
            kind=source.kind,
            shape=tuple(source.shape),
            num_classes=source.num_classes,
            class_names=list(source.class_names),
            vae=source.vae,
            scaling_factor=source.scaling_factor,
            fingerprint=source.fingerprint,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DataSpec:
        values = json.loads(text)
        values["shape"] = tuple(values["shape"])
        return cls(**values)


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
    progress: bool = option(True, "show a progress bar")
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
    activation_checkpointing: bool = option(
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
