"""The objective interface: `loss(net, target_net, x1, y, generator) -> (loss, info)`.

An objective is a small dataclass of options that makes every network call its loss needs (as
EDM's loss classes), so the trainer owns only optimisation and never knows which one it runs.
Most build a `TrainingBatch` with a pure `targets` method (checked against hand-computed cases)
and regress the network's output on it; the base class's `loss` does that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from shortcut_models.errors import UsageError
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule

# The reference's interpolation keeps a sliver of noise at t = 1: x_t = (1 - (1 - EPS) t) x0 + t x1.
EPS = 1e-5


@dataclass
class TrainingBatch:
    """Inputs for one network call and the velocity the network should output for them."""

    x_t: torch.Tensor
    t: torch.Tensor
    d: torch.Tensor
    y: torch.Tensor | None
    target: torch.Tensor
    groups: dict[str, slice] = field(default_factory=dict)  # named rows, each logged apart
    w: torch.Tensor | None = None  # guidance scale per row, for intrinsic-guidance networks

    def inputs(self) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """(args, kwargs) of the network call on these rows."""
        return (self.x_t, self.t, self.d, self.y), ({} if self.w is None else {"w": self.w})


def broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, ...) so per-sample scalars multiply samples of any shape."""
    return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or in float64 where it is already."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def rows_of(y: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    """Rows `rows` of optional class labels (an unconditional batch has None)."""
    return None if y is None else y[rows]


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Point at time t on the straight path from noise x0 (t = 0) to data x1 (t = 1)."""
    tb = broadcast(t, x1)
    return (1 - (1 - EPS) * tb) * x0 + tb * x1


def flow_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """d x_t / d t of `interpolate`."""
    return x1 - (1 - EPS) * x0


def adaptive_loss(err: torch.Tensor, p: float, c: float, dims: int) -> torch.Tensor:
    """MeanFlow's adaptive weighting of per-sample losses, as the paper defines it on the squared
    error summed over a sample's `dims` dimensions: sg(w) * ||e||^2 with w = 1 / (||e||^2 + c)^p
    (p = 0.5: about a pseudo-Huber loss; p = 1: about a log loss). `err` is the per-sample mean
    (our MSE); weighting the mean instead would act as c x dims. p = 0 returns `err` unchanged."""
    if p == 0:
        return err
    total = err * dims
    return (total.detach() + c).pow(-p) * total


def consistency_velocity(
    x_t: torch.Tensor, t: torch.Tensor, x_t2: torch.Tensor, t2: torch.Tensor, v2: torch.Tensor
) -> torch.Tensor:
    """The velocity from (x_t, t) straight to the data point predicted at (x_t2, t2):
    x1_hat = x_t2 + (1 - t2) v2, target = (x1_hat - x_t) / (1 - t) (the reference's v-form)."""
    x1_hat = x_t2 + broadcast(1 - t2, x_t2) * v2
    return (x1_hat - x_t) / broadcast(1 - t, x_t)


