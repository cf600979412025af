"""SIGINT and SIGTERM during training: the loop finishes its step, saves and returns; a second
signal while that save runs is ignored (it says so), so the save is never cut short."""

from __future__ import annotations

from collections.abc import Callable

import torch

from shortcut_models import distributed, logs
from shortcut_models.distributed import Dist
from shortcut_models.interrupts import SignalHandlers

log = logs.get(__name__)

STOP_EVERY = 10  # several processes agree on a stop every this many steps (a collective)


class StopSignals(SignalHandlers):
    """Installed for the length of a `with` block; `step` says which step a stop saves."""

    def __init__(self, dist: Dist, device: torch.device, log_every: int, step: Callable[[], int]):
        super().__init__(self._on_signal)
        self.dist, self.device, self.log_every, self.step = dist, device, log_every, step
        self.signum: int | None = None

    def requested(self, step: int) -> bool:
        """Whether to stop before step `step`: one process reads its flag; several agree on it
        (a collective) every STOP_EVERY steps and at logging steps, so all stop at one step."""
        signalled = self.signum is not None
        if not self.dist.enabled:
            return signalled
        if step % STOP_EVERY and step % self.log_every:
            return False
        return distributed.any_rank(signalled, self.dist, self.device)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # already stopping: the save must not be cut short
            step = self.step()
            log.info(f"signal {signum} ignored: saving the checkpoint at step {step}, please wait")
            return
        self.signum = signum
