"""Progressive distillation (Salimans & Ho, 2022) of a flow-matching teacher, as the reference.

Training is cut into log2(M) equal phases. In phase p the student learns steps of
d = 2^(p+1) / M from two steps of d / 2 by the teacher (the mean of their velocities, clipped as
shortcut's targets), and at the start of every phase the teacher becomes a frozen copy of the
student's EMA, so the number of sampling steps halves each phase: M/2, M/4, ..., 1. The student
starts from the teacher checkpoint; the network is told the phase's d. The phase teacher is saved
in the checkpoint, so a resumed run continues exactly.

The reference's variant (`--recipe reference`): labels are not dropped (class_dropout_prob 0),
the target is not clipped (clip_target off), the network ignores d (step_input off: told the
constant 1/M, as its flow-matching teacher), and with its bootstrap_cfg on the teacher's half
steps are guided in the first phase only (first_phase_cfg_scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from shortcut_models.guidance import guided_velocity
from shortcut_models.objectives.base import (
    AttachContext,
    Objective,
    TrainingBatch,
    broadcast,
    interpolate,
    num_levels,
)
from shortcut_models.objectives.teacher import (
    copy_weights,
    frozen_copy,
    initialise_student,
    load_teacher,
)
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule

CLIP = 4.0


@dataclass
class ProgressiveDistillation(Objective):
    name = "progressive_distillation"
    needs = "teacher"
    shards_with_fsdp = False  # each phase copies the (sharded) student EMA into its teacher

    teacher: str = option("", "the flow-matching teacher: its run folder or checkpoint", path=True)
    clip_target: bool = option(
        True, "clip the distillation target to [-4, 4] as shortcut's (the reference: off)"
    )
    step_input: bool = option(
        True,
        "tell the network the phase's step size (off: the constant 1/M, as the reference's "
        "network, which ignores it)",
    )
    first_phase_cfg_scale: float = option(
        1.0, "CFG scale of the teacher's half steps in the first phase (1: none)"
    )
    teacher_network: nn.Module | None = field(default=None, init=False, repr=False)
    teacher_phase: int = field(default=-1, init=False, repr=False)
    student_ema: nn.Module | None = field(default=None, init=False, repr=False)

    def phase(self) -> int:
        phases = num_levels(self.denoise_timesteps)
        return min(phases - 1, self.step * phases // max(1, self.total_steps))

    def student_steps(self) -> int:
        """Sampling steps the student learns in the current phase: M/2, M/4, ..., 1."""
        return self.denoise_timesteps >> (self.phase() + 1)

    def attach(self, context: AttachContext) -> None:
        loaded = load_teacher(self.teacher, context, self.name)
        initialise_student(context, loaded)
        self.teacher_network = frozen_copy(loaded)
        self.student_ema = context.ema
        self.teacher_phase = 0

    def set_step(self, step: int, total_steps: int) -> None:
        super().set_step(step, total_steps)
        if self.teacher_network is not None and self.phase() != self.teacher_phase:
            copy_weights(self.teacher_network, self.student_ema)  # the new phase's teacher
            self.teacher_phase = self.phase()

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"teacher.{k}": v for k, v in self.teacher_network.state_dict().items()}
        return {**state, "phase": torch.tensor(self.teacher_phase)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        teacher = {k[len("teacher.") :]: v for k, v in tensors.items() if k.startswith("teacher.")}
        if teacher:
            self.teacher_network.load_state_dict(teacher)
            self.teacher_phase = int(tensors["phase"])

    @torch.no_grad()
    def targets(self, model, target_net, x1, y, generator) -> TrainingBatch:
        n = x1.shape[0]
        steps = self.student_steps()
        t = torch.randint(0, steps, (n,), generator=generator, device=x1.device).float() / steps
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x_t = interpolate(x0, x1, t)
        d = torch.full((n,), 1.0 / steps, device=x1.device)
        told = d if self.step_input else self.constant_d(n, x1)
        y = self.drop_labels(y, generator)
        target = self.distill_target(x_t, t, d, y)
        return TrainingBatch(x_t=x_t, t=t, d=told, y=y, target=target, groups={"pd": slice(0, n)})

    @torch.no_grad()
    def distill_target(
        self, x_t: torch.Tensor, t: torch.Tensor, d: torch.Tensor, y: torch.Tensor | None
    ) -> torch.Tensor:
        """The mean velocity of two teacher steps of d / 2 from (x_t, t) (guided in phase 0 by
        first_phase_cfg_scale), clipped unless clip_target is off."""
        half = d / 2
        told_half = half if self.step_input else self.constant_d(x_t.shape[0], x_t)
        scale = self.first_phase_cfg_scale if self.phase() == 0 else 1.0

        def teacher(x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
            net = self.teacher_network
            return guided_velocity(net, x, at, told_half, y, scale, self.null_class)

        v1 = teacher(x_t, t)
        x_mid = torch.clamp(x_t + broadcast(half, x_t) * v1, -CLIP, CLIP)
        v2 = teacher(x_mid, t + half)
        target = (v1 + v2) / 2
        return torch.clamp(target, -CLIP, CLIP) if self.clip_target else target

    def constant_d(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((n,), 1.0 / self.denoise_timesteps, device=like.device)

    def sampling_rule(self) -> SamplingRule:
        fixed = None if self.step_input else 1.0 / self.denoise_timesteps
        return SamplingRule(power_of_two=True, max_steps=self.denoise_timesteps, fixed_d=fixed)
