"""DiT (Peebles & Xie, 2023) as the shortcut reference (kvfrans/shortcut-models, model.py) uses
it: patch embedding, fixed 2-D sin-cos positions, blocks with adaptive LayerNorm conditioned on
c = embed(t) + embed(level(d)) + embed(y), attention through scaled_dot_product_attention (flash /
memory-efficient kernels on GPU), zero-initialised final layer.

Where the reference differs from DiT (attention scale, adaLN initialisation of the blocks, q / k
/ v initialisation, order of the position table) is an option of `DiTOptions`; the `reference`
recipe sets all four, and benchmarks/parity.py checks the forward against the official code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from shortcut_models.backbones.attention import attention
from shortcut_models.backbones.embeddings import ConditionedBackbone, Conditioning
from shortcut_models.backbones.layers import gated, modulate
from shortcut_models.options import option

# name -> (hidden size, depth, heads); the patch size is the part after the slash.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "T": (128, 4, 4),  # tiny: for CPUs
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}
DIT_PRESETS = [f"DiT-{size}/{patch}" for size in DIT_SIZES for patch in (2, 4, 8)]


def square_image(shape: tuple[int, ...]) -> tuple[int, int]:
    """(channels, side) of the square (C, H, W) samples an image backbone takes."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"this backbone takes square (C, H, W) images, got samples of {shape}")
    return shape[0], shape[1]


ATTENTION_SCALES = ("sqrt", "linear")
ADALN_INITS = ("zero", "xavier")
QKV_INITS = ("fused", "separate")
POSITION_ORDERS = ("row-col", "col-row")


