"""A residual MLP with adaLN-Zero conditioning: the backbone for 2-D and other vector data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shortcut_models.backbones.embeddings import ConditionedBackbone, Conditioning
from shortcut_models.backbones.layers import gated, modulate
from shortcut_models.options import option


class ResidualBlock(nn.Module):
    """LayerNorm -> modulate -> MLP -> gated residual; the gate starts at zero (adaLN-Zero)."""

    def __init__(self, hidden_size: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        inner = int(hidden_size * mlp_ratio)
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, inner),
            nn.GELU(approximate="tanh"),
            nn.Linear(inner, hidden_size),
        )
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h: (N, D) features, c: (N, D) conditioning."""
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return gated(h, gate, self.mlp(modulate(self.norm(h), shift, scale)))


FREQUENCY_SIZE = 64  # sinusoids of the t and d embeddings


@dataclass
class MLPOptions:
    """The MLP's user options (the data fixes `dim` and `num_classes`)."""

    hidden_size: int = option(128, "backbone width")
    depth: int = option(3, "number of backbone blocks")
    mlp_ratio: float = option(2.0, "inner width of each block's MLP, as a multiple of the width")
    time_scale: float = option(
        1000.0,
        "t is multiplied by this before its sinusoidal embedding (meanflow: 1; the reference: 1)",
    )


class MLP(ConditionedBackbone):
    """Velocity network s(x, t, d, y) for flat vectors of size `dim`.

    The call signature is the same as the DiT's, so every objective and the sampler work on both.
    The output layer is zero-initialised, so an untrained model predicts zero velocity.
    """

    def __init__(
        self,
        options: MLPOptions | None = None,
        shape: tuple[int, ...] = (2,),
        num_classes: int = 0,
        *,
        guidance_input: bool = False,
        guidance_interval: bool = False,
        velocity_head: bool = False,
    ) -> None:
        super().__init__()
        o = options or MLPOptions()
        dim, hidden_size, depth = self.check_shape(shape), o.hidden_size, o.depth
        if depth < 1 or hidden_size < 1:
            raise ValueError(f"depth and hidden size must be positive, got {depth}, {hidden_size}")
        self.dim = dim
        self.num_classes = num_classes
        self.cond = Conditioning(
            hidden_size,
            num_classes,
            FREQUENCY_SIZE,
            o.time_scale,
            guidance_input,
            guidance_interval,
        )
        self.guidance_input, self.velocity_head = guidance_input, velocity_head
        self.proj_in = nn.Linear(dim, hidden_size)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_size, o.mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.proj_out = nn.Linear(hidden_size, dim * (2 if velocity_head else 1))
        for layer in (self.ada_out[1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @staticmethod
    def check_shape(shape: tuple[int, ...]) -> int:
        """The vector size of the data's (D,) samples."""
        if len(shape) != 1:
            raise ValueError(f"the MLP backbone takes flat vectors, got samples of shape {shape}")
        return shape[0]

    def body(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, dim) vectors, c: (N, D) -> velocity (N, dim)."""
        h = self.proj_in(x)  # (N, D)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        return self.proj_out(modulate(self.norm_out(h), shift, scale))
