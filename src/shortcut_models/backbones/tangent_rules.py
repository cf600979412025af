"""Hand-written tangent rules for the layers the backbones use (registered in `dual.RULES`):
the value as the plain call computes it (the same numbers, with gradients), the tangent under
`no_grad` (nothing kept for the backward): one matmul per matmul, one fused kernel per
activation, layer norm from the kernel's own rstd, attention by `backbones.attention`'s
blockwise rule, adaLN's modulation and gated residual with each product added in one kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from shortcut_models.backbones.attention import attention, attention_tangent
from shortcut_models.backbones.dual import (
    RULES,
    Dual,
    Tangent,
    as_dual,
    by_autodiff,
    tangent_of,
    untangented,
)
from shortcut_models.backbones.layers import gated, modulate


def _accumulate(total: Tangent, *products: tuple[Tangent, Tangent]) -> Tangent:
    """total + the sum of a * b over the products (a, b) with both factors given (None: zero),
    each added in one kernel."""
    for a, b in products:
        if a is not None and b is not None:
            total = a * b if total is None else torch.addcmul(total, a, b)
    return total


def _add(a: Any, b: Any) -> Dual:
    a, b = as_dual(a), as_dual(b)
    value = a.value + b.value
    if a.tangent is None or b.tangent is None:
        return Dual(value, b.tangent if a.tangent is None else a.tangent)
    with torch.no_grad():
        return Dual(value, a.tangent + b.tangent)


def _products(fn: Callable[..., torch.Tensor], terms: Callable[..., tuple]) -> Callable[..., Dual]:
    """The rule of value = fn(*args) whose tangent is `terms(*duals)` = (total, (a, b), ...):
    total + the sum of the products, each added in one kernel."""

    def rule(*args: Any) -> Dual:
        duals = [as_dual(a) for a in args]
        value = fn(*(a.value for a in duals))
        if untangented(*duals):
            return Dual(value)
        with torch.no_grad():
            total, *products = terms(*duals)
            return Dual(value, _accumulate(total, *products))

    return rule


_mul = _products(torch.mul, lambda a, b: (None, (a.tangent, b.value), (a.value, b.tangent)))
# adaLN's x (1 + scale) + shift and x + gate * branch
_modulate = _products(
    modulate,
    lambda x, shift, scale: (shift.tangent, (x.value, scale.tangent), (x.tangent, 1 + scale.value)),
)
_gated = _products(
    gated,
    lambda x, gate, branch: (x.tangent, (gate.tangent, branch.value), (gate.value, branch.tangent)),
)


def _dense(func: Callable[..., torch.Tensor]) -> Callable[..., Dual]:
    """F.linear / F.conv2d: the tangent is the same map of the input's tangent, no bias."""

    def rule(a: Dual, weight: torch.Tensor, bias: torch.Tensor | None = None, *rest: Any) -> Dual:
        if isinstance(weight, Dual) or isinstance(bias, Dual):
            return by_autodiff(func, (a, weight, bias, *rest), {})
        value = func(a.value, weight, bias, *rest)
        if a.tangent is None:
            return Dual(value)
        with torch.no_grad():
            return Dual(value, func(a.tangent, weight, None, *rest))

    return rule


def _normalised_tangent(
    xhat: torch.Tensor, dx: torch.Tensor, rstd: torch.Tensor, dims: tuple[int, ...]
) -> torch.Tensor:
    """The tangent of xhat = (x - mean) rstd over `dims`: rstd (dx - mean(dx) - xhat mean(xhat
    dx)) (xhat has mean zero and mean square one up to eps)."""
    centred = dx - dx.mean(dims, keepdim=True)
    return centred.sub_(xhat * (xhat * dx).mean(dims, keepdim=True)).mul_(rstd)


def _layer_norm(a: Dual, normalized_shape: Any, weight=None, bias=None, eps=1e-5) -> Dual:
    """F.layer_norm: the value from the kernel it runs, which also returns the rstd the tangent
    needs; affine weights scale the tangent."""
    shape, w = tuple(normalized_shape), weight
    value, _, rstd = torch.native_layer_norm(a.value, shape, w, bias, eps)
    if a.tangent is None:
        return Dual(value)
    dims = tuple(range(-len(shape), 0))
    with torch.no_grad():
        xhat = value
        if w is not None or bias is not None:
            xhat = torch.native_layer_norm(a.value, shape, None, None, eps)[0]
        tangent = _normalised_tangent(xhat, a.tangent, rstd, dims)
        return Dual(value, tangent if w is None else tangent * w)


def _group_norm(a: Dual, num_groups: int, weight=None, bias=None, eps=1e-5) -> Dual:
    """F.group_norm over (N, C, ...) with its per-channel affine weights."""
    value = F.group_norm(a.value, num_groups, weight, bias, eps)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        shape, groups = a.value.shape, (a.value.shape[0], num_groups, -1)
        x = a.value.reshape(groups)
        var, mean = torch.var_mean(x, -1, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var + eps)
        tangent = _normalised_tangent((x - mean) * rstd, a.tangent.reshape(groups), rstd, (-1,))
        tangent = tangent.reshape(shape)
        if weight is not None:
            tangent = tangent * weight.view(1, -1, *([1] * (len(shape) - 2)))
    return Dual(value, tangent)


def _gelu(a: Dual, approximate: str = "none") -> Dual:
    value = F.gelu(a.value, approximate=approximate)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        tangent = torch.ops.aten.gelu_backward(a.tangent, a.value, approximate=approximate)
    return Dual(value, tangent)


def _silu(a: Dual, inplace: bool = False) -> Dual:
    value = F.silu(a.value)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        return Dual(value, torch.ops.aten.silu_backward(a.tangent, a.value))


def _cat(tensors: Any, dim: int = 0) -> Dual:
    duals = [as_dual(a) for a in tensors]
    value = torch.cat([a.value for a in duals], dim)
    if untangented(*duals):
        return Dual(value)
    with torch.no_grad():
        return Dual(value, torch.cat([tangent_of(a) for a in duals], dim))


def _attention(q: Any, k: Any, v: Any, scale: float) -> Dual:
    """The value from the fused kernel (with its own backward), the tangent from
    `backbones.attention`'s blockwise rule."""
    q, k, v = as_dual(q), as_dual(k), as_dual(v)
    out = attention(q.value, k.value, v.value, scale)
    if untangented(q, k, v):
        return Dual(out)
    with torch.no_grad():
        tangent = attention_tangent(
            q.value, k.value, v.value, out, q.tangent, k.tangent, v.tangent, scale
        )
    return Dual(out, tangent)


RULES.update(
    {
        F.linear: _dense(F.linear),
        F.conv2d: _dense(F.conv2d),
        F.layer_norm: _layer_norm,
        F.group_norm: _group_norm,
        F.gelu: _gelu,
        F.silu: _silu,
        torch.cat: _cat,
        torch.add: _add,
        torch.mul: _mul,
        torch.Tensor.__add__: _add,
        torch.Tensor.__radd__: _add,
        torch.Tensor.__mul__: _mul,
        torch.Tensor.__rmul__: _mul,
        attention: _attention,
        modulate: _modulate,
        gated: _gated,
    }
)
