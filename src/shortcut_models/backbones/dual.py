"""`Dual`: a value and its tangent, used where a backbone's plain forward expects a tensor.

The torch functions a forward calls on a Dual reach `Dual.__torch_function__`: a function with
a rule in RULES (`backbones.tangent_rules`) gets its value as the plain call computes it and its
tangent by the rule; a function in LINEAR the same call on the tangent; any other its tangent
from `torch.func.jvp` of that one call. A tangent of None is zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

# filled by backbones.tangent_rules: function -> rule(*args, **kwargs) -> Dual
RULES: dict[Callable[..., Any], Callable[..., Any]] = {}
# functions linear in their tensor arguments: the same call on the tangents
LINEAR = {F.interpolate, torch.reshape, torch.flatten, torch.transpose, torch.permute}

Tangent = torch.Tensor | None


@dataclass(eq=False, slots=True)
class Dual:
    """A value and its tangent (None: zero), used where a forward expects a tensor. A dataclass,
    so that DDP's and FSDP's hooks find the tensors in a module's Dual inputs and outputs."""

    value: torch.Tensor
    tangent: Tangent = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        rule = RULES.get(func)
        if rule is not None:
            return rule(*args, **(kwargs or {}))
        if func in LINEAR:
            return linear(func, args, kwargs or {})
        return by_autodiff(func, args, kwargs or {})

    # what forwards read of a tensor
    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    device = property(lambda self: self.value.device)
    ndim = property(lambda self: self.value.ndim)

    def dim(self) -> int:
        return self.value.dim()

    def size(self, *dim: int) -> Any:
        return self.value.size(*dim)

    # linear maps: the same on value and tangent
    def _map(self, fn: Callable[[torch.Tensor], Any]) -> Any:
        return linear(fn, (self,), {})

    def __getitem__(self, index: Any) -> Dual:
        return self._map(lambda z: z[index])

    def reshape(self, *shape: Any) -> Dual:
        return self._map(lambda z: z.reshape(*shape))

    def view(self, *shape: Any) -> Dual:
        return self._map(lambda z: z.view(*shape))

    def permute(self, *dims: Any) -> Dual:
        return self._map(lambda z: z.permute(*dims))

    def transpose(self, a: int, b: int) -> Dual:
        return self._map(lambda z: z.transpose(a, b))

    def flatten(self, start: int = 0, end: int = -1) -> Dual:
        return self._map(lambda z: z.flatten(start, end))

    def unsqueeze(self, dim: int) -> Dual:
        return self._map(lambda z: z.unsqueeze(dim))

    def contiguous(self) -> Dual:
        return self._map(lambda z: z.contiguous())

    def to(self, *args: Any, **kwargs: Any) -> Dual:
        return self._map(lambda z: z.to(*args, **kwargs))

    def chunk(self, chunks: int, dim: int = 0) -> list[Dual]:
        return self._map(lambda z: z.chunk(chunks, dim))

    def unbind(self, dim: int = 0) -> list[Dual]:
        return self._map(lambda z: z.unbind(dim))

    # arithmetic and every other tensor method: through torch's dispatch to __torch_function__
    def __add__(self, other: Any) -> Dual:
        return torch.add(self, other)

    __radd__ = __add__

    def __mul__(self, other: Any) -> Dual:
        return torch.mul(self, other)

    __rmul__ = __mul__

    def __sub__(self, other: Any) -> Dual:
        return torch.sub(self, other)

    def __rsub__(self, other: Any) -> Dual:
        return torch.sub(other, self)

    def __truediv__(self, other: Any) -> Dual:
        return torch.div(self, other)

    def __rtruediv__(self, other: Any) -> Dual:
        return torch.div(other, self)

    def __neg__(self) -> Dual:
        return torch.neg(self)

    def __pow__(self, exponent: Any) -> Dual:
        return torch.pow(self, exponent)

    def __getattr__(self, name: str) -> Any:
        """Any other public tensor method: x.mean(...) is Tensor.mean(x, ...)."""
        method = getattr(torch.Tensor, name) if not name.startswith("_") else None
        if not callable(method):
            raise AttributeError(f"Dual has no attribute {name!r}")
        return lambda *args, **kwargs: method(self, *args, **kwargs)


pytree.register_pytree_node(
    Dual,
    lambda a: ([a.value, a.tangent], None),
    lambda children, _: Dual(*children),
    serialized_type_name="shortcut_models.backbones.dual.Dual",
)


def untangented(*duals: Any) -> bool:
    return all(not isinstance(a, Dual) or a.tangent is None for a in duals)


def values(tree: Any) -> Any:
    return pytree.tree_map(lambda a: a.value if isinstance(a, Dual) else a, tree, is_leaf=is_dual)


def is_dual(a: Any) -> bool:
    return isinstance(a, Dual)


def tangent_of(a: Dual) -> torch.Tensor:
    """The tangent as a tensor (zeros where it is None), for calls that need one."""
    return torch.zeros_like(a.value) if a.tangent is None else a.tangent


def _wrap(value: Any, tangent: Any) -> Any:
    """Outputs (a tensor, or a sequence of them) paired with their tangents (None: zero)."""
    if isinstance(value, torch.Tensor):
        return Dual(value, tangent)
    tangents = [None] * len(value) if tangent is None else tangent
    return [Dual(v, dv) for v, dv in zip(value, tangents, strict=True)]


def linear(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """fn linear in its Dual arguments (a reshape, a slice, a chunk, nearest upsampling)."""
    value = fn(*values(args), **values(kwargs))
    if untangented(*pytree.tree_leaves((args, kwargs), is_leaf=is_dual)):
        return _wrap(value, None)
    tangents = pytree.tree_map(
        lambda a: tangent_of(a) if isinstance(a, Dual) else a, (args, kwargs), is_leaf=is_dual
    )
    with torch.no_grad():
        return _wrap(value, fn(*tangents[0], **tangents[1]))


def by_autodiff(func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """A function without a rule: the value by a plain call, the tangent by torch.func.jvp of
    that call."""
    value = func(*values(args), **values(kwargs))
    if untangented(*pytree.tree_leaves((args, kwargs), is_leaf=is_dual)):
        return _wrap(value, None)
    return _wrap(value, jvp_tangent(func, args, kwargs))


def jvp_tangent(func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """The tangent of func(*args, **kwargs) along the tangents of its Dual arguments (every
    Dual a primal; None tangents zero), by torch.func.jvp under no_grad."""
    flat, spec = pytree.tree_flatten((args, kwargs), is_leaf=is_dual)
    where = [i for i, a in enumerate(flat) if isinstance(a, Dual)]

    def call(*primals: torch.Tensor) -> Any:
        items = [a.value if isinstance(a, Dual) else a for a in flat]
        for i, primal in zip(where, primals, strict=True):
            items[i] = primal
        call_args, call_kwargs = pytree.tree_unflatten(items, spec)
        return func(*call_args, **call_kwargs)

    duals = [flat[i] for i in where]
    tangents = tuple(tangent_of(a) for a in duals)
    with torch.no_grad():
        return torch.func.jvp(call, tuple(a.value for a in duals), tangents)[1]


def as_dual(a: Any) -> Dual:
    return a if isinstance(a, Dual) else Dual(a)
