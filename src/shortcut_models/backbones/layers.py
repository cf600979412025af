"""The two adaLN operations every backbone writes, as functions (DiT's `modulate`): plain tensor
code, overridable through `__torch_function__` so that `forward_mode` can give them exact
tangent rules."""

from __future__ import annotations

import torch
from torch.overrides import handle_torch_function, has_torch_function


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (1 + scale) + shift."""
    if has_torch_function((x, shift, scale)):
        return handle_torch_function(modulate, (x, shift, scale), x, shift, scale)
    return x * (1 + scale) + shift


def gated(x: torch.Tensor, gate: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """adaLN's gated residual: x + gate * branch."""
    if has_torch_function((x, gate, branch)):
        return handle_torch_function(gated, (x, gate, branch), x, gate, branch)
    return x + gate * branch