def sincos_2d(dim: int, grid: int, order: str = "row-col") -> torch.Tensor:
    """(grid*grid, dim) fixed position embeddings: half for rows, half for columns, in `order`."""
    if dim % 4:
        raise ValueError(f"hidden size must be a multiple of 4 for 2-D positions, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    coords = np.arange(grid, dtype=np.float64)
    rows, cols = np.meshgrid(coords, coords, indexing="ij")

    def embed(pos: np.ndarray) -> np.ndarray:
        args = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(args), np.cos(args)], axis=1)

    halves = [embed(rows), embed(cols)] if order == "row-col" else [embed(cols), embed(rows)]
    # in the default dtype: float32 as always, float64 for the float64 parity proof
    return torch.from_numpy(np.concatenate(halves, axis=1)).to(torch.get_default_dtype())


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, scale: str = "sqrt") -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        head = hidden_size // num_heads
        self.scale = head**-0.5 if scale == "sqrt" else 1.0 / head
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape  # (N, T, D)
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, T, D / heads)
        out = attention(q, k, v, self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DiTBlock(nn.Module):
    """Attention and MLP, each behind LayerNorm + (shift, scale) and a gate from c."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attention_scale: str = "sqrt",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, attention_scale)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        inner = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, inner),
            nn.GELU(approximate="tanh"),
            nn.Linear(inner, hidden_size),
        )
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, T, D) tokens, c: (N, D) conditioning."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)
        x = gated(x, gate1, self.attn(modulate(self.norm1(x), shift1, scale1)))
        return gated(x, gate2, self.mlp(modulate(self.norm2(x), shift2, scale2)))


@dataclass
class DiTOptions:
    """The DiT's user options (the data fixes input size, channels and classes; a preset name
    such as DiT-B/2 sets width, depth, heads and patch)."""

    patch_size: int = option(2, "side of the square patches")
    hidden_size: int = option(768)
    depth: int = option(12)
    num_heads: int = option(12, "attention heads")
    mlp_ratio: float = option(4.0)
    time_scale: float = option(
        1000.0,
        "t is multiplied by this before its sinusoidal embedding (meanflow: 1; the reference: 1)",
    )
    attention_scale: str = option(
        "sqrt",
        "attention logits scaled by 1/sqrt(d_head) (sqrt) or 1/d_head (linear, the reference)",
        choices=ATTENTION_SCALES,
    )
    block_adaln_init: str = option(
        "zero",
        "the blocks' modulation layers start at zero (zero, DiT's adaLN-Zero) or "
        "xavier-uniform (xavier, the reference)",
        choices=ADALN_INITS,
    )
    qkv_init: str = option(
        "fused",
        "one xavier draw for q, k, v together (fused) or one each (separate, the reference)",
        choices=QKV_INITS,
    )
    position_order: str = option(
        "row-col",
        "halves of the 2-D position table, row-col or col-row (the reference)",
        choices=POSITION_ORDERS,
    )


class DiT(ConditionedBackbone):
    """Velocity network s(x, t, d, y) on (N, C, H, W) images or latents.

    `recompute_activations = True` recomputes each block's activations in the backward pass
    instead of storing them (less memory for large presets, about one more forward in time).
    """

    recompute_activations: bool = False

    def __init__(
        self,
        options: DiTOptions | None = None,
        shape: tuple[int, ...] = (4, 32, 32),
        num_classes: int = 0,
        *,
        guidance_input: bool = False,
        guidance_interval: bool = False,
        velocity_head: bool = False,
    ) -> None:
        """`options` (defaults: DiTOptions()) and the data's sample `shape` and classes; the
        objective decides the inputs beyond (x, t, d, y) and the second (velocity) head."""
        super().__init__()
        o = options or DiTOptions()
        in_channels, input_size = square_image(shape)
        patch_size, hidden_size, depth, num_heads = (
            o.patch_size,
            o.hidden_size,
            o.depth,
            o.num_heads,
        )
        if min(depth, hidden_size, num_heads, patch_size) < 1:
            raise ValueError("depth, hidden size, heads and patch size must be positive")
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by patch size {patch_size}")
        for name, value, allowed in (
            ("attention_scale", o.attention_scale, ATTENTION_SCALES),
            ("block_adaln_init", o.block_adaln_init, ADALN_INITS),
            ("qkv_init", o.qkv_init, QKV_INITS),
            ("position_order", o.position_order, POSITION_ORDERS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        self.block_adaln_init, self.qkv_init = o.block_adaln_init, o.qkv_init
        self.input_size, self.in_channels, self.patch_size = input_size, in_channels, patch_size
        self.num_classes = num_classes
        self.grid = input_size // patch_size
        self.patch = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.register_buffer(
            "pos", sincos_2d(hidden_size, self.grid, o.position_order)[None], persistent=False
        )
        self.cond = Conditioning(
            hidden_size,
            num_classes,
            time_scale=o.time_scale,
            guidance_input=guidance_input,
            guidance_interval=guidance_interval,
        )
        self.guidance_input, self.velocity_head = guidance_input, velocity_head
        self.out_channels = in_channels * (2 if velocity_head else 1)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, o.mlp_ratio, o.attention_scale) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.out = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch.bias)
        self.cond.reset_parameters()
        for block in self.blocks:
            if self.qkv_init == "separate":
                for part in block.attn.qkv.weight.chunk(3, dim=0):
                    nn.init.xavier_uniform_(part)
            if self.block_adaln_init == "zero":
                nn.init.zeros_(block.ada[1].weight)
                nn.init.zeros_(block.ada[1].bias)
        for layer in (self.ada_out[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    check_shape = staticmethod(square_image)

    def body(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) images, c: (N, D) -> velocity (N, C, H, W)."""
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)  # (N, T, D)
        recompute = self.recompute_activations and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            h = checkpoint(block, h, c, use_reentrant=False) if recompute else block(h, c)
        shift, scale = self.ada_out(c)[:, None].chunk(2, dim=-1)
        h = self.out(modulate(self.norm_out(h), shift, scale))  # (N, T, p * p * C)
        return self.unpatchify(h)

    def unpatchify(self, h: torch.Tensor) -> torch.Tensor:
        """(N, grid*grid, p*p*C) -> (N, C, H, W)."""
        n, g, p, c = h.shape[0], self.grid, self.patch_size, self.out_channels
        h = h.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(n, c, g * p, g * p)


def dit_preset(name: str) -> dict[str, int]:
    """'DiT-B/2' -> {'hidden_size': 768, 'depth': 12, 'num_heads': 12, 'patch_size': 2}."""
    size, patch = name.removeprefix("DiT-").split("/")
    hidden, depth, heads = DIT_SIZES[size]
    return {"hidden_size": hidden, "depth": depth, "num_heads": heads, "patch_size": int(patch)}
