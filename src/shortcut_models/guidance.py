"""Classifier-free guidance, shared by the sampler and the bootstrap targets."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from shortcut_models.distributed import unwrap

Network = Callable[..., torch.Tensor]


def guided_velocity(
    model: Network,
    x: torch.Tensor,
    t: torch.Tensor,
    d: torch.Tensor,
    y: torch.Tensor | None,
    scale: float,
    null_class: int,
    num_guided: int | None = None,
) -> torch.Tensor:
    """v_uncond + scale * (v_cond - v_uncond) for the first `num_guided` samples (default: all).

    The conditional and unconditional passes share one batched network call. Without labels, or
    with scale 1, this is a single plain call. A network with a guidance input (intrinsic
    guidance) is told the scale instead: one call, no unconditional pass.
    """
    n = x.shape[0] if num_guided is None else num_guided
    if y is None:
        return model(x, t, d, y)
    if has_guidance_input(model):
        w = torch.ones_like(t)
        w[:n] = scale
        return model(x, t, d, y, w=w)
    if scale == 1.0 or n == 0:
        return model(x, t, d, y)
    cond, uncond = conditional_pair(model, x, t, d, y, null_class, n)
    return torch.cat([uncond + scale * (cond[:n] - uncond), cond[n:]])


def conditional_pair(
    model: Network,
    x: torch.Tensor,
    t: torch.Tensor,
    d: torch.Tensor,
    y: torch.Tensor,
    null_class: int,
    num_unconditional: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional output of every row, unconditional output of the first `num_unconditional`
    rows, default all) from one batched network call."""
    n = x.shape[0] if num_unconditional is None else num_unconditional
    null = torch.full_like(y[:n], null_class)
    out = model(
        torch.cat([x, x[:n]]), torch.cat([t, t[:n]]), torch.cat([d, d[:n]]), torch.cat([y, null])
    )
    return out[: x.shape[0]], out[x.shape[0] :]


def has_guidance_input(model: Network) -> bool:
    """Whether the network (or the one under a DDP / compile wrapper) takes a guidance scale."""
    return bool(getattr(unwrap(model), "guidance_input", False))


# A guidance scale per step budget: ((from_steps, scale), ...) with from_steps ascending and the
# first at 1, so every budget has one. Few-step samples want more guidance than many-step ones
# (the demo's U-Net: CFG 2.5 is best at 1 step, 2 at 2, 1.75 from 4; demo_cfg_validation.md).
GuidanceSchedule = tuple[tuple[int, float], ...]


# the largest guidance scale any command, the export and the playground accept: the useful range
# is 1 to about 4; far beyond it the samples only saturate, and 1e39 overflows float32 to NaN
MAX_SCALE = 20.0


def check_scale(scale: float, what: str = "the guidance scale") -> float:
    """`scale` if it is a number in [0, MAX_SCALE], else a ValueError saying so (the one check
    every command, the export and the playground apply)."""
    if not (math.isfinite(scale) and 0.0 <= scale <= MAX_SCALE):
        raise ValueError(f"{what} must be finite and in [0, {MAX_SCALE:g}], got {scale:g}")
    return scale


def parse_entry(text: str) -> tuple[int, float]:
    """ "2" -> (1, 2.0): a bare scale applies from 1 step; "4:1.75" -> (4, 1.75): from 4 steps
    on. Raises ValueError with the reason."""
    steps_text, colon, scale_text = text.strip().rpartition(":")
    try:
        if colon and not steps_text:
            raise ValueError
        steps = int(steps_text) if colon else 1
        scale = float(scale_text)
    except ValueError:
        raise ValueError(f"{text!r} is not SCALE or STEPS:SCALE (e.g. 2 or 4:1.75)") from None
    if steps < 1:
        raise ValueError(f"{text!r}: the step count must be at least 1")
    check_scale(scale, f"{text!r}: the guidance scale")
    return steps, scale


def schedule_from(entries: list[tuple[int, float]]) -> GuidanceSchedule:
    """Entries of `parse_entry` -> a schedule (sorted); one scale per start, one from 1 step."""
    starts = [steps for steps, _ in entries]
    twice = sorted({steps for steps in starts if starts.count(steps) > 1})
    if twice:
        raise ValueError(f"two guidance scales from {twice[0]} steps")
    if 1 not in starts:
        raise ValueError("the first guidance scale applies from 1 step: give a bare SCALE")
    return tuple(sorted(entries))


NO_GUIDANCE: GuidanceSchedule = ((1, 1.0),)


def as_schedule(cfg: float | GuidanceSchedule) -> GuidanceSchedule:
    """One scale (every budget) or a schedule, as a schedule."""
    return ((1, float(cfg)),) if isinstance(cfg, int | float) else tuple(cfg)


def guides(schedule: GuidanceSchedule) -> bool:
    """Whether any budget is sampled with a scale other than 1."""
    return any(scale != 1.0 for _, scale in schedule)


def scale_for(schedule: GuidanceSchedule, steps: int) -> float:
    """The scale of the last entry whose step count is at most `steps`."""
    return [scale for start, scale in schedule if start <= steps][-1]


def describe_schedule(schedule: GuidanceSchedule) -> str:
    """((1, 2.0), (4, 1.75)) -> "2 (1.75 from 4 steps)"."""
    rest = ", ".join(f"{scale:g} from {start} steps" for start, scale in schedule[1:])
    return f"{schedule[0][1]:g}" + (f" ({rest})" if rest else "")
