"""The run's length: the one place where `--steps` and `--minutes` decide how many steps a run
trains (`WallClockPlan`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from shortcut_models import distributed
from shortcut_models.config import Training
from shortcut_models.distributed import Dist

# A wall-clock budget is turned into a step count once the steps after the first PLAN_SKIP
# (allocator and kernel warm-up) have been timed up to step PLAN_STEPS and for at least
# PLAN_SECONDS (or a twentieth of the budget, if less).
PLAN_SKIP = 3
PLAN_STEPS = 20
PLAN_SECONDS = 15.0
# A CPU often runs its first seconds faster than the rest (a laptop's boost before it throttles,
# a shared host's neighbours): the count is revised when these shares of the budget have passed,
# from the rate since the last decision (the demo planned 10.4 steps/s from its first 15 s, then
# trained at 8.9 and overran its 8 minutes by 1.3; benchmarks/results/demo_mnist_epyc.md).
REVISE_AT = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Plan:
    """What a run will do, decided from its first timed steps."""

    steps: int  # the run's total step count
    rate: float  # training steps per second, measured
    seconds_left: float  # to the last step at that rate
    revised: bool = False  # a revision of the count planned before (REVISE_AT)


class WallClockPlan:
    """The run's total step count (`total`): `--steps`, or `--minutes M` as a step count. For a
    budget the steps after the first PLAN_SKIP are timed, and at the first step from `plan_at` on
    when they have run for `probe_seconds` the count that fits the budget is decided, once, as
    the mean over processes (every rank plans the same count at the same step); it is run state,
    kept in the checkpoint (`state_dict`), so a run resumed after that point continues it. The
    process that planned revises the count at the REVISE_AT shares of the budget from the rate
    measured since its last decision, so the run still ends on time when its speed drifts. With
    `measure` a run of a fixed step count is timed the same way (its Plan keeps the count), so a
    caller can say when it will end."""

    def __init__(
        self, training: Training, step: int, dist: Dist, device: torch.device, measure: bool = False
    ) -> None:
        minutes = training.minutes
        self.minutes, self.steps, self.dist, self.device = minutes, training.steps, dist, device
        self.planned: int | None = None  # the count a budget was turned into
        self.pending = (minutes > 0 or measure) and step < PLAN_STEPS
        self.probe_step = step + PLAN_SKIP
        self.plan_at = max(PLAN_STEPS, step + PLAN_SKIP + 5)
        self.probe_seconds = min(PLAN_SECONDS, minutes * 3)
        self.start = self.probe_tick = time.perf_counter()
        self.revisions: list[float] = []  # budget shares still to revise at (once planned)
        self.since: tuple[int, float] | None = None  # (step, time) the rate is measured from

    @property
    def total(self) -> int:
        """The steps the run trains (a budget's: --steps until it is planned)."""
        return self.planned if self.planned is not None and self.minutes > 0 else self.steps

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.planned is None else {"planned_steps": torch.tensor(self.planned)}

    def load_state_dict(self, state: dict[str, torch.Tensor], stored_steps: int) -> None:
        """A resumed budget run's planned count (checkpoints written before it was run state
        stored it as their config's steps: `stored_steps`)."""
        if "planned_steps" in state:
            self.planned = int(state["planned_steps"])
        elif self.minutes > 0:
            self.planned = stored_steps

    def begin(self) -> None:
        """Start the clock (the loop's first step)."""
        self.start = time.perf_counter()

    def after_step(self, step: int) -> Plan | None:
        """The plan at the step where it is decided or revised; None at every other."""
        if not self.pending:
            return self._revise(step) if self.revisions else None
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
            steps = self._fit(step, rate, now)
            self.revisions = list(REVISE_AT)
        else:
            steps = max(step, self.steps)
        return Plan(steps, rate, (steps - step) / max(rate, 1e-9))

    def _revise(self, step: int) -> Plan | None:
        """The count again, from the rate since the last decision, once the next REVISE_AT share
        of the budget has passed (on every rank at the same step)."""
        now = time.perf_counter()
        budget = self.minutes * 60
        due = now - self.start >= self.revisions[0] * budget
        if not distributed.any_rank(due, self.dist, self.device):
            return None
        self.revisions.pop(0)
        assert self.since is not None
        since_step, since_tick = self.since
        rate = (step - since_step) / max(now - since_tick, 1e-9)
        steps = self._fit(step, rate, now)
        return Plan(steps, rate, (steps - step) / max(rate, 1e-9), revised=True)

    def _fit(self, step: int, rate: float, now: float) -> int:
        """The count that fits the budget's time left at `rate` (the mean over processes), kept
        as `planned`; the rate of the next revision is measured from here."""
        left = max(0.0, self.minutes * 60 - (now - self.start))
        planned = torch.tensor(float(step + int(rate * left)))
        steps = max(step, int(distributed.all_mean(planned.to(self.device), self.dist).item()))
        self.planned, self.since = steps, (step, now)
        return steps