def grid_times(
    n: int, sections: torch.Tensor | int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """t = k / sections, k uniform in 0 .. sections - 1 (`sections` may differ per row)."""
    sections = torch.as_tensor(sections, dtype=torch.float32, device=device).expand(n)
    return torch.floor(torch.rand(n, generator=generator, device=device) * sections) / sections


@dataclass
class AttachContext:
    """What an objective may need beyond a batch: the networks (the trained one and its EMA,
    the one evaluated), the run's config and data, whether the run starts fresh (not resumed),
    and `load_run(path, weights, device)` to open another trained run (a teacher) without the
    objective importing the checkpoint layer."""

    model: nn.Module
    ema: nn.Module
    config: Any
    data: Any
    device: torch.device
    fresh: bool
    load_run: Callable[..., Any]


def is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and n & (n - 1) == 0


def num_levels(denoise_timesteps: int) -> int:
    """log2(M): the step levels 2^0 ... 2^-(log2 M - 1) above the finest 1/M (M a power of two)."""
    return denoise_timesteps.bit_length() - 1


@dataclass
class Objective:
    """Base class. Subclasses are dataclasses whose fields are their options."""

    name: ClassVar[str] = ""
    shards_with_fsdp: ClassVar[bool] = True  # False where the objective copies whole networks
    time_scale: ClassVar[float | None] = None  # t multiplier of the backbone (None: its 1000)
    # what a run of it needs from a flow-matching teacher run first: "" nothing, "teacher" the
    # run itself (its `teacher` option), "pairs" reflow pairs sampled from it (`pairs` option)
    needs: ClassVar[str] = ""

    denoise_timesteps: int = option(
        128, "M: the grid of t and the smallest step 1/M, a power of two"
    )
    class_dropout_prob: float = option(
        0.1, "probability of replacing a label by the null class, for CFG"
    )
    num_classes: int = 0  # set from the data; 0 means unconditional

    # training progress, set by the trainer before each step (curricula and phases read it)
    step: int = field(default=0, init=False, repr=False)
    total_steps: int = field(default=1, init=False, repr=False)
    paired: torch.Tensor | None = field(default=None, init=False, repr=False)  # during `loss`

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.init and isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"{f.name} must be a finite number, got {value}")
        if not is_power_of_two(self.denoise_timesteps) or self.denoise_timesteps < 2:
            raise UsageError(
                f"denoise_timesteps must be a power of two >= 2, got {self.denoise_timesteps}"
            )
        if not 0.0 <= self.class_dropout_prob <= 1.0:
            raise UsageError(f"class_dropout_prob must be in [0, 1], got {self.class_dropout_prob}")
        if self.num_classes < 0:
            raise UsageError(f"num_classes must be >= 0, got {self.num_classes}")

    @property
    def null_class(self) -> int:
        return self.num_classes

    def twin_ema_decay(self) -> float:
        """Decay of a second EMA that computes the targets (0: none; see `TwinTargetEMA`)."""
        return 0.0

    def loss(
        self,
        net: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
        paired: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch of data x1 (labels y): `targets`, then one call of `net`
        (what the trainer optimises; DDP / compile wrappers included) on their inputs. Returns
        the loss and detached terms to log. `paired`: the batch's noise, drawn and paired with it
        on the host (`host_noise`), which the targets then use instead of drawing their own."""
        self.paired = paired
        try:
            batch = self.targets(net, target_net, x1, y, generator)
        finally:
            self.paired = None
        args, kwargs = batch.inputs()
        return self.regression_loss(net(*args, **kwargs), batch)

    def host_noise(self, x1: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """Noise for the host rows x1, for objectives whose noise depends on the data (minibatch
        optimal-transport pairing: an exact assignment is a host algorithm). The trainer calls it
        before the batch goes to the device, so that no step reads the device back; None (the
        default): the targets draw their noise on the device."""
        return None

    def targets(
        self,
        model: nn.Module,
        target_net: nn.Module,
        x1: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
    ) -> TrainingBatch:
        """Network inputs and regression targets for data x1 (`model` is the network trained,
        `target_net` the one a target may come from: its EMA, or a twin EMA)."""
        raise NotImplementedError

    def regression_loss(
        self, pred: torch.Tensor, batch: TrainingBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The per-sample loss of the prediction `pred`, averaged; also the mean of each named
        group of rows."""
        per_sample = self.per_sample_loss(pred, batch)
        info = {
            f"loss_{name}": per_sample[rows].mean().detach()
            for name, rows in batch.groups.items()
            if rows.stop > rows.start
        }
        return per_sample.mean(), info

    def per_sample_loss(self, pred: torch.Tensor, batch: TrainingBatch) -> torch.Tensor:
        """Mean squared error of each row, in float32 at least (bf16 predictions widened;
        float64 kept, as the float64 parity checks need)."""
        return (at_least_fp32(pred) - at_least_fp32(batch.target)).pow(2).flatten(1).mean(1)

    def sampling_rule(self) -> SamplingRule:
        raise NotImplementedError

    @classmethod
    def backbone_defaults(cls) -> dict[str, Any]:
        """Backbone option defaults this objective changes (a config's own values win)."""
        return {} if cls.time_scale is None else {"time_scale": cls.time_scale}

    def network_inputs(self) -> dict[str, bool]:
        """What the network must take or give beyond s(x, t, d, y): `guidance_input`,
        `guidance_interval`, `velocity_head` (keyword arguments of every backbone)."""
        return {}

    def straight_batch(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator,
    ) -> TrainingBatch:
        """Flow-matching rows for the straight path x0 -> x1 at times t, told d = 1/M, labels
        dropped for CFG (flow matching draws (x0, x1) from noise and data, reflow from pairs)."""
        d = torch.full((x1.shape[0],), 1.0 / self.denoise_timesteps, device=x1.device)
        return TrainingBatch(
            x_t=interpolate(x0, x1, t),
            t=t,
            d=d,
            y=self.drop_labels(y, generator),
            target=flow_velocity(x0, x1),
        )

    # -- hooks for objectives that need more than a batch (all no-ops by default) -------------

    def attach(self, context: AttachContext) -> None:
        """Called once the trainer has built (or restored) the networks: load a teacher,
        initialise the student from it, check files."""

    def set_step(self, step: int, total_steps: int) -> None:
        self.step, self.total_steps = step, total_steps

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a resumed run needs back (saved in the checkpoint under `objective.`)."""
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""

    def drop_labels(
        self, y: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor | None:
        """Replace each label by the null class with probability class_dropout_prob."""
        if y is None or self.num_classes == 0 or self.class_dropout_prob == 0:
            return y
        drop = torch.rand(y.shape, generator=generator, device=y.device) < self.class_dropout_prob
        return torch.where(drop, torch.full_like(y, self.null_class), y)
