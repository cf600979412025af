"""The learning rate as a pure function of the step, and the wall-clock plan: the one place
where a run of `--minutes` decides how many steps it trains."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from shortcut_models import distributed
from shortcut_models.config import TrainConfig
from shortcut_models.distributed import Dist

# A wall-clock budget is turned into a step count once the steps after the first PLAN_SKIP
# (allocator and kernel warm-up) have been timed up to step PLAN_STEPS and for at least
# PLAN_SECONDS (or a twentieth of the budget, if less).
PLAN_SKIP = 3
PLAN_STEPS = 20
PLAN_SECONDS = 15.0


def learning_rate(config: TrainConfig, step: int, total_steps: int | None) -> float:
    """Linear warm-up, then constant or cosine decay to zero at `total_steps` (None: a
    wall-clock budget not planned yet, and the cosine is held at its start)."""
    scale = (
        min(1.0, (step + 1) / config.optimisation.warmup_steps)
        if config.optimisation.warmup_steps
        else 1.0
    )
    if config.optimisation.lr_schedule == "cosine" and total_steps is not None:
        progress = max(0, step - config.optimisation.warmup_steps) / max(
            1, total_steps - config.optimisation.warmup_steps
        )
        scale *= 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.optimisation.lr * scale


@dataclass(frozen=True)
class Plan:
    """What a run will do, decided from its first timed steps."""

    steps: int  # the run's total step count
    rate: float  # training steps per second, measured
    seconds_left: float  # to the last step at that rate


class WallClockPlan:
    """`--minutes M` as a step count: the steps after the first PLAN_SKIP are timed, and at the
    first step from `plan_at` on when they have run for `probe_seconds` the count that fits the
    budget is decided, once, as the mean over processes (every rank plans the same count at the
    same step). A run resumed after that point has nothing left to plan. With `measure` a run of
    a fixed step count is timed the same way (its Plan keeps the count), so a caller can say when
    it will end."""

    def __init__(
        self,
        minutes: float,
        step: int,
        dist: Dist,
        device: torch.device,
        steps: int = 0,
        measure: bool = False,
    ) -> None:
        self.minutes, self.steps, self.dist, self.device = minutes, steps, dist, device
        self.pending = (minutes > 0 or measure) and step < PLAN_STEPS
        self.probe_step = step + PLAN_SKIP
        self.plan_at = max(PLAN_STEPS, step + PLAN_SKIP + 5)
        self.probe_seconds = min(PLAN_SECONDS, minutes * 3)
        self.start = self.probe_tick = time.perf_counter()

    def begin(self) -> None:
        """Start the clock (the loop's first step)."""
        self.start = time.perf_counter()

    def after_step(self, step: int) -> Plan | None:
        """The plan at the step where it is decided; None at every other."""
        if not self.pending:
            return None
        now = time.perf_counter()
        if step == self.probe_step:
            self.probe_tick = now
            return None
        if step < self.plan_at:
            return None
        timed = now - self.probe_tick >= self.probe_seconds
        if not distributed.any_rank(timed, self.dist, self.device):
            return None
        rate = (step - self.probe_step) / max(now - self.probe_tick, 1e-9)
        self.pending = False
        if self.minutes > 0:
            left = max(0.0, self.minutes * 60 - (now - self.start))
            planned = torch.tensor(float(step + int(rate * left)))
            steps = max(step, int(distributed.all_mean(planned.to(self.device), self.dist).item()))
        else:
            steps = max(step, self.steps)
        return Plan(steps, rate, (steps - step) / max(rate, 1e-9))
