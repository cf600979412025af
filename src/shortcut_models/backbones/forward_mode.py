"""Forward-mode derivatives of any backbone's plain `forward`, by rules applied from outside
(MeanFlow's JVP target).

`forward_with_tangent(net, x, t, d, ...)` calls the network on `Dual`s (`backbones.dual`):
each torch function its forward calls computes its value as in a plain call (the same numbers,
with gradients) and its tangent by a hand-written rule (`backbones.tangent_rules`) or, for a
function without one, by `torch.func.jvp` of that call; a module type in MODULE_RULES (the
conditioning embedders) gets the tangent of its whole call from `torch.func.jvp`. Modules are
called as modules, so their hooks (FSDP's, DDP's) run as in a plain forward. What it costs
against `torch.func.jvp`: benchmarks/results/meanflow_cost_cpu.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from shortcut_models.backbones import tangent_rules  # noqa: F401 (registers the rules)
from shortcut_models.backbones.dual import Dual, Tangent, is_dual, jvp_tangent, untangented, values
from shortcut_models.backbones.embeddings import Conditioning


def forward_with_tangent(
    net: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    d: torch.Tensor,
    y: torch.Tensor | None = None,
    w: torch.Tensor | None = None,
    *,
    dx: Tangent = None,
    dt: Tangent = None,
    dd: Tangent = None,
    module: nn.Module | None = None,
    **conditions: Any,
) -> tuple[torch.Tensor, Tangent]:
    """(output, its derivative along (dx, dt, dd)) of `net(x, t, d, y, w, **conditions)`
    (`conditions`: keywords of the call held fixed, as `interval` or `both_heads`), through the
    call of `net` itself (a DDP or compile wrapper included); `module` is the plain module
    under it."""
    extra = () if w is None else (w,)
    with _module_rules(module or net):
        out = net(Dual(x, dx), Dual(t, dt), Dual(d, dd), y, *extra, **conditions)
    return out.value, out.tangent


# -- modules with a rule of their own ---------------------------------------------------------


def _jvp_module(module: nn.Module, args: tuple, kwargs: dict) -> Tangent:
    """The tangent of a whole (small) module by torch.func.jvp: cheaper than rule by rule for
    the conditioning embedders (batch x width), and the numbers autodiff gives. (`forward`,
    not the call: the call would run this rule's hooks again.)"""
    return jvp_tangent(module.forward, args, kwargs)


MODULE_RULES: dict[type[nn.Module], Callable[[nn.Module, tuple, dict], Tangent]] = {
    Conditioning: _jvp_module,
}


@contextlib.contextmanager
def _module_rules(root: nn.Module) -> Iterator[None]:
    """While active, a module of a type in MODULE_RULES called on Duals runs its plain forward
    on their values and gets its tangent from its rule."""
    pending: list[tuple[tuple, dict] | bool] = []  # per call: its Duals, or whether any

    def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        flat = pytree.tree_leaves((args, kwargs), is_leaf=is_dual)
        if not any(isinstance(a, Dual) for a in flat):
            pending.append(False)  # a plain call: left alone
            return None
        pending.append(True if untangented(*flat) else (args, kwargs))
        return values(args), values(kwargs)

    def after(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> Any:
        duals = pending.pop()
        if duals is False:
            return None
        if duals is True:
            return Dual(output)
        return Dual(output, MODULE_RULES[type(module)](module, *duals))

    handles = []
    for module in root.modules():
        if type(module) in MODULE_RULES:
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
