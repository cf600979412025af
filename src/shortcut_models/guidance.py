"""Classifier-free guidance, shared by the sampler and the bootstrap targets."""

from __future__ import annotations

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
