"""Generate samples at a step budget from seeded noise, the same noise for every budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shortcut_models.distributed import SINGLE, Dist, shard_chunks
from shortcut_models.errors import UsageError
from shortcut_models.guidance import NO_GUIDANCE, GuidanceSchedule, as_schedule, scale_for
from shortcut_models.objectives import Objective
from shortcut_models.sampling import check_steps, sample, seeded_noise
from shortcut_models.seeding import derive_seed


@dataclass
class SamplingPlan:
    """Which samples to draw from a run: `num` per step budget, from noise seeded by `seed` (the
    same for every budget), guided by the schedule `cfg` (or one scale for every budget), at
    most `batch` per network call."""

    steps: Sequence[int]
    num: int = 2000
    seed: int = 0
    cfg: GuidanceSchedule = NO_GUIDANCE
    batch: int = 4096

    def __post_init__(self) -> None:
        self.cfg = as_schedule(self.cfg)

    def scale(self, steps: int) -> float:
        """The guidance scale of budget `steps`."""
        return scale_for(self.cfg, steps)


def generate(
    model: nn.Module,
    objective: Objective,
    shape: tuple[int, ...],
    num: int,
    steps: int,
    seed: int = 0,
    batch_size: int = 4096,
    labels: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    dist: Dist = SINGLE,
    then: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`num` samples in `steps` steps; the noise depends only on `seed`, so budgets share it.

    `then` maps each chunk of samples as soon as it is drawn (to its features, say), so that only
    its result is kept for all `num`. Under torchrun the chunks of `batch_size` are dealt to the
    processes and gathered on all of them: the result equals a single process's.
    """
    if num < 1:
        raise UsageError(f"number of samples must be positive, got {num}")
    if batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    spec = objective.sampling_rule()
    check_steps(steps, spec)
    device = next(model.parameters()).device
    noise = seeded_noise((num, *shape), seed)

    def make(start: int, stop: int) -> torch.Tensor:
        chunk = noise[start:stop].to(device)
        y = None if labels is None else labels[start:stop].to(device)
        generator = torch.Generator().manual_seed(derive_seed(seed, start))  # renoising samplers
        x = sample(
            model, chunk, steps, spec, y, cfg_scale, objective.null_class, generator=generator
        )
        return x.float() if then is None else then(x.float())

    return shard_chunks(num, batch_size, dist, make)
