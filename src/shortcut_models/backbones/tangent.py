"""Forward-mode derivatives written by hand for the backbones' layers (MeanFlow's JVP target).

`torch.func.jvp` in eager mode costs about 4.5 forwards on a DiT: every op carries a dual tensor,
the general rules of layer norm and GELU take several kernels each, and with gradients on the
tangent's ops are recorded for a backward that never comes. A `TangentBackbone` (all three)
instead runs its one forward on `Dual` pairs: the value through the very modules of a plain
forward (the same numbers; gradients flow as in a plain forward) and the tangent through the
rules below under `no_grad` (nothing kept for the backward): one matmul per matmul, one fused
kernel per activation, layer norm from the kernel's own rstd. Tested against `torch.func.jvp`
in float64 (tests/test_meanflow.py).

A tangent of None is zero: an input without a tangent costs nothing (the class labels, the
patch positions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shortcut_models.backbones.attention import attention as attention_value
from shortcut_models.backbones.attention import attention_tangent


class Dual(NamedTuple):
    """A value and its tangent (None: zero)."""

    value: torch.Tensor
    tangent: torch.Tensor | None = None


def linear_map(fn: Callable[[torch.Tensor], torch.Tensor], a: Dual) -> Dual:
    """fn applied to both parts; fn must be linear (a reshape, a slice, a sum, a scale)."""
    value = fn(a.value)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        return Dual(value, fn(a.tangent))


def parts(fn: Callable[[torch.Tensor], Sequence[torch.Tensor]], a: Dual) -> list[Dual]:
    """fn (linear, returning several tensors: a chunk, an unbind) applied to both parts."""
    values = fn(a.value)
    if a.tangent is None:
        return [Dual(v) for v in values]
    with torch.no_grad():
        return [Dual(v, dv) for v, dv in zip(values, fn(a.tangent), strict=True)]


def _untangented(*duals: Dual) -> bool:
    """No tangent anywhere: the plain forward (which enters no `no_grad` block, so that
    torch.export and torch.compile see the graph they always saw)."""
    return all(a.tangent is None for a in duals)


def add(a: Dual, b: Dual) -> Dual:
    value = a.value + b.value
    if _untangented(a, b):
        return Dual(value)
    if a.tangent is None or b.tangent is None:
        return Dual(value, b.tangent if a.tangent is None else a.tangent)
    with torch.no_grad():
        return Dual(value, a.tangent + b.tangent)


def residual(x: Dual, gate: Dual, branch: Dual) -> Dual:
    """x + gate * branch (adaLN's gated residual)."""
    value = x.value + gate.value * branch.value
    if _untangented(x, gate, branch):
        return Dual(value)
    with torch.no_grad():
        products = (gate.tangent, branch.value), (gate.value, branch.tangent)
        return Dual(value, _accumulate(x.tangent, *products))


def modulate(x: Dual, shift: Dual, scale: Dual) -> Dual:
    """adaLN's x (1 + scale) + shift."""
    value = x.value * (1 + scale.value) + shift.value
    if _untangented(x, shift, scale):
        return Dual(value)
    with torch.no_grad():
        products = (x.value, scale.tangent), (x.tangent, 1 + scale.value)
        return Dual(value, _accumulate(shift.tangent, *products))


def _accumulate(
    total: torch.Tensor | None, *products: tuple[torch.Tensor | None, torch.Tensor | None]
) -> torch.Tensor | None:
    """total + the sum of a * b over the products (a, b) with both factors given (None: zero),
    each added in one kernel."""
    for a, b in products:
        if a is not None and b is not None:
            total = a * b if total is None else torch.addcmul(total, a, b)
    return total


def dense(layer: nn.Linear | nn.Conv2d, a: Dual) -> Dual:
    """A linear or convolution layer; its tangent is the same map without the bias."""
    value = layer(a.value)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            return Dual(value, F.linear(a.tangent, layer.weight))
        return Dual(value, layer._conv_forward(a.tangent, layer.weight, None))


def _normalised_tangent(
    xhat: torch.Tensor, dx: torch.Tensor, rstd: torch.Tensor, dims: tuple[int, ...]
) -> torch.Tensor:
    """The tangent of xhat = (x - mean) rstd over `dims`: rstd (dx - mean(dx) - xhat mean(xhat
    dx)) (xhat has mean zero and mean square one up to eps)."""
    centred = dx - dx.mean(dims, keepdim=True)
    return centred.sub_(xhat * (xhat * dx).mean(dims, keepdim=True)).mul_(rstd)


def layer_norm(norm: nn.LayerNorm, a: Dual) -> Dual:
    """LayerNorm without affine parameters; the value from the kernel `norm` runs, which also
    returns the rstd the tangent needs."""
    if norm.elementwise_affine:
        raise ValueError("the hand-written LayerNorm tangent is for norms without affine weights")
    value, _, rstd = torch.native_layer_norm(a.value, norm.normalized_shape, None, None, norm.eps)
    if a.tangent is None:
        return Dual(value)
    dims = tuple(range(-len(norm.normalized_shape), 0))
    with torch.no_grad():
        return Dual(value, _normalised_tangent(value, a.tangent, rstd, dims))


def group_norm(norm: nn.GroupNorm, a: Dual) -> Dual:
    """GroupNorm over (N, C, ...) with its per-channel affine weights."""
    value = norm(a.value)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        shape, groups = a.value.shape, (a.value.shape[0], norm.num_groups, -1)
        x = a.value.reshape(groups)
        var, mean = torch.var_mean(x, -1, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var + norm.eps)
        tangent = _normalised_tangent((x - mean) * rstd, a.tangent.reshape(groups), rstd, (-1,))
        tangent = tangent.reshape(shape)
        if norm.affine:
            tangent = tangent * norm.weight.view(1, -1, *([1] * (len(shape) - 2)))
    return Dual(value, tangent)


def cat(duals: Sequence[Dual], dim: int) -> Dual:
    value = torch.cat([a.value for a in duals], dim)
    if _untangented(*duals):
        return Dual(value)
    with torch.no_grad():
        tangents = [torch.zeros_like(a.value) if a.tangent is None else a.tangent for a in duals]
        return Dual(value, torch.cat(tangents, dim))


def gelu(act: nn.GELU, a: Dual) -> Dual:
    value = act(a.value)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        tangent = torch.ops.aten.gelu_backward(a.tangent, a.value, approximate=act.approximate)
    return Dual(value, tangent)


def silu(a: Dual) -> Dual:
    value = F.silu(a.value)
    if a.tangent is None:
        return Dual(value)
    with torch.no_grad():
        return Dual(value, torch.ops.aten.silu_backward(a.tangent, a.value))


def sequential(layers: nn.Sequential, a: Dual) -> Dual:
    """An `nn.Sequential` of layers that have a rule here (Linear, Conv2d, SiLU, GELU), in order."""
    for layer in layers:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            a = dense(layer, a)
        elif isinstance(layer, nn.SiLU):
            a = silu(a)
        elif isinstance(layer, nn.GELU):
            a = gelu(layer, a)
        else:
            raise TypeError(f"no hand-written tangent rule for {type(layer).__name__}")
    return a


def attention(q: Dual, k: Dual, v: Dual, scale: float) -> Dual:
    """softmax(scale q k^T) v: the value from the fused kernel (with its own backward), the
    tangent from `backbones.attention`'s blockwise rule."""
    out = attention_value(q.value, k.value, v.value, scale)
    if _untangented(q, k, v):
        return Dual(out)
    with torch.no_grad():
        tangent = attention_tangent(
            q.value, k.value, v.value, out, q.tangent, k.tangent, v.tangent, scale
        )
    return Dual(out, tangent)


def jvp_of(fn: Callable[..., torch.Tensor], inputs: tuple[Dual, ...]) -> Dual:
    """A small sub-network (the conditioning embedders: batch x width) by `torch.func.jvp` under
    no_grad for the tangent, and a plain call for the value."""
    values = tuple(a.value for a in inputs)
    value = fn(*values)
    if _untangented(*inputs):
        return Dual(value)
    tangents = tuple(torch.zeros_like(a.value) if a.tangent is None else a.tangent for a in inputs)
    with torch.no_grad():
        _, tangent = torch.func.jvp(fn, values, tangents)
    return Dual(value, tangent)


class TangentBackbone(nn.Module):
    """A backbone s(x, t, d, y, w) whose body runs on `Dual` pairs: one forward for the value
    alone and for the value with its tangent, so there is one forward to read and keep right.
    Subclasses hold `self.cond` (a `Conditioning`) and define `body(x, c)`; their submodules take
    and return `Dual`s and are called as modules (so FSDP's and other hooks run)."""

    def body(self, x: Dual, c: Dual) -> Dual:
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        d: torch.Tensor,
        y: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
        tangents: tuple[torch.Tensor | None, ...] | None = None,
    ) -> torch.Tensor | Dual:
        """The velocity; with `tangents` = (dx, dt, dd) (None: zero), a `Dual` with its
        derivative along them (`forward_with_tangent` is the typed way to ask)."""
        dx, dt, dd = tangents or (None, None, None)
        c = jvp_of(lambda t_, d_: self.cond(t_, d_, y, w), (Dual(t, dt), Dual(d, dd)))
        out = self.body(Dual(x, dx), c)
        return out if tangents is not None else out.value

    def forward_with_tangent(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        d: torch.Tensor,
        y: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
        *,
        dx: torch.Tensor | None = None,
        dt: torch.Tensor | None = None,
        dd: torch.Tensor | None = None,
    ) -> Dual:
        """The output and its derivative along (dx, dt, dd) (None: zero), through the module's
        call (its hooks run, as for a plain forward)."""
        return self(x, t, d, y, w, tangents=(dx, dt, dd))
