"""The DiT backbone."""

import pytest
import torch
from helpers import make_backbone

from shortcut_models.backbones.dit import DIT_PRESETS, dit_preset
from shortcut_models.errors import UsageError


def small_dit(patch=2, num_classes=10, size=16, channels=3):
    return make_backbone(
        "dit",
        input_size=size,
        in_channels=channels,
        patch_size=patch,
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_classes=num_classes,
    )


def randomise(model):
    """Give the zero-initialised gates and output weights values, so outputs depend on inputs."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("patch", [2, 4, 8])
def test_output_shape_for_each_patch_size(patch):
    model = small_dit(patch=patch)
    x = torch.randn(3, 3, 16, 16)
    out = model(x, torch.rand(3), torch.full((3,), 0.5), torch.tensor([0, 1, 10]))
    assert out.shape == x.shape


def test_zero_output_at_initialisation():
    model = small_dit()
    out = model(torch.randn(2, 3, 16, 16), torch.rand(2), torch.ones(2), torch.tensor([1, 2]))
    assert torch.count_nonzero(out) == 0


def test_output_depends_on_step_size_and_class():
    model = randomise(small_dit())
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.25)
    y = torch.tensor([3, 3])
    base = model(x, t, torch.full((2,), 1 / 128), y)
    assert not torch.allclose(base, model(x, t, torch.full((2,), 1.0), y))
    assert not torch.allclose(base, model(x, t, torch.full((2,), 1 / 128), torch.tensor([4, 4])))
    assert not torch.allclose(base, model(x, t, torch.full((2,), 1 / 128), torch.tensor([10, 10])))


def test_presets():
    assert dit_preset("DiT-B/2") == {
        "hidden_size": 768,
        "depth": 12,
        "num_heads": 12,
        "patch_size": 2,
    }
    assert dit_preset("DiT-XL/2") == {
        "hidden_size": 1152, "depth": 28, "num_heads": 16, "patch_size": 2
    }  # fmt: skip
    assert len(DIT_PRESETS) == 15
    model = make_backbone("DiT-S/8", input_size=32, in_channels=4, num_classes=0)
    n = sum(p.numel() for p in model.parameters())
    assert 30e6 < n < 35e6  # DiT-S/8 is about 33M parameters in the DiT paper


def test_bad_sizes_are_usage_errors():
    with pytest.raises(UsageError, match="not divisible by patch size"):
        make_backbone("dit", input_size=28, patch_size=8, hidden_size=32, depth=1, num_heads=4)
    with pytest.raises(UsageError, match="unknown backbone"):
        make_backbone("DiT-Z/2")
