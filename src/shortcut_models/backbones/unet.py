"""A compact convolutional U-Net for small images (MNIST-sized), conditioned like the DiT.

On a CPU a convolution over a 32x32 image learns digit shapes in far fewer steps than a patch
transformer of similar cost (measured in benchmarks/results/demo_ablation.md), so this is the
backbone of the CPU demo; the paper's presets stay DiT. It is told exactly what the DiT is told:
c = embed(t) + embed(level(d)) + embed(y) (+ embed(w - 1) with a guidance input), through the same
`Conditioning` module, and every residual block turns c into a per-channel (shift, scale) after
its second normalisation (adaptive GroupNorm, as in ADM). The last convolution of every residual
block and the output convolution start at zero, so an untrained network predicts zero velocity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from shortcut_models.backbones.attention import attention
from shortcut_models.backbones.dit import square_image
from shortcut_models.backbones.embeddings import PREDICTIONS, ConditionedBackbone, Conditioning
from shortcut_models.backbones.layers import modulate
from shortcut_models.options import option


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups, or the largest count below that divides the channels."""
    return nn.GroupNorm(math.gcd(8, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, adaptive GroupNorm from c, SiLU-conv (zero-initialised), skip."""

    def __init__(self, cin: int, cout: int, cond_size: int) -> None:
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_size, 2 * cout))
        self.norm2 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W), c: (N, cond_size) -> (N, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        shift, scale = self.ada(c)[:, :, None, None].chunk(2, dim=1)  # each (N, C_out, 1, 1)
        h = modulate(self.norm2(h), shift, scale)
        return self.skip(x) + self.conv2(F.silu(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of the lowest resolution, residual."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, hgt, wid = x.shape
        heads = self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(b, 3, heads, ch // heads, -1)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (N, heads, H * W, C / heads)
        out = attention(q, k, v, (ch // heads) ** -0.5)  # SDPA's default scale
        return x + self.proj(out.transpose(-1, -2).reshape(b, ch, hgt, wid))


@dataclass
class UNetOptions:
    """The UNet's options (`channels`, the width per level, is a list: no flag; a recipe or
    Python sets it)."""

    blocks: int = option(1, "residual blocks per resolution level on the way down")
    attention: bool = option(True, "self-attention at the lowest resolution")
    num_heads: int = option(4)
    cond_size: int = option(128, "width of the conditioning embedding")
    time_scale: float = option(1000.0)
    patch: int = option(
        1,
        "pixels per side folded into channels before the first level (space-to-depth): 2 "
        "quarters the cost of every level",
    )
    prediction: str = option(
        "velocity",
        "what the network's last layer predicts: the velocity, or the clean image ('data'), "
        "turned into the velocity (x^ - x_t) / (1 - t)",
        choices=PREDICTIONS,
    )
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])

    def __post_init__(self) -> None:
        self.channels = [int(c) for c in self.channels]  # a tuple from Python, a list from JSON
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")


class UNet(ConditionedBackbone):
    """Velocity network s(x, t, d, y) on (N, C, H, W) images; H = W divisible by 2^(levels-1).

    `channels` gives the width of each resolution (halved between levels), `blocks` the residual
    blocks per level on the way down (one more on the way up, which also takes the skips), and
    `attention` adds self-attention in the middle, at the lowest resolution. `patch` > 1 folds
    patch x patch pixels into channels first (`pixel_unshuffle`) and unfolds the output: the
    levels then run at 1 / patch of the resolution (as "simple diffusion" does for large images;
    here it buys a small CPU about three times the steps per second of the same widths).
    """

    convolutional = True  # may run channels-last (RunOptions.memory_format)

    def __init__(
        self,
        options: UNetOptions | None = None,
        shape: tuple[int, ...] = (1, 32, 32),
        num_classes: int = 0,
        *,
        guidance_input: bool = False,
        guidance_interval: bool = False,
        velocity_head: bool = False,
    ) -> None:
        super().__init__()
        o = options or UNetOptions()
        in_channels, input_size = square_image(shape)
        channels, blocks, cond_size, patch = o.channels, o.blocks, o.cond_size, o.patch
        if not channels or min(channels) < 1 or blocks < 1 or cond_size < 1 or patch < 1:
            raise ValueError("channels, blocks, cond_size and patch must be positive")
        if input_size % (patch * 2 ** (len(channels) - 1)):
            raise ValueError(
                f"input size {input_size} is not divisible by patch {patch} x "
                f"2^{len(channels) - 1} ({len(channels)} levels)"
            )
        self.input_size, self.in_channels, self.patch = input_size, in_channels, patch
        self.num_classes = num_classes
        self.guidance_input, self.velocity_head = guidance_input, velocity_head
        self.predicts_data = o.prediction == "data"
        self.cond = Conditioning(
            cond_size,
            num_classes,
            time_scale=o.time_scale,
            guidance_input=guidance_input,
            guidance_interval=guidance_interval,
        )
        self.stem = nn.Conv2d(in_channels * patch**2, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips, width = [channels[0]], channels[0]
        for level, ch in enumerate(channels):
            for _ in range(blocks):
                self.down.append(ResBlock(width, ch, cond_size))
                width = ch
                skips.append(width)
            if level < len(channels) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
        self.mid = nn.ModuleList([ResBlock(width, width, cond_size)])
        if o.attention:
            self.mid.append(SelfAttention(width, o.num_heads))
        self.mid.append(ResBlock(width, width, cond_size))
        self.up = nn.ModuleList()
        for level, ch in reversed(list(enumerate(channels))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(width + skips.pop(), ch, cond_size))
                width = ch
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.norm_out = group_norm(width)
        heads = 2 if velocity_head else 1
        self.out = nn.Conv2d(width, heads * in_channels * patch**2, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    check_shape = staticmethod(square_image)

    def body(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) images, c: (N, cond_size) -> velocity (N, C, H, W)."""
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)  # (N, C p^2, H / p, W / p)
        h = self.stem(x)
        hs = [h]
        for layer in self.down:  # residual blocks and stride-2 convolutions
            h = layer(h, c) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, c) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:  # residual blocks on [h, skip], nearest upsampling
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), c)
            else:
                h = layer(h)
        out = self.out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out
