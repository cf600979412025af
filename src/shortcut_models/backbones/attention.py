"""Scaled-dot-product attention whose forward-mode derivative (JVP) is written by hand.

PyTorch's fused attention kernels have no forward-mode rule, so a JVP through a network (MeanFlow's
target) used to fall back to the math kernel, which stores every N x N attention matrix. Inside
`jvp_attention()` the networks' attention is `AttentionJVP`: the fused kernel computes the output,
and the tangent of O = softmax(s Q K^T) V along (dQ, dK, dV),

    dO = P dV + (P * dS) V - rowsum(P * dS) O,    dS = s (dQ K^T + Q dK^T),

is computed exactly in blocks of CHUNK queries (memory CHUNK x N, not N x N). Its backward (for a
prediction taken from the JVP pass, which carries gradients) recomputes the fused kernel's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function

CHUNK = 256  # queries per block of the tangent
_state = threading.local()


@contextlib.contextmanager
def jvp_attention() -> Iterator[None]:
    """Within this block, `attention` uses the hand-written forward-mode rule."""
    previous = getattr(_state, "active", False)
    _state.active = True
    try:
        yield
    finally:
        _state.active = previous


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale q k^T) v over (batch, heads, tokens, head size) tensors."""
    if has_torch_function((q, k, v)):  # `forward_mode.Dual`s: its rule uses attention_tangent
        return handle_torch_function(attention, (q, k, v), q, k, v, scale)
    if getattr(_state, "active", False):
        return AttentionJVP.apply(q, k, v, scale)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def attention_tangent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    dq: torch.Tensor | None,
    dk: torch.Tensor | None,
    dv: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """The tangent of out = softmax(scale q k^T) v along (dq, dk, dv) (None: zero), exactly, in
    blocks of CHUNK queries."""
    dq = torch.zeros_like(q) if dq is None else dq
    dk = torch.zeros_like(k) if dk is None else dk
    dv = torch.zeros_like(v) if dv is None else dv
    kt, dkt = k.transpose(-1, -2), dk.transpose(-1, -2)
    # the softmax in at least float32 (bf16 inputs), in float64 for float64 inputs
    wide = torch.promote_types(q.dtype, torch.float32)
    blocks = []
    for a in range(0, q.shape[-2], CHUNK):
        rows = slice(a, a + CHUNK)
        qi, dqi, oi = q[..., rows, :], dq[..., rows, :], out[..., rows, :]
        p = torch.softmax(scale * qi @ kt, dim=-1, dtype=wide).to(q.dtype)
        pds = p * (scale * (dqi @ kt + qi @ dkt))
        blocks.append(p @ dv + pds @ v - pds.sum(-1, keepdim=True) * oi)
    return torch.cat(blocks, dim=-2)


class AttentionJVP(torch.autograd.Function):
    @staticmethod
    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (autograd's signature)
        q, k, v, scale = inputs
        ctx.save_for_forward(q, k, v, output)
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale

    @staticmethod
    def jvp(ctx, dq, dk, dv, _):  # noqa: ANN001
        q, k, v, out = ctx.saved_tensors
        return attention_tangent(q, k, v, out, dq, dk, dv, ctx.scale)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        q, k, v = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [x.detach().requires_grad_() for x in (q, k, v)]
            out = F.scaled_dot_product_attention(*inputs, scale=ctx.scale)
            grads = torch.autograd.grad(out, inputs, grad)
        return (*grads, None)
